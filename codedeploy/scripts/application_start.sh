#!/usr/bin/env bash
# ApplicationStart: remember the running release as previous, point current at the new one,
# stop the old collector, wait until its spool is free, start the new one, and enable the
# compactor's timer. With Type=notify, `systemctl start` returns once the collector is capturing.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"

[[ -f "${RELEASE}/.complete" ]] || die "${RELEASE} was not built completely; AfterInstall failed"

spools=("$(spool_dir_of "${RELEASE}/.env")")
if [[ -L "${CURRENT}" ]]; then
    running="$(readlink -f "${CURRENT}")"
    spools+=("$(spool_dir_of "${running}/.env")")
    if [[ "${running}" != "$(readlink -f "${RELEASE}")" ]]; then
        swap_link "${running}" "${PREVIOUS}"
        log "previous release: ${running}"
    fi
fi
swap_link "${RELEASE}" "${CURRENT}"
# The unit reads the current release's settings.
ln -sfn "${CURRENT}/.env" "${ROOT}/.env"
"${SYSTEMCTL}" enable "${UNIT}"
# Not `restart`: a collector still landing what it buffered, or one started by hand, holds the
# spool; the new one would refuse to start (exit 2) and systemd would retry it in a loop.
"${SYSTEMCTL}" stop "${UNIT}"
for spool in "${spools[@]}"; do
    wait_for_spool "${spool}"
done
"${SYSTEMCTL}" start "${UNIT}"
# The daily compaction. Restarting the timer makes a changed schedule count; it does not start
# the compactor, and a run in progress finishes with the release it started with.
"${SYSTEMCTL}" enable "${COMPACT_TIMER}"
"${SYSTEMCTL}" restart "${COMPACT_TIMER}"
log "started ${RELEASE}"
