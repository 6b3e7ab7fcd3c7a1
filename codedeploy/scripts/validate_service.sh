#!/usr/bin/env bash
# ValidateService: the deployment succeeds only if the collector reports healthy (connected and
# able to land) within the deadline. Otherwise the previous release is put back and restarted,
# and the hook fails so CodeDeploy marks the deployment failed and rolls back.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"

port="$(sed -n 's/^COLLECTOR_HEALTH_PORT=//p' "${CURRENT}/.env" | tail -n 1)"
port="${TRADE_LAKE_HEALTH_PORT:-${port:-9108}}"

if "${CURRENT}/venv/bin/collector" status --port "${port}" --wait "${VALIDATE_TIMEOUT_S}"; then
    log "$(readlink "${CURRENT}") is healthy"
    # Keep the current, the previous and the newest few others; remove older releases.
    keep=("$(readlink -f "${CURRENT}")")
    [[ -L "${PREVIOUS}" ]] && keep+=("$(readlink -f "${PREVIOUS}")")
    mapfile -t newest < <(find "${RELEASES}" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' \
        | sort -rn | head -n "${KEEP_RELEASES}" | cut -d' ' -f2-)
    keep+=("${newest[@]}")
    while IFS= read -r dir; do
        if ! printf '%s\n' "${keep[@]}" | grep -qxF "${dir}"; then
            rm -rf "${dir}"
            log "removed old release ${dir}"
        fi
    done < <(find "${RELEASES}" -mindepth 1 -maxdepth 1 -type d)
    exit 0
fi

log "ERROR: $(readlink "${CURRENT}") did not report healthy within ${VALIDATE_TIMEOUT_S}s"
if [[ -L "${PREVIOUS}" ]]; then
    swap_link "$(readlink -f "${PREVIOUS}")" "${CURRENT}"
    "${SYSTEMCTL}" restart "${UNIT}"
    log "put back the previous release $(readlink "${CURRENT}")"
fi
exit 1
