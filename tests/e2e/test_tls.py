"""Issue 5 end to end: TLS termination (wss), SNI, min_version, ALPN and
resumption, rejection of what is not TLS, the handshake deadline, key
updates and renegotiation, backpressure and idle memory over TLS, TLS to
backend pools, PROXY protocol in front of TLS, `wsgate -t` on certificate
files, certificates re-read on reload, and shutdown.

The clients are independent of wsgate: Python's ssl module (also through
ssl.MemoryBIO, to control exactly which bytes go out when), python3-websockets
and the `openssl s_client` command. Every certificate is made at test time
with the `openssl` command into a temporary directory. test_listener.py
already covers the basics (one wss exchange, SNI by hostname verification,
1.3 refusing 1.2 through Python, a plain request not reaching the backend,
PROXY on a plain listener); this file goes further and does not repeat them.
"""

import asyncio
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
import websockets

from conftest import (SMALL_QUARANTINE, WSGATE_BIN, free_port, make_config, pool, rss_kb, run,
                      wait_for)
from opshelpers import admin_json, backend as admin_backend
from wsg_fakes import pattern
from wsg_raw import (OP_BINARY, OP_CLOSE, OP_TEXT, Conn, close_payload, encode_frame,
                     http_exchange, upgrade_request, ws_connect)

HS_MS = 2000  # handshake_ms of the front gate
# RSS an idle TLS connection may cost wsgate: OpenSSL's SSL object alone is
# about 14 KiB once the handshake is done; keeping its two record buffers
# would add about 33 KiB.
IDLE_TLS_KB = 32


# ---- certificates ----------------------------------------------------------------

def ossl(*args, cwd=None):
    r = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                       timeout=30, cwd=cwd, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"openssl {' '.join(map(str, args))}: {r.stderr}"
    return r.stdout


class Pki:
    """Test CAs and leaf certificates (EC P-256, fast to make) in <d>."""

    def __init__(self, d):
        self.d = Path(d)

    def key(self, name):
        k = self.d / f"{name}.key"
        ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", k)
        return str(k)

    def ca(self, name):
        key, pem = self.key(name), self.d / f"{name}.pem"
        ossl("req", "-x509", "-new", "-key", key, "-days", "30", "-subj", f"/CN={name}",
             "-out", pem)
        return {"pem": str(pem), "key": key}

    def leaf(self, name, ca, names=(), ips=(), serial=1, days=30, key=None):
        key = key or self.key(name)
        csr, pem, ext = (self.d / f"{name}.csr", self.d / f"{name}.pem",
                         self.d / f"{name}.ext")
        ossl("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr)
        san = ",".join([f"DNS:{n}" for n in names] + [f"IP:{i}" for i in ips])
        ext.write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                       "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
                       "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
        ossl("x509", "-req", "-in", csr, "-CA", ca["pem"], "-CAkey", ca["key"],
             "-set_serial", serial, "-days", days, "-extfile", ext, "-out", pem)
        return {"pem": str(pem), "key": key, "serial": serial, "cn": name}


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    p = Pki(tmp_path_factory.mktemp("pki"))
    ca1, ca2 = p.ca("wsgate-test-ca"), p.ca("wsgate-other-ca")
    local = dict(names=["localhost"], ips=["127.0.0.1"])
    return {
        "ca": ca1, "ca2": ca2,
        "site": p.leaf("site", ca1, serial=0x1001, **local),
        "renewed": p.leaf("site-renewed", ca1, serial=0x2002, **local),
        "renewed2": p.leaf("site-renewed2", ca1, serial=0x3003, **local),
        "alpha": p.leaf("alpha", ca1, names=["alpha.test"], serial=0xA1),
        "beta": p.leaf("beta", ca1, names=["beta.test"], serial=0xB1),
        "apps": p.leaf("apps", ca1, names=["*.apps.test"], serial=0xC1),
        "be_good": p.leaf("backend-good", ca1, serial=0x501, **local),
        "be_other": p.leaf("backend-other-ca", ca2, serial=0x502, **local),
        "be_named": p.leaf("backend-named", ca1, names=["backend.internal"], serial=0x503),
        "expired": p.leaf("expired", ca1, serial=0x666, days=-1, **local),
        "stray_key": p.key("stray"),
        "dir": p.d,
    }


def client_ctx(pki, ca="ca", **kw):
    ctx = ssl.create_default_context(cafile=pki[ca]["pem"])
    ctx.set_alpn_protocols(["http/1.1"])
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def server_ctx(cert):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert["pem"], cert["key"])
    return ctx


def s_client(port, *args, timeout=15):
    """openssl s_client with no input: handshake, then close_notify. Returns
    (exit status, stdout + stderr)."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout)
    return r.returncode, r.stdout + r.stderr


def served_cn(out):
    m = re.search(r"^subject=.*CN\s*=\s*([^,\n]+)$", out, re.M)
    assert m, out
    return m.group(1).strip()


# ---- clients ------------------------------------------------------------------------

class MemTls:
    """TLS over a blocking socket through ssl.MemoryBIO: the test decides
    what goes out in which send (a PROXY header in the same segment as the
    ClientHello, a handshake left unfinished). Has the socket methods
    wsg_raw.Conn uses."""

    def __init__(self, sock, ctx, hostname, prefix=b"", finish=True):
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=hostname)
        first = True
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                data = self.out.read()
                if first:
                    data, first = prefix + data, False
                if data:
                    sock.sendall(data)
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionResetError("EOF during the TLS handshake")
                self.inc.write(chunk)
        if finish:
            self._flush()

    def _flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def settimeout(self, t):
        self.sock.settimeout(t)

    def sendall(self, data):
        self.obj.write(data)
        self._flush()

    def recv(self, n):
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return b""
                self.inc.write(chunk)
            except ssl.SSLZeroReturnError:
                return b""

    def close(self):
        self.sock.close()


def tls_conn(port, ctx, hostname="localhost", timeout=5.0, strict_eof=False):
    """A wsg_raw.Conn over TLS. With <strict_eof>, a TCP EOF without TLS
    close_notify raises ssl.SSLEOFError instead of reading as the end."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return Conn(ctx.wrap_socket(raw, server_hostname=hostname,
                                suppress_ragged_eofs=not strict_eof), timeout)


def upgrade(conn, path="/", host="localhost"):
    req, _ = upgrade_request(path, host)
    conn.send(req)
    st, h, raw = conn.read_http_head()
    assert st == 101, raw
    return h


def ask(conn, text):
    conn.send_frame(OP_TEXT, text)
    op, payload = conn.read_message()
    assert op == OP_TEXT, (op, payload)
    return payload.decode()


def wss(port, ctx, path="/", hostname="localhost", **kw):
    opts = dict(ssl=ctx, server_hostname=hostname, ping_interval=None, max_size=None,
                compression=None, open_timeout=5, close_timeout=3)
    opts.update(kw)
    return websockets.connect(f"wss://127.0.0.1:{port}{path}", **opts)


def read_until_closed(sock, timeout):
    """(bytes received, seconds until EOF/reset). socket.timeout if the peer
    keeps the connection open."""
    t0 = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - t0


def is_alerts_only(data):
    """True when <data> is nothing or TLS alert records only (content type 21)."""
    while data:
        if len(data) < 5 or data[0] != 21 or data[1] != 3:
            return False
        n = struct.unpack("!H", data[3:5])[0]
        data = data[5 + n:]
    return True


def log_since(gate, mark):
    return gate.log()[mark:]


def wait_log(gate, mark, text, timeout=5.0):
    """Waits until <text> is in the log written after <mark>; returns that log."""
    wait_for(lambda: text in log_since(gate, mark), timeout, what=f"log {text!r}")
    return log_since(gate, mark)


# ---- the front gate: three TLS listeners -------------------------------------------

@pytest.fixture(scope="module")
def front(mstack, pki):
    echo = mstack.echo("tls-front-echo")
    fake = mstack.fake("tls-front-fake")
    p12, p13, ppp = free_port(), free_port(), free_port()
    site = pki["site"]
    tls12 = {"cert": site["pem"], "key": site["key"], "min_version": "1.2",
             "sni": [{"server_name": "alpha.test", "cert": pki["alpha"]["pem"],
                      "key": pki["alpha"]["key"]},
                     {"server_name": "beta.test", "cert": pki["beta"]["pem"],
                      "key": pki["beta"]["key"]},
                     {"server_name": "*.apps.test", "cert": pki["apps"]["pem"],
                      "key": pki["apps"]["key"]}]}
    cfg = make_config(p12, {"echo": pool([echo.address]), "fake": pool([fake.address])},
                      routes=[{"path_prefix": "/fake", "pool": "fake"},
                              {"path_prefix": "/", "pool": "echo"}],
                      workers=2, heartbeat={"interval_ms": 0},
                      timeouts={"handshake_ms": HS_MS})
    cfg["listeners"] = [
        {"name": "tls12", "bind": f"127.0.0.1:{p12}", "tls": tls12},
        {"name": "tls13", "bind": f"127.0.0.1:{p13}",
         "tls": {"cert": site["pem"], "key": site["key"], "min_version": "1.3"}},
        {"name": "pp", "bind": f"127.0.0.1:{ppp}", "proxy_protocol": True,
         "tls": {"cert": site["pem"], "key": site["key"]}},
    ]
    g = mstack.gate(cfg)
    return {"gate": g, "p12": p12, "p13": p13, "pp": ppp, "fake": fake}


def still_serves(front, pki):
    """A fresh wss client still gets its echo."""
    c = tls_conn(front["p12"], client_ctx(pki))
    try:
        upgrade(c)
        assert ask(c, "still there?") == "still there?"
    finally:
        c.close()


# ---- wss echo ------------------------------------------------------------------------

SIZES = [0, 125, 126, 65535, 65536, 1 << 20]


def test_wss_echoes_every_message_size_text_and_binary(front, pki):
    async def body():
        async with wss(front["p12"], client_ctx(pki), "/echo") as ws:
            ssl_obj = ws.transport.get_extra_info("ssl_object")
            assert ssl_obj.selected_alpn_protocol() == "http/1.1"
            assert ssl_obj.version() in ("TLSv1.2", "TLSv1.3")
            for n in SIZES:
                text = ("abcdefghijklmnopqrstuvwxyz" * (n // 26 + 1))[:n]
                await ws.send(text)
                got = await ws.recv()
                assert isinstance(got, str) and got == text, (n, len(got))
                data = os.urandom(n)
                await ws.send(data)
                got = await ws.recv()
                assert isinstance(got, bytes) and got == data, (n, len(got))
            await ws.send("headers")
            return json.loads(await ws.recv())
    h = run(body())
    assert h["x-forwarded-proto"] == "https", h
    assert h["x-real-ip"] == "127.0.0.1", h
    assert h["x-forwarded-for"] == "127.0.0.1", h


def test_wss_over_tls12_and_tls13_both_relay(front, pki):
    for ver in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_ctx(pki, minimum_version=ver, maximum_version=ver)
        c = tls_conn(front["p12"], ctx)
        try:
            assert c.sock.version() == ver.name.replace("v1_", "v1."), c.sock.version()
            upgrade(c)
            c.send_frame(OP_BINARY, b"\x00\xff" * 40000)
            op, payload = c.read_message()
            assert (op, payload) == (OP_BINARY, b"\x00\xff" * 40000)
        finally:
            c.close()


def test_alpn_without_http11_is_refused_and_no_alpn_is_fine(front, pki):
    g = front["gate"]
    mark = len(g.log())
    rc, out = s_client(front["p12"], "-alpn", "h2", "-noservername")
    assert rc != 0 and "no application protocol" in out, out
    wait_log(g, mark, "TLS handshake failed: no application protocol")
    rc, out = s_client(front["p12"], "-noservername", "-CAfile", pki["ca"]["pem"])
    assert rc == 0, out
    assert "No ALPN negotiated" in out, out


def test_session_resumption_with_a_ticket(front, pki):
    ctx = client_ctx(pki)
    c = tls_conn(front["p12"], ctx)
    upgrade(c)  # the ticket arrives before the 101
    sess = c.sock.session
    assert not c.sock.session_reused
    c.close()
    assert sess is not None and sess.has_ticket
    # Several times: the two workers share the ticket keys.
    for i in range(6):
        raw = socket.create_connection(("127.0.0.1", front["p12"]), timeout=5)
        s = ctx.wrap_socket(raw, server_hostname="localhost", session=sess)
        try:
            assert s.session_reused, i
            c = Conn(s)
            upgrade(c)
            assert ask(c, f"resumed {i}") == f"resumed {i}"
        finally:
            s.close()


def test_frames_pipelined_behind_the_request_in_one_tls_write(front, pki):
    c = tls_conn(front["p12"], client_ctx(pki))
    try:
        req, _ = upgrade_request("/", "localhost")
        c.send(req + encode_frame(OP_TEXT, "early-1") + encode_frame(OP_BINARY, b"\x01" * 300))
        st, _, raw = c.read_http_head()
        assert st == 101, raw
        assert c.read_message() == (OP_TEXT, b"early-1")
        assert c.read_message() == (OP_BINARY, b"\x01" * 300)
    finally:
        c.close()


def test_one_byte_tls_records(front, pki):
    """The request and a frame, each byte in its own TLS record: wsgate
    parses what it decrypts however it is cut."""
    c = tls_conn(front["p12"], client_ctx(pki))
    try:
        req, _ = upgrade_request("/", "localhost")
        for b in req:
            c.sock.sendall(bytes([b]))
        st, _, raw = c.read_http_head()
        assert st == 101, raw
        for b in encode_frame(OP_TEXT, "byte by byte"):
            c.sock.sendall(bytes([b]))
        assert c.read_message() == (OP_TEXT, b"byte by byte")
    finally:
        c.close()


def test_client_close_notify_mid_relay_gives_the_backend_1001(front, pki):
    fake = front["fake"]
    c = tls_conn(front["p12"], client_ctx(pki))
    upgrade(c, "/fake?id=tls-close-notify")
    assert ask(c, "foo") == "bar"
    rec = fake.wait_conn("tls-close-notify")
    plain = c.sock.unwrap()  # TLS close_notify, TCP stays open
    try:
        f = rec.wait_close()
        assert f.close_code == 1001, f
        assert rec.eof.wait(5)
        plain.settimeout(5)
        assert plain.recv(100) == b""  # wsgate closed TCP too
    finally:
        plain.close()


def test_corrupt_tls_record_mid_relay_closes_both_sides(front, pki):
    g, fake = front["gate"], front["fake"]
    raw = socket.create_connection(("127.0.0.1", front["p12"]), timeout=5)
    t = MemTls(raw, client_ctx(pki), "localhost")
    c = Conn(t)
    try:
        upgrade(c, "/fake?id=tls-corrupt")
        assert ask(c, "foo") == "bar"
        rec = fake.wait_conn("tls-corrupt")
        mark = len(g.log())
        # An application data record whose authentication tag cannot verify.
        raw.sendall(b"\x17\x03\x03\x00\x40" + os.urandom(64))
        f = rec.wait_close()
        assert f.close_code == 1001, f
        assert rec.eof.wait(5)
        # What comes back is at most an alert (encrypted in TLS 1.3).
        data, _ = read_until_closed(raw, 5)
        t.inc.write(data)
        with pytest.raises(ssl.SSLError, match="(?i)bad.record.mac|alert|EOF"):
            got = t.obj.read(100)
            raise AssertionError(f"application data after a corrupt record: {got!r}")
        assert "tls-corrupt" not in log_since(g, mark)  # nothing odd echoed
    finally:
        raw.close()
    still_serves(front, pki)


class SClient:
    """An interactive `openssl s_client`: lines starting with k, K or R are
    its commands (key update, renegotiation), anything else is sent as
    data (a WebSocket frame starts with 0x81, never one of those)."""

    def __init__(self, port, *args):
        self.p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                                   "-noservername", *args], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.out = bytearray()

    def send(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def expect(self, marker, count=1, timeout=5.0):
        """Reads the output until <marker> appeared <count> times."""
        deadline = time.monotonic() + timeout
        while self.out.count(marker) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"no {marker!r} from s_client: {bytes(self.out[-2000:])!r}"
            if select.select([self.p.stdout], [], [], left)[0]:
                chunk = os.read(self.p.stdout.fileno(), 65536)
                assert chunk, f"s_client ended: {bytes(self.out[-2000:])!r}"
                self.out.extend(chunk)

    def close(self):
        try:
            self.p.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)
        self.p.stdout.close()


def test_tls13_key_updates_mid_relay(front, pki):
    """s_client's "k" (KeyUpdate, update requested) and "K" (not requested)
    between echoed frames: both directions keep working."""
    sc = SClient(front["p12"], "-tls1_3")
    try:
        sc.send(upgrade_request("/", "localhost")[0])
        sc.expect(b"101 Switching Protocols")
        for i, cmd in enumerate((b"k", b"K")):
            sc.send(cmd + b"\n")
            sc.expect(b"KEYUPDATE", i + 1)
            msg = b"after key update " + cmd
            sc.send(encode_frame(OP_TEXT, msg))
            sc.expect(msg)
    finally:
        sc.close()
    still_serves(front, pki)


def test_tls12_renegotiation_mid_relay_is_refused(front, pki):
    fake = front["fake"]
    sc = SClient(front["p12"], "-tls1_2")
    try:
        sc.send(upgrade_request("/fake?id=tls-reneg", "localhost")[0])
        sc.expect(b"101 Switching Protocols")
        sc.send(encode_frame(OP_TEXT, "foo"))
        sc.expect(b"bar")
        sc.send(b"R\n")
        sc.expect(b"RENEGOTIATING")
        sc.expect(b"no renegotiation")
        # The client gives up on the connection; the backend hears of it.
        f = fake.wait_conn("tls-reneg").wait_close()
        assert f.close_code == 1001, f
    finally:
        sc.close()
    still_serves(front, pki)


@pytest.fixture
def per_ip(stack, pki):
    echo = stack.echo("tls-per-ip-echo")
    p1, p2 = free_port(), free_port()
    cfg = make_config(p1, {"p": pool([echo.address])}, heartbeat={"interval_ms": 0},
                      limits={"max_connections_per_ip": 1})
    tls = {"cert": pki["site"]["pem"], "key": pki["site"]["key"]}
    cfg["listeners"] = [{"name": "tls", "bind": f"127.0.0.1:{p1}", "tls": tls},
                        {"name": "pp", "bind": f"127.0.0.1:{p2}", "tls": tls,
                         "proxy_protocol": True}]
    stack.gate(cfg)
    return {"tls": p1, "pp": p2}


def second_client_status(port, pki, preamble=b""):
    def conn():
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        raw.sendall(preamble)
        return Conn(client_ctx(pki).wrap_socket(raw, server_hostname="localhost"))
    def admitted():
        # The readiness probe's connection may not be released yet.
        c = conn()
        c.send(upgrade_request("/", "localhost")[0])
        if c.read_http_head()[0] == 101:
            return c
        c.close()
        time.sleep(0.05)
        return None
    first = wait_for(admitted, 5, what="a first connection admitted")
    try:
        second = conn()
        try:
            second.send(upgrade_request("/", "localhost")[0])
            st, h, body, _ = second.read_response()
            return st, h
        finally:
            second.close()
    finally:
        first.close()


def test_max_connections_per_ip_answers_429_over_tls(per_ip, pki):
    st, h = second_client_status(per_ip["tls"], pki)
    assert st == 429 and h.get("connection") == "close", (st, h)


def test_max_connections_per_ip_answers_429_over_tls_behind_proxy(per_ip, pki):
    st, h = second_client_status(per_ip["pp"], pki, proxy_v1("198.51.100.44"))
    assert st == 429 and h.get("connection") == "close", (st, h)


# ---- backpressure and memory over TLS --------------------------------------------------

MiB = 1 << 20
BULK = 32 * MiB
CHUNK = 65536
RSS_BOUND_KB = 32 * 1024


@pytest.fixture
def bp(stack, pki):
    """A wsgate of its own (its RSS is measured), with a small ASan quarantine."""
    fake = stack.fake("tls-bp-fake")
    echo = stack.echo("tls-bp-echo")
    port = free_port()
    cfg = make_config(port, {"main": pool([fake.address]), "echo": pool([echo.address])},
                      routes=[{"path_prefix": "/echo", "pool": "echo"},
                              {"path_prefix": "/", "pool": "main"}],
                      heartbeat={"interval_ms": 0}, limits={"buffer_bytes": 65536})
    cfg["listeners"][0]["tls"] = {"cert": pki["site"]["pem"], "key": pki["site"]["key"]}
    g = stack.gate(cfg, env=SMALL_QUARANTINE)
    return {"port": port, "fake": fake, "gate": g}


def wait_stalled(progress, what, sample, stable_s=0.4, timeout=15.0):
    """Waits until progress() stops changing for <stable_s>, calling
    sample() on every poll; returns the final value."""
    last, since = progress(), time.monotonic()
    deadline = since + timeout
    while True:
        time.sleep(0.05)
        sample()
        v = progress()
        if v != last:
            last, since = v, time.monotonic()
        elif time.monotonic() - since >= stable_s:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never stalled (at {v} bytes)")


def tls_conn_small_rcvbuf(port, ctx, rcvbuf=16384, timeout=30.0):
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(timeout)
    raw.connect(("127.0.0.1", port))
    return Conn(ctx.wrap_socket(raw, server_hostname="localhost"), timeout)


def test_backend_to_tls_client_backpressure(bp, pki):
    """The TLS client does not read: wsgate stops reading the backend (its
    TLS writes queue at most about one record beyond buffer_bytes), then
    everything arrives intact once the client reads."""
    pid = bp["gate"].pid
    c = tls_conn_small_rcvbuf(bp["port"], client_ctx(pki))
    try:
        upgrade(c, "/?id=tls-bp-out")
        rec = bp["fake"].wait_conn("tls-bp-out")
        base = rss_kb(pid)
        peak = [base]
        c.send_frame(OP_TEXT, f"stream:{BULK}:{CHUNK}")
        stalled = wait_stalled(lambda: rec.sent_bytes, "the backend's stream",
                               lambda: peak.__setitem__(0, max(peak[0], rss_kb(pid))))
        assert stalled < BULK, "wsgate absorbed everything the backend offered"
        assert peak[0] - base < RSS_BOUND_KB, f"wsgate RSS grew by {peak[0] - base} KiB"
        got, i = 0, 0
        while got < BULK:
            f = c.read_frame()
            assert f.opcode == OP_BINARY and not f.masked, f
            assert f.payload == pattern(i, len(f.payload)), f"frame {i} corrupted"
            got += len(f.payload)
            i += 1
        assert got == BULK == rec.sent_bytes
    finally:
        c.close()


def test_tls_client_to_backend_backpressure(bp, pki):
    """The backend does not read: wsgate stops reading the TLS client, and
    what it had decrypted but not relayed comes out intact on resume."""
    pid = bp["gate"].pid
    c = tls_conn(bp["port"], client_ctx(pki), timeout=30)
    sent, errors = [0], []

    def sender():
        try:
            zero = b"\0\0\0\0"  # a zero mask keeps the payload as is: cheap
            for i in range(BULK // CHUNK):
                c.send(encode_frame(OP_BINARY, pattern(i, CHUNK), mask_key=zero))
                sent[0] += CHUNK
        except Exception as e:  # reported below
            errors.append(repr(e))

    th = threading.Thread(target=sender, daemon=True)
    rec = None
    try:
        upgrade(c, "/?mode=sink&id=tls-bp-in")
        rec = bp["fake"].wait_conn("tls-bp-in")
        base = rss_kb(pid)
        peak = [base]
        th.start()
        stalled = wait_stalled(lambda: sent[0], "the client's upload",
                               lambda: peak.__setitem__(0, max(peak[0], rss_kb(pid))))
        assert not errors, errors
        assert stalled < BULK, "wsgate absorbed everything the client offered"
        assert peak[0] - base < RSS_BOUND_KB, f"wsgate RSS grew by {peak[0] - base} KiB"
        rec.resume.set()
        th.join(30)
        assert not th.is_alive() and not errors, errors
        wait_for(lambda: rec.sink_bytes >= BULK, 30, what="the backend to read everything")
        assert rec.sink_bytes == BULK and rec.sink_ok, (rec.sink_bytes, rec.sink_ok)
        c.send_frame(OP_CLOSE, close_payload(1000))
        f = c.read_frame()
        assert f.opcode == OP_CLOSE and f.close_code == 1000, f
    finally:
        if rec is not None:
            rec.resume.set()
        c.close()
        th.join(10)


def test_idle_tls_connections_hold_no_record_buffers(bp, pki):
    pid = bp["gate"].pid
    ctx = client_ctx(pki)
    conns = []
    try:
        for _ in range(20):  # warm up the allocator and the echo path
            c = tls_conn(bp["port"], ctx)
            conns.append(c)
            upgrade(c, "/echo")
            assert ask(c, "warm") == "warm"
        base = rss_kb(pid)
        n = 200
        for _ in range(n):
            c = tls_conn(bp["port"], ctx)
            conns.append(c)
            upgrade(c, "/echo")
            assert ask(c, "x" * 1000) == "x" * 1000
        growth = rss_kb(pid) - base
        print(f"{n} idle TLS connections: {growth} KiB")
        # Keeping OpenSSL's 16 KiB read and write record buffers plus a
        # 64 KiB read buffer per idle connection would be ~19 MiB.
        assert growth < n * IDLE_TLS_KB, f"{n} idle TLS connections grew RSS by {growth} KiB"
        for c in conns[::37]:
            assert ask(c, "still") == "still"
    finally:
        for c in conns:
            c.close()


def test_many_concurrent_wss_clients_across_workers(front, pki):
    names = ["alpha.test", "beta.test", "x.apps.test", "localhost"]
    cas = client_ctx(pki)

    async def one(i):
        name = names[i % len(names)]
        async with wss(front["p12"], cas, f"/c{i}", hostname=name) as ws:
            for j in range(5):
                msg = f"{i}-{j}-" + "m" * (i * 997 % 20000)
                await ws.send(msg)
                assert await ws.recv() == msg
            cert = ws.transport.get_extra_info("ssl_object").getpeercert()
            return i, dict(x[0] for x in cert["subject"])["commonName"]

    async def body():
        return await asyncio.gather(*(one(i) for i in range(40)))
    want = {"alpha.test": "alpha", "beta.test": "beta", "x.apps.test": "apps",
            "localhost": "site"}
    for i, cn in run(body()):
        assert cn == want[names[i % len(names)]], (i, cn)


# ---- SNI through openssl s_client ------------------------------------------------------

@pytest.mark.parametrize("name,cn", [
    ("alpha.test", "alpha"), ("beta.test", "beta"), ("ALPHA.TEST", "alpha"),
    ("beta.test.", "beta"),
    ("x.apps.test", "apps"), ("a.b.apps.test", "apps"),
    ("apps.test", "site"), ("unknown.test", "site"), (None, "site")])
def test_sni_picks_the_certificate_by_name(front, pki, name, cn):
    args = ["-servername", name] if name else ["-noservername"]
    rc, out = s_client(front["p12"], *args, "-CAfile", pki["ca"]["pem"])
    assert rc == 0, out
    assert served_cn(out) == cn, out
    assert "Verify return code: 0 (ok)" in out, out


def test_sni_certificate_verifies_for_its_name(front, pki):
    rc, out = s_client(front["p12"], "-servername", "beta.test", "-CAfile", pki["ca"]["pem"],
                       "-verify_hostname", "beta.test", "-verify_return_error")
    assert rc == 0 and "Verification: OK" in out, out
    rc, out = s_client(front["p12"], "-servername", "beta.test", "-CAfile", pki["ca"]["pem"],
                       "-verify_hostname", "alpha.test", "-verify_return_error")
    assert rc != 0, out


# ---- min_version ------------------------------------------------------------------------

def test_tls11_refused_when_min_version_is_12(front, pki):
    g = front["gate"]
    mark = len(g.log())
    rc, out = s_client(front["p12"], "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0",
                       "-noservername")
    assert rc != 0, out
    assert re.search(r"protocol version|unsupported protocol|no protocols", out), out
    wait_log(g, mark, "TLS protocol version refused")
    rc, out = s_client(front["p12"], "-tls1_2", "-noservername", "-CAfile", pki["ca"]["pem"])
    assert rc == 0 and "TLSv1.2" in out, out
    still_serves(front, pki)


def test_tls12_refused_when_min_version_is_13(front, pki):
    g = front["gate"]
    mark = len(g.log())
    rc, out = s_client(front["p13"], "-tls1_2", "-noservername")
    assert rc != 0, out
    assert re.search(r"protocol version|unsupported protocol", out), out
    lines = wait_log(g, mark, "TLS protocol version refused")
    assert "TLS handshake failed" in lines, lines
    rc, out = s_client(front["p13"], "-tls1_3", "-noservername", "-CAfile", pki["ca"]["pem"])
    assert rc == 0 and "TLSv1.3" in out, out
    still_serves(front, pki)


# ---- what is not TLS -----------------------------------------------------------------

NOT_TLS = {
    "junk": (b"\x8f\x01\x02\x03 this is not TLS at all \x00\xff" * 4, "not a TLS ClientHello"),
    "ssh": (b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", "not a TLS ClientHello"),
    "bad-hello": (b"\x16\x03\x01\x00\x30" + b"\x01\x00\x00\x2c" + b"\xaa" * 44,
                  "TLS handshake failed: "),
    "plain-http": (b"GET /fake?id=plain-on-tls HTTP/1.1\r\nHost: localhost\r\n"
                   b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   b"Sec-WebSocket-Version: 13\r\n\r\n", "plain HTTP request on a TLS port"),
}


@pytest.mark.parametrize("kind", list(NOT_TLS))
@pytest.mark.parametrize("listener", ["p12", "pp"])
def test_not_tls_is_closed_at_once_and_logged(front, pki, kind, listener):
    g, fake = front["gate"], front["fake"]
    data, reason = NOT_TLS[kind]
    before = len(fake.records)
    mark = len(g.log())
    s = socket.create_connection(("127.0.0.1", front[listener]), timeout=5)
    try:
        if listener == "pp":
            s.sendall(b"PROXY TCP4 198.51.100.3 127.0.0.1 4000 443\r\n")
        s.sendall(data)
        got, took = read_until_closed(s, 5)
    finally:
        s.close()
    # Closed on the bytes that show it is not TLS, not at the handshake deadline.
    assert took < HS_MS / 2000, took
    assert is_alerts_only(got), got
    assert b"HTTP/1.1" not in got
    text = wait_log(g, mark, reason)
    assert "TLS handshake failed: " in text, text
    assert "TLS handshake failed: TLS handshake failed" not in text, text
    assert len(fake.records) == before, fake.records[before:]
    still_serves(front, pki)


# ---- the handshake deadline -------------------------------------------------------------

def client_hello(ctx):
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_unfinished_tls_handshakes_are_cut_at_handshake_ms(front, pki):
    """Clients at once: silent; half a ClientHello; a whole ClientHello and
    the server's flight read but no Finished; a finished TLS handshake and
    no request (answered 408 over TLS); on the PROXY listener, a header and
    then nothing, and half a header."""
    g = front["gate"]
    mark = len(g.log())
    ctx = client_ctx(pki)
    kinds = {"silent": "p12", "half-hello": "p12", "no-finished": "p12", "no-request": "p12",
             "pp-silent": "pp", "pp-half-header": "pp"}
    socks, results = {}, {}
    t0 = time.monotonic()
    for kind, listener in kinds.items():
        socks[kind] = socket.create_connection(("127.0.0.1", front[listener]), timeout=5)
    socks["half-hello"].sendall(client_hello(ctx)[:40])
    MemTls(socks["no-finished"], ctx, "localhost", finish=False)
    done = MemTls(socks["no-request"], ctx, "localhost")
    socks["pp-silent"].sendall(proxy_v2("192.0.2.9"))
    socks["pp-half-header"].sendall(proxy_v1("192.0.2.9")[:20])

    def wait(kind):
        try:
            if kind == "no-request":
                c = Conn(done, timeout=HS_MS / 1000 + 3)
                st, _, body, _ = c.read_response()
                results[kind] = (st, time.monotonic() - t0)
            else:
                read_until_closed(socks[kind], HS_MS / 1000 + 3)
                results[kind] = (None, time.monotonic() - t0)
        except Exception as e:  # reported below
            results[kind] = (repr(e), None)

    threads = [threading.Thread(target=wait, args=(k,)) for k in socks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HS_MS / 1000 + 5)
    for s in socks.values():
        s.close()
    for kind in socks:
        st, at = results.get(kind, ("no result", None))
        assert at is not None, (kind, st)
        assert HS_MS / 1000 - 0.1 <= at <= HS_MS / 1000 + 1.5, (kind, at)
        assert st == (408 if kind == "no-request" else None), (kind, st)
    text = wait_log(g, mark, "PROXY header not complete within handshake_ms")
    assert text.count("TLS handshake not complete within handshake_ms") >= 4, text
    still_serves(front, pki)


# ---- PROXY protocol in front of TLS -------------------------------------------------------

def proxy_v1(src, sport=51234):
    return f"PROXY TCP4 {src} 127.0.0.1 {sport} 443\r\n".encode()


def proxy_v2(src, sport=51234):
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    body = socket.inet_aton(src) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", sport, 443)
    # A TLV (PP2_TYPE_AUTHORITY) too: it must be skipped.
    tlv = b"\x02" + struct.pack("!H", 9) + b"localhost"
    return sig + bytes([0x21, 0x11]) + struct.pack("!H", len(body) + len(tlv)) + body + tlv


def proxy_v2_local():
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    return sig + bytes([0x20, 0x00]) + struct.pack("!H", 0)


@pytest.mark.parametrize("segment", ["separate", "split", "with-hello"])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_header_before_tls_gives_the_client_address(front, pki, version, segment):
    # A source address of its own, so that the access line is this test's.
    src = {"v1": "203.0.113.", "v2": "192.0.2."}[version] + \
        str(70 + ["separate", "split", "with-hello"].index(segment))
    header = (proxy_v1 if version == "v1" else proxy_v2)(src)
    raw = socket.create_connection(("127.0.0.1", front["pp"]), timeout=5)
    if segment in ("separate", "split"):
        if segment == "split":
            # The header in two segments: wsgate waits for the rest.
            raw.sendall(header[:7])
            time.sleep(0.05)
            raw.sendall(header[7:])
        else:
            raw.sendall(header)
        tls = client_ctx(pki).wrap_socket(raw, server_hostname="localhost")
    else:
        # The header and the ClientHello in one send: what follows the
        # header in wsgate's buffer is the start of the TLS stream.
        tls = MemTls(raw, client_ctx(pki), "localhost", prefix=header)
    c = Conn(tls)
    try:
        upgrade(c)
        h = json.loads(ask(c, "headers"))
        assert ask(c, "x" * 70000) == "x" * 70000
    finally:
        c.close()
    assert h["x-forwarded-for"] == src, h
    assert h["x-real-ip"] == src, h
    assert h["x-forwarded-proto"] == "https", h
    # The access log names the client from the header too.
    wait_for(lambda: re.search(rf"access client={re.escape(src)}:51234 listener=pp ",
                               front["gate"].log()), 5, what="the access line")


@pytest.mark.parametrize("header", [b"PROXY UNKNOWN\r\n", proxy_v2_local()],
                         ids=["v1-unknown", "v2-local"])
def test_proxy_header_without_an_address_keeps_the_peer_address(front, pki, header):
    raw = socket.create_connection(("127.0.0.1", front["pp"]), timeout=5)
    c = Conn(MemTls(raw, client_ctx(pki), "localhost", prefix=header))
    try:
        upgrade(c)
        h = json.loads(ask(c, "headers"))
    finally:
        c.close()
    assert h["x-forwarded-for"] == "127.0.0.1", h
    assert h["x-forwarded-proto"] == "https", h


def test_tls_without_proxy_header_on_a_proxy_listener_is_refused(front, pki):
    g = front["gate"]
    mark = len(g.log())
    raw = socket.create_connection(("127.0.0.1", front["pp"]), timeout=5)
    try:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            client_ctx(pki).wrap_socket(raw, server_hostname="localhost")
    finally:
        raw.close()
    wait_log(g, mark, "PROXY")
    still_serves(front, pki)


# ---- TLS to backends ---------------------------------------------------------------------

def named_echo(name):
    async def handler(ws, path):
        async for m in ws:
            if m == "whoami":
                await ws.send(name)
            else:
                await ws.send(m)
    return handler


def tls_backend(stack, pki, cert, name):
    seen = []
    ctx = server_ctx(pki[cert])
    ctx.sni_callback = lambda obj, sn, c: seen.append(sn)
    b = stack.wslib(named_echo(name), ssl=ctx, ping_interval=None, compression=None)
    b.sni = seen
    b.name = name
    return b


class PlainAnswer:
    """A backend that is not TLS: whatever arrives, it answers a plain HTTP
    400 and closes."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.lsock.settimeout(0.1)
        self.address = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stopping:
            try:
                s, _ = self.lsock.accept()
            except (socket.timeout, OSError):
                continue
            try:
                s.settimeout(2)
                s.recv(4096)
                s.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
                          b"Content-Length: 0\r\n\r\n")
            except OSError:
                pass
            s.close()

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.lsock.close()


@pytest.fixture(scope="module")
def back(mstack, pki):
    good = tls_backend(mstack, pki, "be_good", "good")
    other = tls_backend(mstack, pki, "be_other", "other-ca")
    named = tls_backend(mstack, pki, "be_named", "named")
    plain = mstack.echo("plain-not-tls")
    answering = PlainAnswer()
    mstack.fakes.append(answering)
    ca = pki["ca"]["pem"]
    pools = {
        "good": pool([good.address], tls={"ca": ca}),
        "bad": pool([other.address], tls={"ca": ca}),
        "mixed": pool([other.address, good.address], tls={"ca": ca}, retries=1),
        "noverify": pool([other.address], tls={"verify": False}),
        "named": pool([named.address], tls={"ca": ca, "server_name": "backend.internal"}),
        "named_ip": pool([named.address], tls={"ca": ca}),
        "named_wrong": pool([named.address], tls={"ca": ca, "server_name": "wrong.internal"}),
        "silent": pool([plain.address], tls={"ca": ca}, connect_timeout_ms=1000),
        "plainhttp": pool([answering.address], tls={"ca": ca}),
        "checked": pool([good.address], tls={"ca": ca},
                        health={"type": "websocket", "path": "/", "interval_ms": 100,
                                "timeout_ms": 500, "rise": 1, "fall": 1}),
    }
    routes = [{"path_prefix": f"/{p}/", "pool": p} for p in pools]
    port, aport = free_port(), free_port()
    cfg = make_config(port, pools, routes=routes, heartbeat={"interval_ms": 0},
                      admin={"bind": f"127.0.0.1:{aport}"})
    g = mstack.gate(cfg)
    return {"gate": g, "port": port, "aport": aport, "good": good, "other": other,
            "named": named, "plain": plain}


def upgrade_status(port, path):
    req, _ = upgrade_request(path, f"127.0.0.1:{port}")
    st, _, body, _ = http_exchange(port, req)
    return st, body


def test_backend_over_tls_signed_by_the_pool_ca(back):
    c, _ = ws_connect(back["port"], "/good/x?user=a")
    try:
        assert ask(c, "whoami") == "good"
        assert ask(c, "y" * 200000) == "y" * 200000
    finally:
        c.close()
    # An IP literal is verified against the IP SAN and never sent as SNI
    # (RFC 6066 §3).
    assert back["good"].sni and set(back["good"].sni) == {None}, back["good"].sni
    path, headers = back["good"].requests[-1]
    assert path.startswith("/good/x"), path
    assert headers["x-forwarded-proto"] == "http", headers


def test_backend_signed_by_another_ca_is_a_failed_connect(back):
    g = back["gate"]
    mark = len(g.log())
    st, body = upgrade_status(back["port"], "/bad/?user=a")
    assert st == 502, (st, body)
    text = wait_log(g, mark, "certificate verify failed")
    assert "TLS handshake failed" in text or "TLS to backend failed" in text, text
    b = admin_backend(back["aport"], "bad", back["other"].address)
    assert b["failures"] >= 1, b


def test_bad_backend_is_skipped_counted_and_goes_down_after_fall(back):
    port, aport = back["port"], back["aport"]
    bad, good = back["other"].address, back["good"].address
    # A key whose first choice is the badly signed backend.
    user = None
    for i in range(64):
        r = subprocess.run([WSGATE_BIN, "--which", f"u{i}", "-p", "mixed", "-c",
                            back["gate"].cfg_path], capture_output=True, text=True, timeout=20)
        if r.stdout.strip() == bad:
            user = f"u{i}"
            break
    assert user, "no key maps to the bad backend"
    fall = 3  # the default; passive checks only
    for i in range(fall):
        c, _ = ws_connect(port, f"/mixed/?user={user}")
        try:
            assert ask(c, "whoami") == "good"
        finally:
            c.close()
        assert admin_backend(aport, "mixed", bad)["failures"] == i + 1
    b = admin_backend(aport, "mixed", bad)
    assert b["state"] == "down", b
    assert admin_backend(aport, "mixed", good)["state"] == "up"
    # Down: the next client goes straight to the good one, no new failure.
    c, _ = ws_connect(port, f"/mixed/?user={user}")
    try:
        assert ask(c, "whoami") == "good"
    finally:
        c.close()
    assert admin_backend(aport, "mixed", bad)["failures"] == fall


def test_verify_false_accepts_any_certificate(back):
    c, _ = ws_connect(back["port"], "/noverify/?user=a")
    try:
        assert ask(c, "whoami") == "other-ca"
    finally:
        c.close()


def test_server_name_is_sent_and_verified(back):
    g = back["gate"]
    c, _ = ws_connect(back["port"], "/named/?user=a")
    try:
        assert ask(c, "whoami") == "named"
    finally:
        c.close()
    assert "backend.internal" in back["named"].sni, back["named"].sni
    # The same backend verified by its IP address: its certificate has none.
    mark = len(g.log())
    st, _ = upgrade_status(back["port"], "/named_ip/?user=a")
    assert st == 502
    wait_log(g, mark, "mismatch")
    # A server_name the certificate does not hold.
    mark = len(g.log())
    st, _ = upgrade_status(back["port"], "/named_wrong/?user=a")
    assert st == 502
    wait_log(g, mark, "hostname mismatch")
    assert "wrong.internal" in back["named"].sni, back["named"].sni


def test_backend_that_does_not_speak_tls_is_a_failed_connect(back):
    g = back["gate"]
    # It answers in plain text: refused at once, with the reason.
    mark = len(g.log())
    t0 = time.monotonic()
    st, _ = upgrade_status(back["port"], "/plainhttp/?user=a")
    assert st == 502
    assert time.monotonic() - t0 < 1.0
    text = wait_log(g, mark, "peer does not speak TLS")
    assert "TLS handshake failed" in text, text
    # It never answers the ClientHello: connect_timeout_ms covers the TLS
    # handshake too.
    mark = len(g.log())
    t0 = time.monotonic()
    st, _ = upgrade_status(back["port"], "/silent/?user=a")
    took = time.monotonic() - t0
    assert st == 502
    assert 0.9 <= took < 2.5, took
    wait_log(g, mark, "connect timeout")


class TlsHttpBackend:
    """An HTTP/1.1 origin over TLS that keeps connections alive and counts
    them: answers GET with its path."""

    def __init__(self, cert):
        import http.server
        outer = self
        self.lock = threading.Lock()
        self.conns = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with outer.lock:
                    outer.conns += 1

            def do_GET(self):
                body = self.path.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.srv.socket = server_ctx(cert).wrap_socket(self.srv.socket, server_side=True)
        self.address = "127.0.0.1:%d" % self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def test_plain_http_reuses_kept_alive_tls_backend_connections(stack, pki):
    be = TlsHttpBackend(pki["be_good"])
    stack.fakes.append(be)
    port = free_port()
    cfg = make_config(port, {"t": pool([be.address], tls={"ca": pki["ca"]["pem"]})},
                      heartbeat={"interval_ms": 0})
    stack.gate(cfg)
    import http.client
    for i in range(5):
        h = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        h.request("GET", f"/tls{i}")
        r = h.getresponse()
        assert (r.status, r.read()) == (200, f"/tls{i}".encode())
        h.close()
    # One TLS handshake with the backend for five requests from five clients.
    assert be.conns == 1


def test_reload_of_a_pool_ca_keeps_live_backend_tls_connections(stack, pki):
    good = tls_backend(stack, pki, "be_good", "good")
    port = free_port()

    def cfg(ca):
        return make_config(port, {"p": pool([good.address], tls={"ca": pki[ca]["pem"]})},
                           heartbeat={"interval_ms": 0})
    g = stack.gate(cfg("ca"))
    live, _ = ws_connect(port, "/?user=a")
    try:
        assert ask(live, "whoami") == "good"
        g.cfg_path.write_text(json.dumps(cfg("ca2")))  # now the backend is untrusted
        mark = len(g.log())
        g.signal(signal.SIGHUP)
        wait_log(g, mark, "reloaded ")
        st, _ = upgrade_status(port, "/?user=b")
        assert st == 502
        wait_log(g, mark, "certificate verify failed")
        # The connection made under the old context relays on.
        assert ask(live, "z" * 100000) == "z" * 100000
    finally:
        live.close()


def test_active_checks_of_a_tls_pool_do_not_take_it_down(back):
    """http/websocket checks cannot speak TLS yet: they are done as tcp
    checks (and say so), rather than failing on every backend."""
    g = back["gate"]
    wait_for(lambda: admin_backend(back["aport"], "checked", back["good"].address)
             ["last_check"]["ok"], 5, what="a passed check")
    time.sleep(0.35)  # a few more intervals
    b = admin_backend(back["aport"], "checked", back["good"].address)
    assert b["state"] == "up" and b["last_check"]["ok"], b
    assert "pool checked: its backends speak TLS; websocket checks are done as tcp checks" \
        in g.log()


# ---- wsgate -t -----------------------------------------------------------------------------

def check_cfg(tmp_path, pki, listener_tls=None, pool_tls=None, name="t"):
    cfg = make_config(free_port(), {"p": pool(["127.0.0.1:9"])})
    if listener_tls is not None:
        cfg["listeners"][0]["tls"] = listener_tls
    if pool_tls is not None:
        cfg["pools"]["p"]["tls"] = pool_tls
    f = tmp_path / f"{name}.json"
    f.write_text(json.dumps(cfg))
    r = subprocess.run([WSGATE_BIN, "-t", "-c", f], capture_output=True, text=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout + r.stderr, f


def test_check_accepts_good_tls_files(tmp_path, pki):
    s = pki["site"]
    rc, out, f = check_cfg(tmp_path, pki, {"cert": s["pem"], "key": s["key"], "sni": [
        {"server_name": "alpha.test", "cert": pki["alpha"]["pem"], "key": pki["alpha"]["key"]}]},
        {"ca": pki["ca"]["pem"]})
    assert rc == 0 and "configuration OK" in out, out


def bad_cases(pki, d):
    s = pki["site"]
    missing = str(d / "missing.pem")
    garbage = d / "garbage-ca.pem"
    garbage.write_text("this is not a certificate\n")
    return {
        "missing-cert": ({"cert": missing, "key": s["key"]}, None, missing,
                         "cannot open certificate"),
        "missing-key": ({"cert": s["pem"], "key": str(d / "missing.key")}, None,
                        str(d / "missing.key"), "private key"),
        "key-mismatch": ({"cert": s["pem"], "key": pki["stray_key"]}, None, pki["stray_key"],
                         "does not match"),
        "expired": ({"cert": pki["expired"]["pem"], "key": pki["expired"]["key"]}, None,
                    pki["expired"]["pem"], "expired"),
        "sni-mismatch": ({"cert": s["pem"], "key": s["key"], "sni": [
            {"server_name": "alpha.test", "cert": pki["alpha"]["pem"],
             "key": pki["beta"]["key"]}]}, None, pki["beta"]["key"], "does not match"),
        "missing-ca": (None, {"ca": missing}, missing, "CA"),
        "garbage-ca": (None, {"ca": str(garbage)}, str(garbage), "CA"),
    }


@pytest.mark.parametrize("case", ["missing-cert", "missing-key", "key-mismatch", "expired",
                                  "sni-mismatch", "missing-ca", "garbage-ca"])
def test_check_names_the_bad_tls_file(tmp_path, pki, case):
    lt, pt, path, what = bad_cases(pki, tmp_path)[case]
    rc, out, f = check_cfg(tmp_path, pki, lt, pt)
    assert rc == 1, out
    assert path in out and what in out, out
    where = "listeners[0].tls" if lt is not None else "pools.p.tls"
    assert f"{f}: {where}: {path}" in out, out
    assert "configuration OK" not in out, out


def test_start_with_an_expired_certificate_fails_naming_it(tmp_path, pki):
    e = pki["expired"]
    cfg = make_config(free_port(), {"p": pool(["127.0.0.1:9"])})
    cfg["listeners"][0]["tls"] = {"cert": e["pem"], "key": e["key"]}
    f = tmp_path / "expired.json"
    f.write_text(json.dumps(cfg))
    r = subprocess.run([WSGATE_BIN, "-c", f], capture_output=True, text=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 3, r.stdout + r.stderr
    assert e["pem"] in r.stderr and "expired" in r.stderr, r.stderr


# ---- reload picks up renewed certificates ------------------------------------------------

def peer_serial(conn_or_sock):
    return int(conn_or_sock.getpeercert()["serialNumber"], 16)


def install(pki, which, cert, key):
    shutil.copyfile(pki[which]["pem"], cert)
    shutil.copyfile(pki[which]["key"], key)


def test_reload_picks_up_a_renewed_certificate(stack, pki, tmp_path):
    echo = stack.echo("tls-reload-echo")
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    install(pki, "site", cert, key)
    port, aport = free_port(), free_port()
    cfg = make_config(port, {"p": pool([echo.address])}, heartbeat={"interval_ms": 0},
                      admin={"bind": f"127.0.0.1:{aport}"})
    cfg["listeners"][0]["tls"] = {"cert": str(cert), "key": str(key)}
    g = stack.gate(cfg)
    ctx = client_ctx(pki)

    old = tls_conn(port, ctx)
    try:
        assert peer_serial(old.sock) == pki["site"]["serial"]
        upgrade(old)
        assert ask(old, "before") == "before"
        sess = old.sock.session

        # Renewed files, SIGHUP.
        install(pki, "renewed", cert, key)
        mark = len(g.log())
        g.signal(signal.SIGHUP)
        wait_log(g, mark, "reloaded ")
        c = tls_conn(port, ctx)
        try:
            assert peer_serial(c.sock) == pki["renewed"]["serial"]
            upgrade(c)
            assert ask(c, "after") == "after"
        finally:
            c.close()
        # The connection opened before keeps relaying, on the old certificate.
        assert ask(old, "y" * 100000) == "y" * 100000
        assert peer_serial(old.sock) == pki["site"]["serial"]
        # A ticket from before the reload is not accepted: a full handshake.
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="localhost", session=sess) as s:
            assert not s.session_reused
            assert peer_serial(s) == pki["renewed"]["serial"]

        # Renewed again, POST /reload.
        install(pki, "renewed2", cert, key)
        st, _, j = admin_json(aport, "POST", "/reload")
        assert (st, j) == (200, {"reloaded": True}), j
        c = tls_conn(port, ctx)
        try:
            assert peer_serial(c.sock) == pki["renewed2"]["serial"]
        finally:
            c.close()

        # A broken renewal (key from another certificate) is refused and
        # changes nothing.
        shutil.copyfile(pki["site"]["pem"], cert)
        mark = len(g.log())
        st, _, j = admin_json(aport, "POST", "/reload")
        assert st == 422 and j.get("reloaded") is False, (st, j)
        assert any(str(key) in e and "does not match" in e for e in j["errors"]), j
        assert str(key) in wait_log(g, mark, "the running configuration stays")
        c = tls_conn(port, ctx)
        try:
            assert peer_serial(c.sock) == pki["renewed2"]["serial"]
            upgrade(c)
            assert ask(c, "still") == "still"
        finally:
            c.close()
        assert ask(old, "old one") == "old one"
    finally:
        old.close()


# ---- shutdown -------------------------------------------------------------------------------

def test_shutdown_sends_1001_to_wss_clients_and_exits_0(stack, pki):
    echo = stack.echo("tls-shutdown-echo")
    port = free_port()
    cfg = make_config(port, {"p": pool([echo.address])}, heartbeat={"interval_ms": 0})
    cfg["listeners"][0]["tls"] = {"cert": pki["site"]["pem"], "key": pki["site"]["key"]}
    g = stack.gate(cfg)
    conns = [tls_conn(port, client_ctx(pki), strict_eof=True) for _ in range(3)]
    try:
        for i, c in enumerate(conns):
            upgrade(c)
            assert ask(c, f"hi {i}") == f"hi {i}"
        t0 = time.monotonic()
        g.signal(signal.SIGTERM)
        for c in conns:
            f = c.read_frame()
            while f.opcode != OP_CLOSE:
                f = c.read_frame()
            assert f.close_code == 1001, f
            c.send_frame(OP_CLOSE, close_payload(1001))
            # Then TLS close_notify (else SSLEOFError) and TCP EOF.
            assert c.sock.recv(100) == b""
        assert g.wait(5) == 0, g.log()
        assert time.monotonic() - t0 < 2.0
    finally:
        for c in conns:
            c.close()
