#!/usr/bin/env bash
# A stand-in for systemctl in tests of the CodeDeploy hooks: it records every call and runs the
# real collector of the current release as a background process, as the unit would, and its
# compactor when the compactor's unit is started.
set -euo pipefail
root="${TRADE_LAKE_ROOT:?}"
state="${root}/.fake-systemd"
mkdir -p "${state}"
echo "$*" >> "${state}/calls"
pidfile="${state}/collector.pid"

running() { [[ -f "${pidfile}" ]] && kill -0 "$(cat "${pidfile}")" 2>/dev/null; }

stop() {
    if running; then
        pid="$(cat "${pidfile}")"
        kill -TERM "${pid}"
        for _ in $(seq 1 600); do
            kill -0 "${pid}" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "${pidfile}"
}

start() {
    # Like systemd: a clean environment plus the EnvironmentFile, nothing of the caller's.
    cd "${state}"
    # shellcheck disable=SC2016 # $1 and $2 are the inner shell's arguments
    setsid env -i PATH=/usr/bin:/bin HOME="${HOME}" \
        bash -c 'set -a; . "$1"; set +a; exec "$2" run' _ "${root}/current/.env" "${root}/current/venv/bin/collector" \
        >> "${state}/collector.log" 2>&1 &
    echo $! > "${pidfile}"
}

# The compactor, as its oneshot unit runs it: `systemctl start` waits for it and fails with it.
compact() {
    cd "${state}"
    # shellcheck disable=SC2016 # $1 and $2 are the inner shell's arguments
    env -i PATH=/usr/bin:/bin HOME="${HOME}" \
        bash -c 'set -a; . "$1"; set +a; exec "$2" compact' _ "${root}/current/.env" "${root}/current/venv/bin/collector" \
        >> "${state}/compact.log" 2>&1
}

unit="${*: -1}"
case "$1 ${unit}" in
    "daemon-reload daemon-reload" | "enable "*) ;;
    "restart collector.service") stop; start ;;
    "start collector.service") running || start ;;
    "stop collector.service") stop ;;
    "is-active collector.service") running ;;
    "start collector-compact.service") compact ;;
    "restart collector-compact.timer") ;;
    *) echo "fake systemctl: unsupported $*" >&2; exit 2 ;;
esac
