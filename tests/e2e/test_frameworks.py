"""Real framework clients and servers through wsgate: Socket.IO 4.8 (the npm
packages socket.io and socket.io-client) and EventSource (the npm package
eventsource), installed by `make test` with `npm ci` from
tests/js/package-lock.json.

Socket.IO's default transports start with HTTP long polling and upgrade to a
WebSocket; every request of one session must reach the same backend, or the
backend answers "Session ID unknown". With `balance.key: query:user` the
client's own query parameter is in each polling request and in the upgrade,
so wsgate places the whole session on one backend of three.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Proc, free_port, make_config, pool

JS = Path(__file__).resolve().parent.parent / "js"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (JS / "node_modules" / "socket.io").is_dir(),
    reason="node or tests/js/node_modules missing (make test runs npm ci)")


class SioServers(Proc):
    def __init__(self, tmpdir, n):
        super().__init__([NODE, JS / "sio_servers.js", n], Path(tmpdir) / "sio-servers.log",
                         stdout_pipe=True)
        line = self.p.stdout.readline()
        if not line:
            raise AssertionError(f"socket.io servers did not start: {self.log()}")
        self.ports = json.loads(line)["ports"]


def run_clients(port, n, transports="polling,websocket"):
    r = subprocess.run([NODE, str(JS / "sio_clients.js"), f"http://127.0.0.1:{port}", str(n),
                        transports], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["why"] == "done", out
    return out["results"]


@pytest.fixture(scope="module")
def sio(mstack):
    servers = SioServers(mstack.tmpdir, 3)
    mstack.procs.append(servers)
    port = free_port()
    cfg = make_config(port, {"sio": pool([f"127.0.0.1:{p}" for p in servers.ports],
                                         key="query:user", fallback="random")},
                      heartbeat={"interval_ms": 0})
    gate = mstack.gate(cfg)
    return {"port": port, "gate": gate, "servers": servers}


@pytest.mark.parametrize("transports", ["polling,websocket", "polling", "websocket"],
                         ids=["default", "polling-only", "websocket-only"])
def test_socketio_sessions_stay_on_one_backend(sio, transports):
    results = run_clients(sio["port"], 20, transports)
    used = set()
    for user, r in results.items():
        assert r["errors"] == [], (user, r)
        names = {a.get("name") for a in r["answers"]}
        assert len(names) == 1 and None not in names, (user, r["answers"])
        assert all(a["user"] == user for a in r["answers"])
        used |= names
        want = "websocket" if "websocket" in transports else "polling"
        assert r["final"] == want, (user, r)
        if transports == "polling,websocket":
            # The session began on HTTP long polling and upgraded: a probe
            # landing on another backend fails and the client stays polling.
            assert r["first"] == "polling", (user, r)
            assert r["answers"][-1]["transport"] == "websocket", (user, r)
    assert len(used) > 1, f"20 users all on one backend: {used}"


# ---- EventSource -------------------------------------------------------------------

@pytest.fixture(scope="module")
def sse(mstack):
    fake = mstack.http("sse-origin")
    port = free_port()
    gate = mstack.gate(make_config(port, {"web": pool([fake.address])},
                                   heartbeat={"interval_ms": 0}))
    return {"port": port, "fake": fake, "gate": gate}


def test_eventsource_reconnects_with_last_event_id(sse):
    # The origin sends three events per connection and closes; the client
    # comes back (retry: 50 ms) with Last-Event-ID and the stream goes on.
    r = subprocess.run([NODE, str(JS / "es_client.js"),
                        f"http://127.0.0.1:{sse['port']}/sse-id?n=3", "9"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["why"] == "done", out
    assert [e["id"] for e in out["got"]] == [str(i) for i in range(9)], out
    assert out["opens"] >= 3
    seen = [h.get("last-event-id") for _, h, _ in sse["fake"].requests]
    assert seen[:3] == [None, "2", "5"], seen
