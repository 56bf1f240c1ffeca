"""Real framework clients and servers through wsgate: Socket.IO 4.8 (the npm
packages socket.io and socket.io-client) and EventSource (the npm package
eventsource), installed by `make test` with `npm ci` from
tests/js/package-lock.json.

Socket.IO's default transports start with HTTP long polling and upgrade to a
WebSocket; every request of one session must reach the same backend, or the
backend answers "Session ID unknown". With `balance.key: query:user` the
client's own query parameter is in each polling request and in the upgrade,
so wsgate places the whole session on one backend of three.

The cookie tests (SPEC §10) use `balance.key: header:x-nothing` with the
random fallback, a key no client sends: only wsgate's sticky cookie, kept
by the client's cookie jar (socket.io-client's withCredentials in Node),
keeps each session on one backend; also through two wsgate instances with
one secret behind a round robin, and across a backend killed mid-session.
"""

import json
import os
import shutil
import socket
import threading
import subprocess
from pathlib import Path

import pytest

from wsg_browser import CHROMIUM, Browser

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


# ---- Socket.IO kept together by the sticky cookie alone (SPEC §10) ------------------

COOKIE_SECRET = "e2e-frameworks-cookie-secret"


def cookie_pool(addresses):
    # A key no client sends, with the random fallback: without the cookie a
    # session's requests scatter over the backends ("Session ID unknown").
    p = pool(addresses, key="header:x-nothing", fallback="random")
    p["balance"]["cookie"] = {"secret": COOKIE_SECRET}
    return p


class KillableSioServers(SioServers):
    """sio_servers.js with a stdin to send "kill I" to."""

    def __init__(self, tmpdir, n):
        self.args = [NODE, str(JS / "sio_servers.js"), str(n)]
        self.log_path = Path(tmpdir) / "sio-killable.log"
        self.logf = open(self.log_path, "wb")
        self.p = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.logf)
        self.pid = self.p.pid
        line = self.p.stdout.readline()
        if not line:
            raise AssertionError(f"socket.io servers did not start: {self.log()}")
        self.ports = json.loads(line)["ports"]
        # Drain the event lines so that the pipe never fills.
        threading.Thread(target=lambda: [None for _ in self.p.stdout], daemon=True).start()

    def kill(self, i):
        self.p.stdin.write(f"kill {i}\n".encode())
        self.p.stdin.flush()


class Splitter:
    """A TCP round robin in front of several wsgate instances: each new
    client connection goes to the next one, so that a client's requests
    (wsgate closes each after its response, keepalive_ms 0) alternate."""

    def __init__(self, ports):
        self.ports = ports
        self.count = [0] * len(ports)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(256)
        self.lsock.settimeout(0.1)
        self.port = self.lsock.getsockname()[1]
        self.stopping = False
        self.socks = []
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()

    def _accept(self):
        n = 0
        while not self.stopping:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            i = n % len(self.ports)
            n += 1
            self.count[i] += 1
            try:
                b = socket.create_connection(("127.0.0.1", self.ports[i]), timeout=5)
            except OSError:
                c.close()
                continue
            self.socks += [c, b]
            for src, dst in ((c, b), (b, c)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            src.settimeout(None)
            while True:
                d = src.recv(65536)
                if not d:
                    break
                dst.sendall(d)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def stop(self):
        self.stopping = True
        self.t.join(5)
        self.lsock.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


def run_sticky(port, n, transports):
    r = subprocess.run([NODE, str(JS / "sio_sticky.js"), f"http://127.0.0.1:{port}", str(n),
                        transports], capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["why"] == "done", out
    return out["results"]


def check_one_backend_each(results, transports, key="before"):
    used = set()
    for user, r in results.items():
        assert r["errors"] == [], (user, r)
        names = {a.get("name") for a in r[key]}
        assert len(names) == 1 and None not in names, (user, r[key])
        assert all(a["user"] == user for a in r[key])
        want = "websocket" if "websocket" in transports else "polling"
        assert r[key + "_transport"] == want, (user, r)
        if transports == "polling,websocket":
            assert r[key][-1]["transport"] == "websocket", (user, r)
        used |= names
    assert len(used) > 1, f"20 users all on one backend: {used}"
    return used


@pytest.fixture(scope="module")
def sio_cookie(mstack):
    servers = SioServers(mstack.tmpdir, 3)
    mstack.procs.append(servers)
    pools = {"sio": cookie_pool([f"127.0.0.1:{p}" for p in servers.ports])}
    port = free_port()
    mstack.gate(make_config(port, pools, heartbeat={"interval_ms": 0}))
    # Two more instances with the same secret, behind a round robin.
    ports = [free_port(), free_port()]
    for p in ports:
        mstack.gate(make_config(p, pools, heartbeat={"interval_ms": 0},
                                timeouts={"keepalive_ms": 0}))
    split = Splitter(ports)
    yield {"port": port, "split": split}
    split.stop()


@pytest.mark.parametrize("transports", ["polling,websocket", "polling", "websocket"],
                         ids=["default", "polling-only", "websocket-only"])
def test_socketio_sessions_kept_together_by_the_cookie_alone(sio_cookie, transports):
    check_one_backend_each(run_sticky(sio_cookie["port"], 20, transports), transports)


@pytest.mark.parametrize("transports", ["polling,websocket", "polling"],
                         ids=["default", "polling-only"])
def test_socketio_through_two_instances_alternately(sio_cookie, transports):
    split = sio_cookie["split"]
    before = list(split.count)
    check_one_backend_each(run_sticky(split.port, 20, transports), transports)
    got = [a - b for a, b in zip(split.count, before)]
    # Every client makes several requests; each instance got a share.
    assert min(got) >= 20, got


def test_socketio_backend_killed_mid_session_moves_its_clients_once(stack):
    servers = KillableSioServers(stack.tmpdir, 3)
    stack.procs.append(servers)
    port = free_port()
    stack.gate(make_config(port, {"sio": cookie_pool([f"127.0.0.1:{p}" for p in servers.ports])},
                           heartbeat={"interval_ms": 0}))
    p = subprocess.Popen([NODE, str(JS / "sio_sticky.js"), f"http://127.0.0.1:{port}", "20",
                          "polling,websocket", "kill"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(p.stdout.readline() or "{}")
        assert ready.get("phase") == "ready", (ready, p.stderr.read() if p.poll() else "")
        home = {u: r["before"][0]["name"] for u, r in ready["results"].items()}
        check_one_backend_each(ready["results"], "polling,websocket")
        victim = max(set(home.values()), key=list(home.values()).count)
        servers.kill(int(victim.split("-")[1]))
        p.stdin.write("go\n")
        p.stdin.flush()
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    res = json.loads(out.strip().splitlines()[-1])
    assert res["why"] == "done", res
    for user, r in res["results"].items():
        names = {a.get("name") for a in r["after"]}
        assert len(names) == 1 and None not in names, (user, r["after"])
        if home[user] == victim:
            # Moved once: off the dead backend, the whole new session on one.
            assert names != {victim}, (user, r)
            assert r["disconnects"] == 1, (user, r)
        else:
            assert names == {home[user]}, (user, r)
            assert r["disconnects"] == 0, (user, r.get("last_disconnect"), home[user], victim)


# ---- SockJS over its XHR transports, kept together by the cookie -------------------

class SockjsServers(Proc):
    def __init__(self, tmpdir, n):
        super().__init__([NODE, JS / "sockjs_servers.js", n], Path(tmpdir) / "sockjs.log",
                         stdout_pipe=True)
        line = self.p.stdout.readline()
        if not line:
            raise AssertionError(f"sockjs servers did not start: {self.log()}")
        self.ports = json.loads(line)["ports"]


@pytest.fixture(scope="module")
def sockjs(mstack):
    if not (JS / "node_modules" / "sockjs").is_dir():
        pytest.skip("tests/js/node_modules/sockjs missing (npm ci)")
    servers = SockjsServers(mstack.tmpdir, 3)
    mstack.procs.append(servers)
    port = free_port()
    mstack.gate(make_config(port, {"sj": cookie_pool([f"127.0.0.1:{p}" for p in servers.ports])},
                            heartbeat={"interval_ms": 0}))
    return {"port": port}


@pytest.mark.parametrize("transport", ["xhr-streaming", "xhr-polling"])
def test_sockjs_xhr_sessions_kept_together_by_the_cookie(sockjs, transport):
    r = subprocess.run([NODE, str(JS / "sockjs_clients.js"), f"http://127.0.0.1:{sockjs['port']}/echo",
                        "20", transport], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["why"] == "done", out
    assert out["jars"] == 20, out  # every session got wsgate's cookie
    used = set()
    for user, res in out["results"].items():
        assert res["errors"] == [] and res["transport"] == transport, (user, res)
        names = {a["name"] for a in res["answers"]}
        assert len(names) == 1, (user, res["answers"])
        assert [a["data"] for a in res["answers"]] == [f"{user}-{k}" for k in range(5)]
        used |= names
    assert len(used) > 1, used


# ---- EventSource reconnecting to the same backend, by the cookie -------------------

@pytest.fixture
def sse_cookie(stack):
    fakes = [stack.http(f"sse-{i}") for i in range(3)]
    port = free_port()
    stack.gate(make_config(port, {"web": cookie_pool([f.address for f in fakes])},
                           heartbeat={"interval_ms": 0}))
    return {"port": port, "fakes": fakes}


def test_eventsource_reconnects_with_last_event_id_to_the_same_backend(sse_cookie):
    # es_client.js keeps wsgate's cookie (as a browser does) across the
    # reconnects the origin forces after every 3 events.
    r = subprocess.run([NODE, str(JS / "es_client.js"),
                        f"http://127.0.0.1:{sse_cookie['port']}/sse-id?n=3", "12", "cookies"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["why"] == "done", out
    assert [e["id"] for e in out["got"]] == [str(i) for i in range(12)], out
    served = [f for f in sse_cookie["fakes"] if f.requests]
    assert len(served) == 1, [(f.name, len(f.requests)) for f in sse_cookie["fakes"]]
    seen = [h.get("last-event-id") for _, h, _ in served[0].requests]
    assert seen[:4] == [None, "2", "5", "8"], seen
    assert all("cookie" not in h for _, h, _ in served[0].requests)


# ---- a Socket.IO page in Chromium ----------------------------------------------------------

SIO_WAIT_JS = """
const until = async (cond, ms, what) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out after " + ms + " ms: " + what + " " +
                                          JSON.stringify(window.sio));
    await new Promise(r => setTimeout(r, 20));
  }
};
// Both answers: when the engine's upgrade completes before Socket.IO's CONNECT
// reply, the upgrade handler's whoami is buffered and sent (and answered)
// before the connect handler's, so "upgraded" can come first.
await until(() => window.sio && sio.upgraded && sio.backend, 10000, "both whoami answers");
return sio;
"""


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"{CHROMIUM} is not installed")
def test_socketio_page_in_chromium_stays_on_one_backend_across_a_reload(sio_cookie, tmp_path):
    port = sio_cookie["port"]
    b = Browser(tmp_path / "chromium.log")
    try:
        seen = []
        for _ in range(3):  # the first load, then two reloads of the page
            b.navigate(f"http://127.0.0.1:{port}/page")
            r = b.evaluate(SIO_WAIT_JS)
            assert r["error"] is None, r
            # Long polling first, then the upgrade to a WebSocket: the page,
            # every poll and the WebSocket on the backend of the cookie.
            assert r["transports"] == ["polling", "websocket"], r
            assert r["page"] == r["backend"] == r["upgraded"]["name"], r
            assert r["upgraded"]["transport"] == "websocket", r
            seen.append(r["page"])
        assert len(set(seen)) == 1, seen
    finally:
        b.close()
