#!/usr/bin/env bash
# BeforeInstall: make the directories, and empty the incoming directory CodeDeploy copies into.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"

command -v "${PYTHON}" >/dev/null || die "${PYTHON} is not installed; the user data installs it (dnf install python3.11)"
install -d -m 0755 "${ROOT}" "${RELEASES}"
rm -rf "${INCOMING}"
install -d -m 0755 "${INCOMING}"
log "ready for release ${RELEASE}"
