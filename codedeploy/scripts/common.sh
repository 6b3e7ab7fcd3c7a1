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
# How long ApplicationStart waits for the old collector to let go of its spool.
LOCK_WAIT_S="${TRADE_LAKE_LOCK_WAIT_S:-60}"
# The unit's working directory, where a relative COLLECTOR_SPOOL_DIR lives (collector.service).
STATE_DIR="${TRADE_LAKE_STATE_DIR:-/var/lib/collector}"
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

# The spool directory a release's collector uses: its .env's COLLECTOR_SPOOL_DIR, else the unit's.
spool_dir_of() {
    local dir
    dir="$(sed -n 's/^COLLECTOR_SPOOL_DIR=//p' "$1" 2>/dev/null | tail -n 1 || true)"
    dir="${dir%[\"\']}"
    dir="${dir#[\"\']}"
    dir="${dir:-${STATE_DIR}/spool}"
    [[ "${dir}" == /* ]] || dir="${STATE_DIR}/${dir}"
    printf '%s\n' "${dir}"
}

# Wait until no process holds the spool's lock (collector/lock.py): two collectors on one spool
# land trades twice, so the new one starts only once the old one has let go. A spool without a
# lock file has never been locked: nothing to wait for (and none is made here, owned by root).
wait_for_spool() {
    local lock="$1/.lock" holder
    [[ -e "${lock}" ]] || return 0
    if flock --wait "${LOCK_WAIT_S}" "${lock}" true; then
        return 0
    fi
    holder="$(tr -dc '0-9' < "${lock}" 2>/dev/null || true)"
    die "the spool $1 is still held by process ${holder:-unknown} ($(ps -o args= -p "${holder:-0}" 2>/dev/null || echo 'gone by now')) after ${LOCK_WAIT_S}s; one collector per spool: stop that process, then retry the deployment"
}
