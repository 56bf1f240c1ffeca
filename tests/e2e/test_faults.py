"""Issue 15 part 3: faults, end to end against the real binary.

- a backend killed (SIGKILL) mid-stream: every client on it gets close 1011
  promptly, the clients of another backend are untouched;
- a backend stopped (SIGSTOP): the relay's heartbeat declares it dead within
  interval_ms + timeout_ms (+ a margin) and the client gets 1001;
- ten SIGHUP reloads, then a burst of twenty, while clients stream
  sequence-numbered messages and others connect: no message lost,
  duplicated or reordered, no connect refused, the last file applied;
- the admin endpoint under 1,000 concurrent connections mixing good,
  oversized and unauthorised requests: every answer is the right one (or the
  connection is closed unanswered past its connection bound), and /healthz
  answers afterwards.
"""

import json
import os
import re
import selectors
import signal
import socket
import threading
import time

from conftest import WSGATE_BIN, free_port, make_config, pool, wait_for
from opshelpers import admin
from wsg_raw import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, Closed, close_payload, ws_connect


def _asan():
    with open(WSGATE_BIN, "rb") as f:
        return b"__asan_init" in f.read()


ASAN = _asan()
SLOW = 3.0 if ASAN else 1.0


def nfds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def close_conn(c):
    try:
        c.send_frame(OP_CLOSE, close_payload(1000))
        while c.read_frame().opcode != OP_CLOSE:
            pass
    except (Closed, OSError):
        pass
    c.close()


# ---- backend killed mid-stream ------------------------------------------------

class Streamer(threading.Thread):
    """A client that keeps a few messages in flight to its backend and
    checks every echo; it stops at a close frame and records its code and
    when it came."""

    def __init__(self, port, path, window=4):
        super().__init__(daemon=True)
        self.conn, _ = ws_connect(port, path)
        self.window = window
        self.stop_ev = threading.Event()
        self.sent = self.got = 0
        self.close_code = None
        self.close_at = None
        self.error = None

    def run(self):
        c = self.conn
        try:
            while not self.stop_ev.is_set():
                while self.sent - self.got < self.window:
                    c.send_frame(OP_TEXT, f"m{self.sent}:" + "x" * 200)
                    self.sent += 1
                f = c.read_frame()
                if f.opcode == OP_CLOSE:
                    self.close_at = time.monotonic()
                    self.close_code = f.close_code
                    return
                want = f"m{self.got}:" + "x" * 200
                if f.payload.decode() != want:
                    raise AssertionError(f"echo {self.got}: {f.payload[:20]!r}")
                self.got += 1
        except Exception as e:
            if self.close_at is None:
                self.error = repr(e)

    def finish(self):
        self.stop_ev.set()
        self.join(10 * SLOW)
        assert not self.is_alive(), "a streaming client hung"


def test_sigkill_of_a_backend_mid_stream_gives_its_clients_1011_and_spares_the_others(stack):
    a, b = stack.echo("kill-a"), stack.echo("kill-b")
    port = free_port()
    cfg = make_config(port, {"a": pool([a.address]), "b": pool([b.address])},
                      routes=[{"path_prefix": "/a", "pool": "a"},
                              {"path_prefix": "/b", "pool": "b"}],
                      workers=2, heartbeat={"interval_ms": 0})
    g = stack.gate(cfg)
    n = 20
    on_a = [Streamer(port, f"/a?user=a{i}") for i in range(n)]
    on_b = [Streamer(port, f"/b?user=b{i}") for i in range(n)]
    try:
        for s in on_a + on_b:
            s.start()
        wait_for(lambda: all(s.got >= 20 for s in on_a + on_b), 10 * SLOW,
                 what="every client streaming")
        t_kill = time.monotonic()
        a.p.kill()
        a.p.wait(5)
        for s in on_a:
            s.join(5 * SLOW)
        late = [(s.close_code, s.close_at and s.close_at - t_kill, s.error) for s in on_a
                if s.close_code != 1011 or s.close_at - t_kill > 1.0 * SLOW]
        assert not late, f"clients of the killed backend without a prompt 1011: {late}"
        worst = max(s.close_at - t_kill for s in on_a)
        # The others kept streaming meanwhile and still do.
        before = [s.got for s in on_b]
        wait_for(lambda: all(s.got >= x + 20 for s, x in zip(on_b, before)), 10 * SLOW,
                 what="the other backend's clients to keep streaming")
        assert all(s.close_code is None and s.error is None for s in on_b), \
            [(s.close_code, s.error) for s in on_b]
        print(f"1011 to {n} clients within {worst * 1000:.1f} ms of the kill")
        assert g.alive
    finally:
        for s in on_a + on_b:
            s.finish()
        for s in on_b:
            close_conn(s.conn)
        for s in on_a:
            s.conn.close()
    assert all(s.error is None for s in on_b), [s.error for s in on_b]


# ---- backend stopped ------------------------------------------------------------

HB_INTERVAL_MS = 300
HB_TIMEOUT_MS = 300


def test_sigstop_of_a_backend_is_declared_dead_by_the_heartbeat(stack):
    a, b = stack.echo("stop-a"), stack.echo("stop-b")
    port = free_port()
    cfg = make_config(port, {"a": pool([a.address]), "b": pool([b.address])},
                      routes=[{"path_prefix": "/a", "pool": "a"},
                              {"path_prefix": "/b", "pool": "b"}],
                      heartbeat={"interval_ms": HB_INTERVAL_MS, "timeout_ms": HB_TIMEOUT_MS},
                      timeouts={"idle_ms": 0})
    g = stack.gate(cfg)
    ca, _ = ws_connect(port, "/a?user=x")
    cb, _ = ws_connect(port, "/b?user=y")
    stopped = False
    stop_b = threading.Event()
    b_errors = []

    def answer_pings_on_b():
        # The other client is as silent as the first but answers wsgate's
        # pings, so the heartbeat keeps it.
        cb.settimeout(0.05)
        while not stop_b.is_set():
            try:
                f = cb.read_frame()
            except socket.timeout:
                continue
            except Exception as e:
                b_errors.append(repr(e))
                return
            if f.opcode == OP_PING:
                cb.send_frame(OP_PONG, f.payload)
            else:
                b_errors.append(f"unexpected {f!r}")
                return

    tb = threading.Thread(target=answer_pings_on_b, daemon=True)
    try:
        for c in (ca, cb):
            c.send_frame(OP_TEXT, "hello")
            assert c.read_message() == (OP_TEXT, b"hello")
        tb.start()
        a.p.send_signal(signal.SIGSTOP)
        stopped = True
        t_last = time.monotonic()  # the backend's last byte came just before
        bound = (HB_INTERVAL_MS + HB_TIMEOUT_MS) / 1000 + 0.5 * SLOW
        ca.settimeout(bound + 2)
        while True:
            f = ca.read_frame()
            if f.opcode == OP_PING:           # wsgate's heartbeat to us: answer it
                ca.send_frame(OP_PONG, f.payload)
                continue
            break
        dt = time.monotonic() - t_last
        assert f.opcode == OP_CLOSE and f.close_code == 1001, f
        print(f"declared dead after {dt * 1000:.0f} ms "
              f"(interval {HB_INTERVAL_MS} + timeout {HB_TIMEOUT_MS})")
        # Not before its time (the ping goes out after interval_ms of
        # silence, the verdict timeout_ms later), and not much after it.
        assert (HB_INTERVAL_MS + HB_TIMEOUT_MS) / 1000 - 0.05 <= dt <= bound, dt
        ca.wait_closed(2 * SLOW)
        wait_for(lambda: "backend heartbeat timeout" in g.log(), 2 * SLOW,
                 what="the access line naming the backend's heartbeat timeout")
        # The client of the other backend, answering pings, is unaffected.
        stop_b.set()
        tb.join(5)
        assert not b_errors, b_errors
        cb.settimeout(2 * SLOW)
        cb.send_frame(OP_TEXT, "still")
        while True:
            f = cb.read_frame()
            if f.opcode == OP_PING:
                cb.send_frame(OP_PONG, f.payload)
                continue
            assert (f.opcode, f.payload) == (OP_TEXT, b"still"), f
            break
    finally:
        stop_b.set()
        if tb.is_alive():
            tb.join(5)
        if stopped:
            a.p.send_signal(signal.SIGCONT)
        ca.close()
        close_conn(cb)


# ---- reloads under load ------------------------------------------------------------

class SeqClient(threading.Thread):
    """Streams sequence-numbered messages (a window in flight) until told to
    stop, then drains; every echo must be the next number, exactly once."""

    def __init__(self, port, name, window=8):
        super().__init__(daemon=True)
        self.name = name
        self.conn, _ = ws_connect(port, f"/?user={name}")
        self.window = window
        self.stop_ev = threading.Event()
        self.sent = self.got = 0
        self.error = None

    def run(self):
        c = self.conn
        try:
            while True:
                if not self.stop_ev.is_set():
                    while self.sent - self.got < self.window:
                        c.send_frame(OP_TEXT, f"{self.name}#{self.sent}")
                        self.sent += 1
                elif self.got == self.sent:
                    return
                op, payload = c.read_message()
                want = f"{self.name}#{self.got}".encode()
                if (op, payload) != (OP_TEXT, want):
                    raise AssertionError(f"got {op} {payload!r}, want {want!r}")
                self.got += 1
        except Exception as e:
            self.error = repr(e)


def write_cfg(g, cfg):
    g.cfg = cfg
    g.cfg_path.write_text(json.dumps(cfg, indent=2))


def test_ten_sighup_reloads_and_a_burst_under_load_lose_and_duplicate_nothing(stack):
    a, b = stack.echo("rl-a"), stack.echo("rl-b")
    port = free_port()

    def cfg_n(i):
        # Alternate between two valid files that differ in what a reload
        # swaps: the pool's backends and weights and a second route.
        backends = [a.address] if i % 2 == 0 else [a.address, b.address]
        routes = [{"path_prefix": "/", "pool": "p"}]
        if i % 2:
            routes.insert(0, {"path_prefix": "/other", "pool": "p"})
        return make_config(port, {"p": pool(backends)}, routes=routes, workers=2,
                           heartbeat={"interval_ms": 0})

    g = stack.gate(cfg_n(0))
    clients = [SeqClient(port, f"seq{i}") for i in range(8)]
    churn_errors, churn_ok = [], [0]
    stop_churn = threading.Event()

    def churn():
        i = 0
        while not stop_churn.is_set():
            try:
                c, _ = ws_connect(port, f"/?user=churn{i}", timeout=5 * SLOW)
                c.send_frame(OP_TEXT, "hi")
                assert c.read_message() == (OP_TEXT, b"hi")
                close_conn(c)
                churn_ok[0] += 1
            except Exception as e:
                churn_errors.append(repr(e))
            i += 1

    ct = threading.Thread(target=churn, daemon=True)
    try:
        for c in clients:
            c.start()
        ct.start()
        for i in range(1, 11):
            before = sum(c.got for c in clients)
            write_cfg(g, cfg_n(i))
            n = g.log().count("reloaded ")
            g.signal(signal.SIGHUP)
            wait_for(lambda: g.log().count("reloaded ") > n, 5 * SLOW, what=f"reload {i}")
            # Traffic flows between reloads (so each reload happens under load).
            wait_for(lambda: sum(c.got for c in clients) > before + 50, 5 * SLOW,
                     what=f"messages after reload {i}")
        # Then a burst: twenty SIGHUPs at once for a file whose only backend
        # is b. However they coalesce, the last file read is that one.
        final = make_config(port, {"p": pool([b.address])}, workers=2,
                            heartbeat={"interval_ms": 0})
        write_cfg(g, final)
        n = g.log().count("reloaded ")
        for _ in range(20):
            g.signal(signal.SIGHUP)
        wait_for(lambda: g.log().count("reloaded ") > n, 5 * SLOW, what="the burst's reloads")

        def lands_on_b():
            c, _ = ws_connect(port, "/?user=after-burst")
            c.send_frame(OP_TEXT, "whoami")
            name = c.read_message()[1].decode()
            close_conn(c)
            return name == b.name
        wait_for(lands_on_b, 5 * SLOW, what="new connections on the burst's file")
        assert not re.search(r"reload.*fail", g.log()), g.log()[-2000:]
    finally:
        stop_churn.set()
        for c in clients:
            c.stop_ev.set()
        for c in clients:
            c.join(10 * SLOW)
        ct.join(10 * SLOW)
    assert not any(c.is_alive() for c in clients), "a sequenced client hung"
    errs = [(c.name, c.error) for c in clients if c.error]
    assert not errs, errs
    assert all(c.got == c.sent > 0 for c in clients), [(c.sent, c.got) for c in clients]
    assert not churn_errors, churn_errors[:5]
    assert churn_ok[0] > 10
    print(f"{sum(c.got for c in clients)} sequenced messages and {churn_ok[0]} churn "
          f"connections over 10 reloads")
    for c in clients:
        close_conn(c.conn)
    assert g.log().count("reloaded ") >= 10


# ---- the admin endpoint under 1,000 connections -----------------------------------

TOKEN = "fault-token"
ADMIN_CONNS = 1000


def _requests(aport):
    """(name, request bytes, expected status, check(body) or None)."""
    big_head = b"GET /status HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * 9000 + b"\r\n\r\n"
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    return [
        ("healthz", b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 200,
         lambda body: body.strip() == b"ok"),
        ("status", b"GET /status HTTP/1.1\r\nHost: a\r\n" + auth + b"Connection: close\r\n\r\n",
         200, lambda body: "pools" in json.loads(body) and json.loads(body)["workers"] == 1),
        ("no-token", b"GET /status HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 401, None),
        ("bad-token", b"GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer nope\r\n"
         b"Connection: close\r\n\r\n", 401, None),
        ("big-head", big_head, 431, None),
        ("big-body", b"POST /reload HTTP/1.1\r\nHost: a\r\n" + auth +
         b"Content-Length: 20000\r\n\r\n" + b"b" * 20000, 413, None),
        ("unknown", b"GET /nope HTTP/1.1\r\nHost: a\r\n" + auth + b"Connection: close\r\n\r\n",
         404, None),
    ]


def test_admin_under_a_thousand_connections_answers_right_or_not_at_all(stack):
    echo = stack.echo("adm-echo")
    port, aport = free_port(), free_port()
    cfg = make_config(port, {"p": pool([echo.address])}, heartbeat={"interval_ms": 0},
                      admin={"bind": f"127.0.0.1:{aport}", "token": TOKEN})
    g = stack.gate(cfg)
    assert admin(aport, "GET", "/healthz")[0] == 200
    fd_base = nfds(g.pid)
    kinds = _requests(aport)
    live, _ = ws_connect(port, "/?user=live")
    sel = selectors.DefaultSelector()
    conns = {}
    try:
        # All 1,000 connect at once, then all send, then every answer is read.
        for i in range(ADMIN_CONNS):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", aport))
            conns[s] = {"kind": kinds[i % len(kinds)], "out": kinds[i % len(kinds)][1],
                        "in": b"", "done": False}
            sel.register(s, selectors.EVENT_WRITE)
        deadline = time.monotonic() + 20 * SLOW
        left = len(conns)
        while left:
            assert time.monotonic() < deadline, f"{left} admin connections unanswered"
            for key, ev in sel.select(0.5):
                s, st = key.fileobj, conns[key.fileobj]
                try:
                    if ev & selectors.EVENT_WRITE:
                        n = s.send(st["out"])
                        st["out"] = st["out"][n:]
                        if not st["out"]:
                            sel.modify(s, selectors.EVENT_READ)
                        continue
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    st["in"] += data
                    continue
                sel.unregister(s)
                st["done"] = True
                left -= 1
        answered, refused, wrong = {}, 0, []
        for st in conns.values():
            name, _, want, check = st["kind"]
            raw = st["in"]
            if not raw:
                refused += 1          # closed at accept, past the connection bound
                continue
            head, _, body = raw.partition(b"\r\n\r\n")
            status = int(head.split(b" ")[1])
            if status != want or (check and not check(body)):
                wrong.append((name, head[:60], body[:80]))
            answered[name] = answered.get(name, 0) + 1
        print(f"admin: {sum(answered.values())} answered {answered}, {refused} closed unanswered")
        assert not wrong, wrong[:5]
        assert sum(answered.values()) >= 64, answered
        # The relay never noticed.
        live.send_frame(OP_TEXT, "during")
        assert live.read_message() == (OP_TEXT, b"during")
    finally:
        sel.close()
        for s in conns:
            s.close()
    # Once they are gone /healthz answers and the endpoint holds no fds.
    def healthz():
        try:
            return admin(aport, "GET", "/healthz", timeout=2)[0] == 200
        except OSError:
            return False
    wait_for(healthz, 5 * SLOW, what="/healthz after the storm")
    st, _, body = admin(aport, "GET", "/status", TOKEN)
    assert st == 200 and json.loads(body)["connections"]["active"] == 1, body
    wait_for(lambda: nfds(g.pid) <= fd_base + 2, 5 * SLOW,
             what=f"wsgate's fds back to {fd_base} + the live relay (at {nfds(g.pid)})")
    close_conn(live)
    assert g.alive


RELOADS = 150


def test_many_reloads_in_a_row_with_idle_workers(stack):
    """RELOADS SIGHUP reloads, each awaited, while nothing is connected: each
    reload's runtime is dropped by the workers as soon as the next one
    reaches them, racing the server thread's own release of it. Under ASan
    this found a use after free (the reload's last log line read the path
    of the configuration just freed); the teardown's sanitizer scan is the
    check, and the last file must be the one in effect."""
    a, b = stack.echo("r50-a"), stack.echo("r50-b")
    port, aport = free_port(), free_port()

    def cfg_n(i):
        return make_config(port, {"p": pool([a.address if i % 2 else b.address])}, workers=2,
                           heartbeat={"interval_ms": 0}, admin={"bind": f"127.0.0.1:{aport}"})

    g = stack.gate(cfg_n(0))
    for i in range(1, RELOADS + 1):
        write_cfg(g, cfg_n(i))
        n = g.log().count("reloaded ")
        g.signal(signal.SIGHUP)
        wait_for(lambda: g.log().count("reloaded ") > n, 5 * SLOW, what=f"reload {i}")
    c, _ = ws_connect(port, "/?user=last")
    c.send_frame(OP_TEXT, "whoami")
    assert c.read_message() == (OP_TEXT, b.name.encode())
    close_conn(c)
    assert admin(aport, "GET", "/healthz")[0] == 200
    assert g.alive
