#!/usr/bin/env bash
# wsgate demo: two echo backends behind wsgate, in the foreground.
#
#   bench/demo.sh BUILD_DIR        (what `make run` does after the build)
#
# Starts echo_backend "backend-1" on 127.0.0.1:9001 and "backend-2" on :9002,
# then `BUILD_DIR/wsgate -c config/demo.json` (listener 127.0.0.1:8080, route
# "/" to a pool of both, sticky key query:user, fallback random), prints how to
# connect and runs until Ctrl-C; the trap stops all three whatever happens.
set -euo pipefail

BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

WSGATE=$BUILD/wsgate
ECHO=$BUILD/bench/echo_backend
CONFIG=config/demo.json
LISTEN_PORT=8080
PY=/usr/bin/python3

die() { echo "demo: $*" >&2; exit 1; }

[ -x "$WSGATE" ] || die "$WSGATE not found: build first (make build)"
[ -x "$ECHO" ] || die "$ECHO not found: build first (make build)"
[ -f "$CONFIG" ] || die "$CONFIG not found"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/wsgate-demo.XXXXXX")
PIDS=()

cleanup() {
    trap - EXIT INT TERM
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    # Give each process a bounded time to exit cleanly, then insist.
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
    echo "demo: stopped"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port that already accepts connections is busy; binding would fail anyway,
# but saying so first gives a clearer message than a bind error.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for port in 9001 9002 $LISTEN_PORT; do
    if port_busy "$port"; then
        die "port 127.0.0.1:$port is busy (another demo running?); free it and retry"
    fi
done

start_backend() { # name port
    local name=$1 port=$2 out=$TMP/$1.out
    "$ECHO" --port "$port" --name "$name" >"$out" 2>"$TMP/$name.err" &
    PIDS+=($!)
    local pid=$!
    for _ in $(seq 100); do
        if grep -q '^listening' "$out" 2>/dev/null; then
            echo "demo: $name $(cat "$out")"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || die "$name failed to start: $(cat "$TMP/$name.err")"
        sleep 0.05
    done
    die "$name did not start within 5 s"
}

start_backend backend-1 9001
start_backend backend-2 9002

"$WSGATE" -c "$CONFIG" &
WSGATE_PID=$!
PIDS+=("$WSGATE_PID")
ready=0
for _ in $(seq 100); do
    kill -0 "$WSGATE_PID" 2>/dev/null || {
        wait "$WSGATE_PID" && rc=0 || rc=$?
        die "wsgate exited with status $rc (see its messages above)"
    }
    if port_busy $LISTEN_PORT; then ready=1; break; fi
    sleep 0.1
done
[ "$ready" = 1 ] || die "wsgate did not listen on 127.0.0.1:$LISTEN_PORT within 10 s"

cat <<EOF

wsgate is listening on ws://127.0.0.1:$LISTEN_PORT/ in front of backend-1 (:9001) and backend-2 (:9002).
Connect with the interactive client and type "whoami" (the backend answers its name):

    $PY -m websockets ws://127.0.0.1:$LISTEN_PORT/?user=alice

The same user always lands on the same backend; try ?user=bob, or no user (random).
Ask wsgate where a key goes without connecting:

    $WSGATE --which alice -c $CONFIG

Other commands: "headers" shows the request headers the backend got (X-Forwarded-*),
anything else is echoed. Press Ctrl-C to stop the demo.
EOF

# Runs until wsgate or a backend exits, or Ctrl-C (the INT trap exits, and the
# EXIT trap stops everything).
set +e
wait -n "${PIDS[@]}"
rc=$?
echo "demo: a process exited (status $rc); stopping" >&2
exit "$rc"
