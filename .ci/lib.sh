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
