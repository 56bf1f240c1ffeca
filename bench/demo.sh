#!/usr/bin/env bash
# wsgate demo: three echo backends behind wsgate, in the foreground.
#
#   bench/demo.sh BUILD_DIR        (what `make run` does after the build)
#
# Starts echo_backend "backend-1" on 127.0.0.1:9001, "backend-2" on :9002 and
# "backend-3" on :9003, then `BUILD_DIR/wsgate -c config/demo.json` (listener
# 127.0.0.1:8080, one route "/" for plain HTTP and WebSocket alike, to a pool
# of the three, sticky key query:user, fallback random), prints how to use it,
# ending with the line "open http://127.0.0.1:8080/ in a browser", and runs
# until Ctrl-C; the trap stops every process whatever happens.
#
# LISTEN_PORT and BACKEND_PORT_1..3 move it to other ports (the end-to-end
# test does); the configuration is then config/demo.json with those ports,
# written to the run's temporary directory.
set -euo pipefail

BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

WSGATE=$BUILD/wsgate
ECHO=$BUILD/bench/echo_backend
CONFIG=config/demo.json
LISTEN_PORT=${LISTEN_PORT:-8080}
BACKEND_PORT_1=${BACKEND_PORT_1:-9001}
BACKEND_PORT_2=${BACKEND_PORT_2:-9002}
BACKEND_PORT_3=${BACKEND_PORT_3:-9003}
BACKEND_PORTS=("$BACKEND_PORT_1" "$BACKEND_PORT_2" "$BACKEND_PORT_3")
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

# Other ports: the same configuration with them.
if [ "$LISTEN_PORT ${BACKEND_PORTS[*]}" != "8080 9001 9002 9003" ]; then
    "$PY" - "$CONFIG" "$TMP/demo.json" "$LISTEN_PORT" "${BACKEND_PORTS[@]}" <<'PY' ||
import json, sys
src, out, listen, *ports = sys.argv[1:]
cfg = json.load(open(src))
cfg.pop("$schema", None)
cfg["listeners"][0]["bind"] = f"127.0.0.1:{listen}"
backends = cfg["pools"]["demo"]["backends"]
if len(backends) != len(ports):
    sys.exit(f"{src} must name {len(ports)} backends")
for b, port in zip(backends, ports):
    b["address"] = f"127.0.0.1:{port}"
json.dump(cfg, open(out, "w"), indent=2)
PY
        die "cannot write a configuration for the ports asked"
    CONFIG=$TMP/demo.json
fi

# A port that already accepts connections is busy; binding would fail anyway,
# but saying so first gives a clearer message than a bind error.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for port in "${BACKEND_PORTS[@]}" "$LISTEN_PORT"; do
    if port_busy "$port"; then
        die "port 127.0.0.1:$port is busy (another demo running?); free it and retry"
    fi
done

start_backend() { # name port
    local name=$1 port=$2 out=$TMP/$1.out
    "$ECHO" --port "$port" --name "$name" >"$out" 2>"$TMP/$name.err" </dev/null &
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

start_backend backend-1 "$BACKEND_PORT_1"
start_backend backend-2 "$BACKEND_PORT_2"
start_backend backend-3 "$BACKEND_PORT_3"

"$WSGATE" -c "$CONFIG" </dev/null &
WSGATE_PID=$!
PIDS+=("$WSGATE_PID")
ready=0
for _ in $(seq 100); do
    kill -0 "$WSGATE_PID" 2>/dev/null || {
        wait "$WSGATE_PID" && rc=0 || rc=$?
        die "wsgate exited with status $rc (see its messages above)"
    }
    if port_busy "$LISTEN_PORT"; then ready=1; break; fi
    sleep 0.1
done
[ "$ready" = 1 ] || die "wsgate did not listen on 127.0.0.1:$LISTEN_PORT within 10 s"

URL=http://127.0.0.1:$LISTEN_PORT
cat <<EOF

wsgate is listening on 127.0.0.1:$LISTEN_PORT in front of backend-1 (:$BACKEND_PORT_1),
backend-2 (:$BACKEND_PORT_2) and backend-3 (:$BACKEND_PORT_3): one route carries the page, its
Server-Sent Events, its long poll and its WebSocket. The pool's sticky key is the query
parameter "user", so every request of one user lands on one backend.

In the browser the page picks a user (or add ?user=alice); a second tab with another
user chats with the first when both land on the same backend (each has its own room).
From a terminal:

    curl -N '$URL/events?user=alice'               # the event stream
    curl '$URL/poll?user=alice&since=0'            # a long poll (held up to 25 s)
    curl --data 'hi' '$URL/messages?user=alice'    # post a message
    $PY -m websockets 'ws://127.0.0.1:$LISTEN_PORT/chat?user=alice'
                                 # "whoami" answers the backend's name; anything else is chat
    $WSGATE --which alice -c $CONFIG   # alice's backend, without connecting

Press Ctrl-C to stop the demo.

open $URL/ in a browser
EOF

# Runs until wsgate or a backend exits, or Ctrl-C (the INT trap exits, and the
# EXIT trap stops everything).
set +e
wait -n "${PIDS[@]}"
rc=$?
echo "demo: a process exited (status $rc); stopping" >&2
exit "$rc"
