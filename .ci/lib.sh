# Shared by .ci/run and .ci/airflow.
# shellcheck shell=bash

# shellcheck disable=SC2034 # used by the scripts that source this file
cache="${XDG_CACHE_HOME:-$HOME/.cache}/trade-lake"

# make_venv DIR REQUIREMENT...: a venv cached outside the clone, built in place (a venv cannot
# be moved) and marked complete only once every install succeeded.
make_venv() {
    local dir="$1"
    shift
    if [[ ! -f "${dir}/.complete" ]]; then
        echo "== creating ${dir}"
        rm -rf "${dir}"
        python3 -m venv "${dir}"
        "${dir}/bin/python" -m pip install --quiet --upgrade pip
        "${dir}/bin/python" -m pip install --quiet "$@"
        touch "${dir}/.complete"
    fi
}

# run_pytest PYTHON ARGS...: pytest, where collecting nothing is a failure.
run_pytest() {
    local python="$1"
    shift
    local status=0
    "${python}" -m pytest "$@" || status=$?
    if [[ ${status} -eq 5 ]]; then
        echo "pytest collected no tests" >&2
        return 1
    fi
    return "${status}"
}

# tf_cli_config FILE: a Terraform CLI configuration in FILE that installs the AWS provider from the
# first local mirror found (TF_PLUGIN_MIRROR, /opt/tf-plugins, ...), or from the registry when
# TRADE_LAKE_TF_ONLINE=1. Returns 1, having said why, when neither is available.
tf_cli_config() {
    local file="$1" candidate mirror=""
    for candidate in "${TF_PLUGIN_MIRROR:-}" /opt/tf-plugins /usr/share/terraform/plugins "${HOME}/.terraform.d/plugins"; do
        if [[ -n "${candidate}" && -d "${candidate}/registry.terraform.io/hashicorp/aws" ]]; then
            mirror="${candidate}"
            break
        fi
    done
    if [[ -n "${mirror}" ]]; then
        cat > "${file}" <<TFRC
provider_installation {
  filesystem_mirror {
    path    = "${mirror}"
    include = ["registry.terraform.io/hashicorp/aws"]
  }
  direct {
    exclude = ["registry.terraform.io/hashicorp/aws"]
  }
}
TFRC
        echo "using the local provider mirror ${mirror}"
    elif [[ "${TRADE_LAKE_TF_ONLINE:-}" == "1" ]]; then
        : > "${file}"
    else
        echo "no local AWS provider mirror and TRADE_LAKE_TF_ONLINE is not 1"
        return 1
    fi
}
