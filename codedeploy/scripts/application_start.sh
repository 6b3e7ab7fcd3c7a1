#!/usr/bin/env bash
# ApplicationStart: remember the running release as previous, point current at the new one,
# restart, and enable the compactor's timer. With Type=notify, `systemctl restart` returns once
# the collector is capturing.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"

[[ -f "${RELEASE}/.complete" ]] || die "${RELEASE} was not built completely; AfterInstall failed"

if [[ -L "${CURRENT}" ]]; then
    running="$(readlink -f "${CURRENT}")"
    if [[ "${running}" != "$(readlink -f "${RELEASE}")" ]]; then
        swap_link "${running}" "${PREVIOUS}"
        log "previous release: ${running}"
    fi
fi
swap_link "${RELEASE}" "${CURRENT}"
# The unit reads the current release's settings.
ln -sfn "${CURRENT}/.env" "${ROOT}/.env"
"${SYSTEMCTL}" enable "${UNIT}"
"${SYSTEMCTL}" restart "${UNIT}"
# The daily compaction. Restarting the timer makes a changed schedule count; it does not start
# the compactor, and a run in progress finishes with the release it started with.
"${SYSTEMCTL}" enable "${COMPACT_TIMER}"
"${SYSTEMCTL}" restart "${COMPACT_TIMER}"
log "started ${RELEASE}"
