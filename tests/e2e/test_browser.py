"""wsgate with a real browser as the WebSocket client: Debian's Chromium,
headless, driven over the DevTools protocol (wsg_browser.py).

The other e2e files use python3-websockets and raw sockets; here the client is
the WebSocket implementation most users' traffic comes from, with its own
framing (masking, fragmenting of large messages), its permessage-deflate offer,
UTF-8 checking and close handshake rules. Covered:
- echo of text and binary messages of 0, 125, 126, 65536 and 1 MiB bytes,
  "whoami", and a client close 4000 "bye" seen as clean by the browser and
  logged by wsgate as close=4000 closed_by=client;
- the permessage-deflate offer reaching the backend unchanged, and the
  browser's `extensions` being what the backend answered: "" with the echo
  backend (which declines), the negotiated extension with a websockets
  backend that accepts it (compressed frames then pass through);
- stickiness: connections with the same ?user= land on one backend, the one
  `wsgate --which` names;
- wss through a TLS listener (the browser trusts the test certificate through
  its SPKI hash only), with x-forwarded-proto https at the backend;
- SIGTERM: the browser's close event has code 1001, clean.

One Chromium for the module (started once, about 0.5 s); each test starts
its own wsgate and backends. Skipped only when /usr/bin/chromium is missing.
"""

import base64
import hashlib
import json
import os
import re
import signal
import subprocess

import pytest

from conftest import WSGATE_BIN, free_port, make_config, pool, wait_for
from wsg_browser import CHROMIUM, Browser

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                                reason=f"{CHROMIUM} is not installed (apt-get install chromium)")

SIZES = (0, 125, 126, 65536, 1 << 20)
MAX_FRAME = 2 << 20  # 1 MiB messages pass even if the browser sends one frame
# Headers wsgate adds or sets, and those that differ per connection anyway.
PROXY_HEADERS = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip"}
PER_CONNECTION = {"host", "sec-websocket-key"}


# ---- fixtures ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and the base64 SHA-256 of its
    SubjectPublicKeyInfo, the form --ignore-certificate-errors-spki-list takes."""
    d = tmp_path_factory.mktemp("browser-cert")
    key, pem = d / "site.key", d / "site.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(pem), "-days", "2", "-subj", "/CN=wsgate-browser-test", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True,
                   timeout=30, stdin=subprocess.DEVNULL)
    spki = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"],
                          check=True, capture_output=True, timeout=30,
                          stdin=subprocess.DEVNULL).stdout
    return {"pem": str(pem), "key": str(key),
            "spki": base64.b64encode(hashlib.sha256(spki).digest()).decode()}


@pytest.fixture(scope="module")
def browser(cert, tmp_path_factory):
    b = Browser(tmp_path_factory.mktemp("chromium") / "chromium.log",
                extra_flags=[f"--ignore-certificate-errors-spki-list={cert['spki']}"])
    yield b
    b.close()


@pytest.fixture
def page(browser):
    """The browser, checked alive before the test; its log is shown if a
    test fails because it died."""
    assert browser.p.poll() is None, f"chromium died:\n{browser.log_tail()}"
    yield browser
    # Connections a failed test left open must not leak into the next one.
    browser.evaluate("wsg.closeAll(); return true;")


def gate_for(stack, pools, **kw):
    port = free_port()
    cfg = make_config(port, pools, heartbeat={"interval_ms": 0},
                      limits={"max_frame_bytes": MAX_FRAME}, **kw)
    return stack.gate(cfg)


def access_lines(gate):
    """The access lines of relayed connections (status 101), as dicts; the
    readiness probe of conftest's Gate also leaves one, with status 0."""
    out = []
    for ln in gate.log().splitlines():
        if " access " in ln:
            a = dict(re.findall(r"(\w+)=(\S+)", ln.split(" access ", 1)[1]))
            if a.get("status") == "101":
                out.append(a | {"line": ln})
    return out


def wait_access(gate, n=1, timeout=5.0):
    return wait_for(lambda: (lambda a: a if len(a) >= n else None)(access_lines(gate)),
                    timeout, what=f"{n} access line(s) in {gate.log_path}")


def js(v):
    return json.dumps(v)


# ---- 1. echo and client close -----------------------------------------------------

def test_browser_echoes_every_size_and_closes_4000(stack, page):
    echo = stack.echo("browser-echo")
    g = gate_for(stack, {"p": pool([echo.address])})
    r = page.evaluate(f"""
        const c = await wsg.open({js(f"ws://127.0.0.1:{g.port}/?user=alice")});
        const who = await wsg.ask(c, "whoami");
        const payloads = [];
        for (const n of {js(SIZES)}) payloads.push(wsg.text(n), wsg.bytes(n));
        const echoes = await wsg.echo(c, payloads, 15000);
        c.ws.close(4000, "bye");
        return {{who, echoes, close: await wsg.closed(c)}};
    """, timeout=30)
    assert r["who"] == "browser-echo"
    want = [(kind, n) for n in SIZES for kind in ("text", "binary")]
    assert [(e["sent_kind"], e["sent_size"]) for e in r["echoes"]] == want
    for e in r["echoes"]:
        assert (e["kind"], e["size"], e["same"]) == (e["sent_kind"], e["sent_size"], True), e
    # The echo backend returns the client's close frame as it came.
    assert r["close"]["code"] in (1000, 4000), r["close"]
    assert r["close"]["wasClean"] is True, r["close"]

    (a,) = wait_access(g)
    assert a["close"] == "4000" and a["closed_by"] == "client", a["line"]
    # Every payload byte went through (frame headers come on top).
    total = len("whoami") + 2 * sum(SIZES)
    assert int(a["bytes_in"]) > total and int(a["bytes_out"]) > total, a["line"]


# ---- 2. permessage-deflate passes through -------------------------------------------

def test_browser_deflate_offer_and_answer_pass_through(stack, page):
    echo = stack.echo("browser-echo")
    answers = []

    async def deflate_echo(ws, path):
        answers.append(ws.response_headers.get("Sec-WebSocket-Extensions"))
        async for m in ws:
            await ws.send(m)
    lib = stack.wslib(deflate_echo, compression="deflate", max_size=None, ping_interval=None)
    g = gate_for(stack, {"echo": pool([echo.address]), "lib": pool([lib.address])},
                 routes=[{"path_prefix": "/lib", "pool": "lib"},
                         {"path_prefix": "/", "pool": "echo"}])
    r = page.evaluate(f"""
        const headers = async url => {{
            const c = await wsg.open(url);
            const h = JSON.parse(await wsg.ask(c, "headers"));
            const ext = c.ws.extensions;
            c.ws.close(1000);
            await wsg.closed(c);
            return {{h, ext}};
        }};
        const direct = await headers({js(f"ws://{echo.address}/")});
        const proxied = await headers({js(f"ws://127.0.0.1:{g.port}/")});
        const c = await wsg.open({js(f"ws://127.0.0.1:{g.port}/lib")});
        const lib = {{ext: c.ws.extensions,
                     echoes: await wsg.echo(c, [wsg.text(65536), wsg.bytes(65536)])}};
        c.ws.close(1000);
        lib.close = await wsg.closed(c);
        return {{direct, proxied, lib}};
    """)
    direct, proxied = r["direct"]["h"], r["proxied"]["h"]
    offer = direct.get("sec-websocket-extensions", "")
    assert "permessage-deflate" in offer, direct
    assert proxied.get("sec-websocket-extensions") == offer, proxied
    # Everything else the browser sent arrives unchanged too.
    same = lambda h: {k: v for k, v in h.items() if k not in PROXY_HEADERS | PER_CONNECTION}
    assert same(proxied) == same(direct)
    # The echo backend declines the extension, and so does the browser's view.
    assert r["direct"]["ext"] == "" and r["proxied"]["ext"] == "", r

    # A backend that accepts it: the browser sees exactly its answer, and the
    # compressed frames (RSV1) come through both ways.
    assert len(answers) == 1 and answers[0] and "permessage-deflate" in answers[0], answers
    assert r["lib"]["ext"] == answers[0], r["lib"]
    assert all(e["same"] and e["size"] == 65536 for e in r["lib"]["echoes"]), r["lib"]
    assert r["lib"]["close"]["code"] == 1000 and r["lib"]["close"]["wasClean"], r["lib"]
    lib_line = wait_for(lambda: [a for a in access_lines(g) if a.get("pool") == "lib"],
                        5, what="the access line of the /lib connection")[0]
    assert int(lib_line["bytes_in"]) < 65536, f"not compressed: {lib_line['line']}"


# ---- 3. stickiness ------------------------------------------------------------------

def test_browser_same_user_lands_on_same_backend(stack, page):
    e1, e2 = stack.echo("sticky-1"), stack.echo("sticky-2")
    g = gate_for(stack, {"p": pool([e1.address, e2.address], key="query:user")})
    by_address = {e1.address: e1.name, e2.address: e2.name}

    def backend_of(u):
        out = subprocess.run([WSGATE_BIN, "--which", u, "-c", g.cfg_path], capture_output=True,
                             text=True, timeout=20).stdout
        want = [name for addr, name in by_address.items() if addr in out]
        assert len(want) == 1, out
        return want[0]

    # Random ports move the ring, so users are chosen by where --which says
    # they hash: three on each backend, whatever the ports are this run.
    placed = {u: backend_of(u) for u in (f"user{i}" for i in range(40))}
    users = ([u for u in placed if placed[u] == e1.name][:3] +
             [u for u in placed if placed[u] == e2.name][:3])
    assert len(users) == 6, f"40 users did not spread over two backends: {placed}"
    per_user = 3
    r = page.evaluate(f"""
        const users = {js(users)}, out = {{}}, conns = [];
        // All connections stay open together, opened in an interleaved order.
        for (let i = 0; i < {per_user}; i++)
            for (const u of users) {{
                const c = await wsg.open({js(f"ws://127.0.0.1:{g.port}/?user=")} + u);
                conns.push(c);
                (out[u] = out[u] || []).push(await wsg.ask(c, "whoami"));
            }}
        for (const c of conns) c.ws.close(1000);
        for (const c of conns) await wsg.closed(c);
        return out;
    """)
    for u in users:
        assert r[u] == [placed[u]] * per_user, (u, r[u], placed[u])
    assert len({names[0] for names in r.values()}) == 2, r


# ---- 4. wss -------------------------------------------------------------------------

def test_browser_wss_through_tls_listener(stack, page, cert):
    echo = stack.echo("tls-echo")
    port = free_port()
    cfg = make_config(port, {"p": pool([echo.address])}, heartbeat={"interval_ms": 0},
                      limits={"max_frame_bytes": MAX_FRAME})
    cfg["listeners"][0]["tls"] = {"cert": cert["pem"], "key": cert["key"]}
    g = stack.gate(cfg)
    r = page.evaluate(f"""
        const c = await wsg.open({js(f"wss://127.0.0.1:{port}/?user=alice")});
        const r = {{who: await wsg.ask(c, "whoami"),
                   headers: JSON.parse(await wsg.ask(c, "headers")),
                   echoes: await wsg.echo(c, [wsg.text(70000), wsg.bytes(1 << 20)])}};
        c.ws.close(1000);
        r.close = await wsg.closed(c);
        return r;
    """)
    assert r["who"] == "tls-echo"
    assert r["headers"].get("x-forwarded-proto") == "https", r["headers"]
    assert [(e["size"], e["same"]) for e in r["echoes"]] == [(70000, True), (1 << 20, True)]
    assert r["close"] == {"code": 1000, "reason": "", "wasClean": True}, r["close"]
    (a,) = wait_access(g)
    assert a["close"] == "1000" and a["closed_by"] == "client", a["line"]


# ---- 5. graceful shutdown -----------------------------------------------------------

def test_browser_sees_1001_on_sigterm(stack, page):
    echo = stack.echo("sd-echo")
    g = gate_for(stack, {"p": pool([echo.address])}, timeouts={"drain_ms": 3000})
    who = page.evaluate(f"""
        window.sd = [];
        for (const u of ["alice", "bob"]) {{
            const c = await wsg.open({js(f"ws://127.0.0.1:{g.port}/?user=")} + u);
            window.sd.push(c);
            await wsg.ask(c, "whoami");
        }}
        return window.sd.map(c => c.ws.readyState);
    """)
    assert who == [1, 1]
    g.signal(signal.SIGTERM)
    closes = page.evaluate("""
        const out = [];
        for (const c of window.sd) out.push(await wsg.closed(c, 8000));
        window.sd = [];
        return out;
    """)
    for c in closes:
        assert c["code"] == 1001, closes
        assert c["reason"] in ("", "going away"), closes
        assert c["wasClean"] is True, closes
    assert g.wait(3000 / 1000 + 5) == 0, g.log()
    lines = wait_access(g, 2)
    assert all(a["close"] == "1001" and a["closed_by"] == "wsgate" for a in lines), \
        [a["line"] for a in lines]
