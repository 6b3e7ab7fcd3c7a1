#!/usr/bin/env bash
# ApplicationStop: deliberately leaves the running collector alone. It keeps capturing while
# the new release is downloaded and built (AfterInstall takes a minute); ApplicationStart swaps
# releases with one restart, so a deployment costs seconds of capture, not minutes.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"

if [[ -L "${CURRENT}" ]]; then
    log "running release: $(readlink "${CURRENT}"); it keeps running until ApplicationStart"
else
    log "no release installed yet"
fi
if unit_installed; then
    if "${SYSTEMCTL}" is-active --quiet "${UNIT}"; then
        log "${UNIT} is active"
    else
        log "${UNIT} is not active"
    fi
fi
