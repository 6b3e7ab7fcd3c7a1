# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are used by the hooks that source this file
# Shared by the CodeDeploy hooks: where things live, and a few helpers.
# Every path can be overridden from the environment, which is how the tests run these scripts
# against a temporary root. /etc/collector/deploy.env (written by the instance's user data)
# may set TRADE_LAKE_SSM_PARAMETER and the others.

deploy_config="${TRADE_LAKE_DEPLOY_CONFIG:-/etc/collector/deploy.env}"
if [[ -r "${deploy_config}" ]]; then
    # shellcheck source=/dev/null
    . "${deploy_config}"
fi

ROOT="${TRADE_LAKE_ROOT:-/opt/collector}"
RELEASES="${ROOT}/releases"        # one directory per deployment: src/, venv/, .env
INCOMING="${ROOT}/incoming"        # where CodeDeploy copies the bundle (appspec.yml)
CURRENT="${ROOT}/current"          # symlink to the release systemd runs
PREVIOUS="${ROOT}/previous"        # symlink to the release before it, kept until validation
UNIT_DIR="${TRADE_LAKE_UNIT_DIR:-/etc/systemd/system}"
SYSTEMCTL="${TRADE_LAKE_SYSTEMCTL:-systemctl}"
PYTHON="${TRADE_LAKE_PYTHON:-python3.11}"
SSM_PARAMETER="${TRADE_LAKE_SSM_PARAMETER:-/mlops/collector/env}"
VALIDATE_TIMEOUT_S="${TRADE_LAKE_VALIDATE_TIMEOUT_S:-180}"
KEEP_RELEASES="${TRADE_LAKE_KEEP_RELEASES:-3}"
RELEASE="${RELEASES}/${DEPLOYMENT_ID:-manual}"
UNIT="collector.service"
COMPACT_UNIT="collector-compact.service" # `collector compact`, a oneshot started by its timer
COMPACT_TIMER="collector-compact.timer"  # daily, 00:20 UTC

log() {
    printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${LIFECYCLE_EVENT:-$(basename "$0")}" "$*"
}

die() {
    log "ERROR: $*"
    exit 1
}

# Point symlink $2 at $1 atomically (rename over the old link).
swap_link() {
    ln -sfn "$1" "$2.new"
    mv -T "$2.new" "$2"
}

unit_installed() {
    [[ -f "${UNIT_DIR}/${UNIT}" ]]
}
