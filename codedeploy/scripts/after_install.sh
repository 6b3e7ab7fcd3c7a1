#!/usr/bin/env bash
# AfterInstall: build the release in its own directory and virtual environment, fetch its .env
# from SSM, install the systemd units (the collector's, the compactor's and its timer). Nothing
# running is touched; the previous release stays.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"

[[ -f "${INCOMING}/pyproject.toml" ]] || die "no bundle in ${INCOMING}: was appspec.yml's files section changed?"
if [[ -L "${CURRENT}" && "$(readlink -f "${CURRENT}")" == "$(readlink -f "${RELEASE}")" ]]; then
    die "${RELEASE} is the running release; a deployment id is never reused"
fi

# A venv cannot be moved, so it is built in place; a retried hook rebuilds from scratch.
rm -rf "${RELEASE}"
install -d -m 0755 "${RELEASE}"
cp -a "${INCOMING}/." "${RELEASE}/src"
log "creating ${RELEASE}/venv with ${PYTHON}"
"${PYTHON}" -m venv "${RELEASE}/venv"
"${RELEASE}/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${RELEASE}/src"
"${RELEASE}/venv/bin/collector" --version

# The .env belongs to the release, so rolling back also rolls back its settings.
"${RELEASE}/venv/bin/collector" fetch-env --parameter "${SSM_PARAMETER}" --output "${RELEASE}/.env"

install -d -m 0755 "${UNIT_DIR}"
for unit in "${UNIT}" "${COMPACT_UNIT}" "${COMPACT_TIMER}"; do
    install -m 0644 "${RELEASE}/src/codedeploy/${unit}" "${UNIT_DIR}/${unit}"
done
"${SYSTEMCTL}" daemon-reload
touch "${RELEASE}/.complete"
log "release ${RELEASE} built"
