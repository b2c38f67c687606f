#!/usr/bin/env bash
# Start or stop a real Milvus standalone server on this machine, on loopback only.
#
#   tools/milvus_server.sh install VENV               # pip install milvus==2.3.5 into its own venv
#   tools/milvus_server.sh start VENV DATA [--auth]   # start it on DATA (a fresh folder), wait for health
#   tools/milvus_server.sh stop DATA                  # stop it (SIGINT to the wrapper, then SIGKILL)
#
# PyPI `milvus` 2.3.5 bundles the real Milvus 2.3.5 standalone binary (embedded etcd,
# rocksmq and local storage; no Docker). It listens on 19530 (gRPC) and 9091 (health);
# `start` refuses when either is taken, since the wrapper would silently take the next
# port. `--auth` turns Milvus' own authorization on (user root, password Milvus).
# .ci/run uses it to run the test suite against a server (docs/milvus.md).
set -euo pipefail

PROXY_PORT=19530
HEALTH_PORT=9091
HEALTH_URL="http://127.0.0.1:$HEALTH_PORT/healthz"

die() { echo "milvus_server: $*" >&2; exit 1; }

port_taken() {
    python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no obstacle
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
finally:
    s.close()
sys.exit(1)
EOF
}

healthy() {
    python3 - "$HEALTH_URL" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        sys.exit(0 if r.read().strip() == b"OK" else 1)
except OSError:
    sys.exit(1)
EOF
}

case "${1:-}" in
install)
    venv=${2:?usage: install VENV}
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet milvus==2.3.5
    ;;
start)
    venv=${2:?usage: start VENV DATA [--auth]}
    data=${3:?usage: start VENV DATA [--auth]}
    [ -x "$venv/bin/milvus-server" ] || die "no $venv/bin/milvus-server: run '$0 install $venv' first"
    for port in "$PROXY_PORT" "$HEALTH_PORT"; do
        if port_taken "$port"; then die "port $port is in use: stop what holds it first"; fi
    done
    mkdir -p "$data"
    extra=()
    for part in rootCoord proxy queryCoord queryNode indexNode dataCoord dataNode; do
        extra+=(--extra-config "$part.ip=127.0.0.1")
    done
    [ "${4:-}" = --auth ] && extra+=(--authorization-enabled true)
    # its own session, so that stop can end the wrapper and the server binary together
    setsid "$venv/bin/milvus-server" --data "$data" --proxy-port "$PROXY_PORT" "${extra[@]}" \
        >"$data/server.log" 2>&1 < /dev/null &
    echo $! >"$data/server.pid"
    wait=${MILVUS_START_TIMEOUT:-180}  # after a SIGKILL on a big data folder it can take minutes
    for _ in $(seq 1 "$wait"); do
        if healthy; then echo "http://127.0.0.1:$PROXY_PORT"; exit 0; fi
        kill -0 "$(cat "$data/server.pid")" 2>/dev/null || { tail -20 "$data/server.log" >&2; die "the server exited"; }
        sleep 1
    done
    tail -20 "$data/server.log" >&2
    die "no answer from $HEALTH_URL after $wait s; it may still be starting (MILVUS_START_TIMEOUT=SECONDS waits longer; $0 stop $data ends it)"
    ;;
stop)
    data=${2:?usage: stop DATA}
    [ -f "$data/server.pid" ] || exit 0
    pid=$(cat "$data/server.pid")
    # SIGINT to the wrapper stops it in a second or two; SIGTERM to the binary can wait
    # for Milvus' graceful-stop timeout (30 minutes)
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$data/server.pid"
    ;;
*)
    sed -n '2,12p' "$0" >&2
    exit 2
    ;;
esac
