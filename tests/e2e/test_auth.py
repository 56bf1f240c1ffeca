"""SPEC §11 "Tokens" and "Expiry": routes[].auth verifies a JWT before any
byte reaches a backend, from each configured source, answers the
subprotocol form as a browser expects, strips the token from what is
forwarded, sets claims_to_headers (client copies dropped), balances on
jwt:CLAIM, closes on expiry, and counts and logs every refusal without the
token. Keys are made at test time by the openssl CLI (wsg_jwt.py).
"""

import os
import subprocess
import time
import uuid

import pytest

from conftest import WSGATE_BIN, free_port, make_config, pool, wait_for
from opshelpers import scrape
from wsg_jwt import Keys, claims
from wsg_raw import OP_CLOSE, OP_TEXT, connect, upgrade_request
from wsg_browser import CHROMIUM, Browser


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("jwt-keys"))


@pytest.fixture(scope="module")
def env(mstack, keys):
    fake = mstack.fake("auth-fake")
    s1, s2 = mstack.fake("auth-s1"), mstack.fake("auth-s2")
    http = mstack.http("auth-http")
    port, aport = free_port(), free_port()
    auth = {
        "hs": {"keys": str(keys.secret_path), "issuer": "https://id.test", "audience": "chat",
               "leeway_ms": 1000,
               "from": ["header", "subprotocol", "cookie:token", "query:access_token"],
               "claims_to_headers": {"sub": "X-User-Id", "role": "X-Role"},
               "close_on_expiry": True},
        "rs": {"keys": str(keys.rsa_pub)},
    }
    routes = [
        {"path_prefix": "/ws", "pool": "ws", "auth": "hs"},
        {"path_prefix": "/rs", "pool": "ws", "auth": "rs"},
        {"path_prefix": "/strict", "pool": "ws", "auth": "hs",
         "origins": ["https://chat.example.com"]},
        {"path_prefix": "/sticky", "pool": "sticky", "auth": "hs"},
        {"path_prefix": "/api", "pool": "web", "auth": "hs"},
        {"path_prefix": "/", "pool": "ws"},
    ]
    pools = {"ws": pool([fake.address]), "web": pool([http.address]),
             "sticky": pool([s1.address, s2.address], key="jwt:sub", fallback="random")}
    gate = mstack.gate(make_config(port, pools, routes=routes, auth=auth,
                                   admin={"bind": f"127.0.0.1:{aport}"},
                                   heartbeat={"interval_ms": 0}))
    return {"port": port, "aport": aport, "fake": fake, "s1": s1, "s2": s2, "http": http,
            "gate": gate, "keys": keys}


def tag():
    return uuid.uuid4().hex[:12]


def upgrade(env, path, headers=(), keep=False):
    """(status, headers, conn or None): the 101's connection is kept open
    when <keep>, else closed."""
    req, _ = upgrade_request(path, "chat.example.com", headers=list(headers))
    c = connect(env["port"])
    c.send(req)
    status, hdrs, _ = c.read_http_head()
    if keep and status == 101:
        return status, hdrs, c
    c.close()
    return status, hdrs, None


def token(env, **kw):
    return env["keys"].hs256(claims(**kw))


# ---- refusals ----------------------------------------------------------------------

def test_no_token_is_401_with_bearer_challenge_and_no_backend_hears_of_it(env):
    t = tag()
    status, hdrs, _ = upgrade(env, f"/ws?id={t}")
    assert status == 401
    assert hdrs["www-authenticate"] == "Bearer"
    time.sleep(0.2)  # the check is that nothing arrives: give it the chance
    assert all(r.query.get("id") != t for r in env["fake"].records)


@pytest.mark.parametrize("make,status", [
    (lambda k: k.hs256(claims(ttl_s=-60)), 401),                 # expired past the leeway
    (lambda k: k.hs256(claims(nbf=int(time.time()) + 600)), 401),  # not yet valid
    (lambda k: k.hs256(claims(), secret=b"another secret of at least 32 bytes!!"), 401),
    (lambda k: Keys.unsigned(claims()), 401),                    # alg none
    (lambda k: k.hs256(claims())[:-3], 401),                     # truncated signature
    (lambda k: k.rs256(claims()), 401),                          # RS token, HMAC key
    (lambda k: k.hs256(claims(aud="other")), 403),
    (lambda k: k.hs256(claims(iss="https://evil.test")), 403),
], ids=["expired", "nbf", "other-key", "alg-none", "truncated", "rs-on-hs", "aud", "iss"])
def test_bad_tokens_are_refused(env, make, status):
    t = tag()
    st, hdrs, _ = upgrade(env, f"/ws?id={t}", [("Authorization", "Bearer " + make(env["keys"]))])
    assert st == status
    if status == 401:
        assert hdrs["www-authenticate"] == 'Bearer error="invalid_token"'
    assert all(r.query.get("id") != t for r in env["fake"].records)


def test_two_different_tokens_are_401(env):
    a, b = token(env, sub="a"), token(env, sub="b")
    st, _, _ = upgrade(env, f"/ws?access_token={b}", [("Authorization", "Bearer " + a)])
    assert st == 401


def test_the_same_token_twice_passes_and_is_stripped_from_both(env):
    t, tok = tag(), token(env)
    st, _, c = upgrade(env, f"/ws?id={t}&access_token={tok}",
                       [("Authorization", "Bearer " + tok)], keep=True)
    assert st == 101
    rec = env["fake"].wait_conn(t)
    assert "authorization" not in rec.headers and "access_token" not in rec.query
    c.close()


# ---- each source ---------------------------------------------------------------------

def check_clean(rec, tok):
    assert tok not in rec.request_line
    for v in rec.headers.values():
        assert tok not in v


def test_header_source(env):
    t, tok = tag(), token(env)
    st, _, c = upgrade(env, f"/ws?id={t}", [("Authorization", "Bearer " + tok)], keep=True)
    assert st == 101
    rec = env["fake"].wait_conn(t)
    check_clean(rec, tok)
    assert "authorization" not in rec.headers
    assert rec.headers["x-user-id"] == "alice"
    c.close()


def test_subprotocol_source_is_answered_bearer_and_forwards_the_others(env):
    t, tok = tag(), token(env)
    st, hdrs, c = upgrade(env, f"/ws?id={t}&proto=1",
                          [("Sec-WebSocket-Protocol", f"bearer, {tok}, chat.v2")], keep=True)
    assert st == 101
    # The client offered "bearer" and the token; wsgate consumed both, and
    # answers with the one protocol name it offered that is not the token.
    assert hdrs["sec-websocket-protocol"] == "bearer"
    rec = env["fake"].wait_conn(t)
    check_clean(rec, tok)
    assert rec.headers["sec-websocket-protocol"] == "chat.v2"
    c.send_frame(OP_TEXT, b"hello")
    assert c.read_message() == (OP_TEXT, b"hello")
    c.close()


def test_subprotocol_pair_alone_leaves_the_backend_no_protocol_header(env):
    t, tok = tag(), token(env)
    st, hdrs, c = upgrade(env, f"/ws?id={t}", [("Sec-WebSocket-Protocol", f"bearer, {tok}")],
                          keep=True)
    assert st == 101 and hdrs["sec-websocket-protocol"] == "bearer"
    assert "sec-websocket-protocol" not in env["fake"].wait_conn(t).headers
    c.close()


def test_cookie_source_keeps_the_other_cookies(env):
    t, tok = tag(), token(env)
    st, _, c = upgrade(env, f"/ws?id={t}", [("Cookie", f"a=1; token={tok}; b=2")], keep=True)
    assert st == 101
    rec = env["fake"].wait_conn(t)
    check_clean(rec, tok)
    assert rec.headers["cookie"] == "a=1; b=2"
    c.close()


def test_query_source_keeps_the_other_parameters(env):
    t, tok = tag(), token(env)
    st, _, c = upgrade(env, f"/ws?access_token={tok}&id={t}&x=1", keep=True)
    assert st == 101
    rec = env["fake"].wait_conn(t)
    check_clean(rec, tok)
    assert rec.request_line.split(" ")[1] == f"/ws?id={t}&x=1"
    c.close()


def test_rs256_token_from_an_openssl_key(env):
    t = tag()
    tok = env["keys"].rs256(claims())
    st, _, c = upgrade(env, f"/rs?id={t}", [("Authorization", "Bearer " + tok)], keep=True)
    assert st == 101
    check_clean(env["fake"].wait_conn(t), tok)
    c.close()


# ---- claims downstream ------------------------------------------------------------------

def test_claim_headers_reach_the_backend_and_client_copies_do_not(env):
    t, tok = tag(), token(env, sub="bob", role="admin")
    st, _, c = upgrade(env, f"/ws?id={t}", [("Authorization", "Bearer " + tok),
                                           ("X-User-Id", "mallory"), ("x-role", "root")],
                       keep=True)
    assert st == 101
    rec = env["fake"].wait_conn(t)
    assert rec.headers["x-user-id"] == "bob" and rec.headers["x-role"] == "admin"
    c.close()


def test_an_absent_claim_sets_no_header_and_still_drops_the_copy(env):
    t, tok = tag(), token(env, sub="carol")  # no "role" claim
    st, _, c = upgrade(env, f"/ws?id={t}", [("Authorization", "Bearer " + tok),
                                           ("X-Role", "root")], keep=True)
    assert st == 101
    assert "x-role" not in env["fake"].wait_conn(t).headers
    c.close()


def which(env, key):
    r = subprocess.run([WSGATE_BIN, "--which", key, "-p", "sticky", "-c",
                        str(env["gate"].cfg_path)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_jwt_sub_is_the_sticky_key(env):
    by_addr = {env["s1"].address: env["s1"], env["s2"].address: env["s2"]}
    for sub in ["u1", "u2", "u3", "u4", "u5", "u6"]:
        want = by_addr[which(env, sub)]
        for _ in range(2):
            t = tag()
            st, _, c = upgrade(env, f"/sticky?id={t}",
                               [("Authorization", "Bearer " + token(env, sub=sub))], keep=True)
            assert st == 101
            want.wait_conn(t)  # the backend --which names for this sub, every time
            c.close()


# ---- Origin and tokens together -------------------------------------------------------------

def test_a_verified_token_vouches_for_a_client_without_origin(env):
    assert upgrade(env, "/strict", [("Authorization", "Bearer " + token(env))])[0] == 101
    assert upgrade(env, "/strict")[0] == 401


def test_a_foreign_origin_is_refused_even_with_a_token(env):
    st = upgrade(env, "/strict", [("Origin", "https://evil.example.com"),
                                  ("Authorization", "Bearer " + token(env))])[0]
    assert st == 403


# ---- plain HTTP -------------------------------------------------------------------------

def http_get(env, path, headers=()):
    c = connect(env["port"])
    try:
        lines = [f"GET {path} HTTP/1.1", "Host: x", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers]
        c.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        return c.read_response()
    finally:
        c.close()


def test_plain_http_needs_the_token_too(env):
    before = len(env["http"].requests)
    st, hdrs, _, _ = http_get(env, "/api/x")
    assert st == 401 and hdrs["www-authenticate"] == "Bearer"
    tok = token(env, sub="dave")
    st, _, body, _ = http_get(env, "/api/y", [("Authorization", "Bearer " + tok)])
    assert st == 200 and body == b"/api/y"
    reqs = env["http"].wait_requests(before + 1)
    line, headers, _ = reqs[-1]
    assert line.startswith("GET /api/y ")
    assert "authorization" not in headers and headers["x-user-id"] == "dave"
    assert len(reqs) == before + 1  # the refused one never reached it


def test_plain_http_query_token_is_stripped(env):
    before = len(env["http"].requests)
    tok = token(env)
    st, _, _, _ = http_get(env, f"/api/q?access_token={tok}&k=v")
    assert st == 200
    line = env["http"].wait_requests(before + 1)[-1][0]
    assert line.split(" ")[1] == "/api/q?k=v"


# ---- expiry -------------------------------------------------------------------------

def test_an_expiring_token_gets_1008_within_leeway_plus_one_second(env):
    t = tag()
    exp = int(time.time()) + 2
    tok = env["keys"].hs256(claims(exp=exp))
    st, _, c = upgrade(env, f"/ws?id={t}", [("Authorization", "Bearer " + tok)], keep=True)
    assert st == 101
    rec = env["fake"].wait_conn(t)
    c.settimeout(10)
    f = c.read_frame()
    at = time.time()
    assert f.opcode == OP_CLOSE and f.close_code == 1008 and f.close_reason == "token expired"
    leeway = 1.0
    assert exp + leeway - 0.05 <= at <= exp + leeway + 1.0, (exp, at)
    assert rec.wait_close().close_code == 1001
    c.close()


# ---- counted, logged, never the token -----------------------------------------------------

def test_refusals_are_counted_and_logged_without_the_token(env):
    tok = token(env, ttl_s=-60)
    assert upgrade(env, "/ws", [("Authorization", "Bearer " + tok)])[0] == 401
    m = scrape(env["aport"])
    assert m.value("wsgate_refused_total", reason="expired_token") >= 1
    assert m.value("wsgate_refused_total", reason="no_token") >= 1
    assert m.value("wsgate_refused_total", reason="claims") >= 1
    assert m.value("wsgate_refused_total", reason="token_expired") is not None
    wait_for(lambda: 'reason="token expired"' in env["gate"].log(), 5,
             what="the refusal in the access line")
    log = env["gate"].log()
    assert tok not in log and tok.split(".")[2] not in log


def test_check_mode_reads_the_key_files(tmp_path, env):
    cfg = make_config(free_port(), {"p": pool([env["fake"].address])},
                      routes=[{"path_prefix": "/", "pool": "p", "auth": "a"}],
                      auth={"a": {"keys": str(tmp_path / "missing")}})
    f = tmp_path / "w.json"
    import json
    f.write_text(json.dumps(cfg))
    r = subprocess.run([WSGATE_BIN, "-t", "-c", str(f)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1 and "auth.a.keys" in r.stderr and "cannot open" in r.stderr
    (tmp_path / "short").write_text("too short\n")
    cfg["auth"]["a"]["keys"] = str(tmp_path / "short")
    f.write_text(json.dumps(cfg))
    r = subprocess.run([WSGATE_BIN, "-t", "-c", str(f)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1 and "at least 32" in r.stderr
    cfg["routes"][0]["auth"] = "nope"
    f.write_text(json.dumps(cfg))
    r = subprocess.run([WSGATE_BIN, "-t", "-c", str(f)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1 and "routes[0].auth" in r.stderr


# ---- Chromium ---------------------------------------------------------------------------

@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"{CHROMIUM} is not installed")
def test_chromium_connects_with_a_bearer_subprotocol_and_the_backend_sees_no_token(
        env, tmp_path):
    b = Browser(tmp_path / "chromium.log")
    try:
        t, tok = tag(), token(env, sub="browser")
        url = f"ws://127.0.0.1:{env['port']}/ws?id={t}"
        got = b.evaluate(f"""
            const ws = new WebSocket({url!r}, ["bearer", {tok!r}]);
            const r = await new Promise((resolve, reject) => {{
              const timer = setTimeout(() => reject(new Error("no open in 5 s")), 5000);
              ws.onopen = () => {{ ws.send("hi"); }};
              ws.onmessage = e => {{ clearTimeout(timer); resolve({{proto: ws.protocol, echo: e.data}}); }};
              ws.onclose = e => {{ clearTimeout(timer); reject(new Error("closed " + e.code)); }};
            }});
            ws.close();
            return r;
        """)
        assert got == {"proto": "bearer", "echo": "hi"}
        rec = env["fake"].wait_conn(t)
        check_clean(rec, tok)
        assert "sec-websocket-protocol" not in rec.headers
        assert rec.headers["x-user-id"] == "browser"
    finally:
        b.close()


def test_plain_http_body_and_each_kept_alive_request_are_checked(env):
    before = len(env["http"].requests)
    tok = token(env, sub="erin")
    c = connect(env["port"])
    try:
        c.send(("POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                f"Authorization: Bearer {tok}\r\n\r\nhello").encode())
        st, _, body, _ = c.read_response()
        assert st == 200 and body == b"/api/upload"
        line, headers, got = env["http"].wait_requests(before + 1)[-1]
        assert line.startswith("POST /api/upload ") and got == b"hello"
        assert headers["x-user-id"] == "erin" and "authorization" not in headers
        # The next request on the connection needs its own token.
        c.send(b"GET /api/again HTTP/1.1\r\nHost: x\r\n\r\n")
        st, hdrs, _, _ = c.read_response()
        assert st == 401 and hdrs["www-authenticate"] == "Bearer"
    finally:
        c.close()
    assert len(env["http"].requests) == before + 1


def test_keys_are_read_again_on_reload_and_a_bad_file_keeps_the_running_ones(stack, tmp_path):
    import signal
    keys = Keys(tmp_path / "k")
    fake = stack.fake("reload-fake")
    port = free_port()
    g = stack.gate(make_config(port, {"p": pool([fake.address])},
                               routes=[{"path_prefix": "/", "pool": "p", "auth": "a"}],
                               auth={"a": {"keys": str(keys.secret_path)}},
                               heartbeat={"interval_ms": 0}))
    env = {"port": port}
    old = keys.hs256(claims())
    assert upgrade(env, "/", [("Authorization", "Bearer " + old)])[0] == 101
    # A key file that does not load: the reload fails, the old key stays.
    keys.secret_path.write_text("short\n")
    g.signal(signal.SIGHUP)
    wait_for(lambda: "reload of" in g.log() and "auth.a.keys" in g.log(), 5,
             what="the failed reload")
    assert upgrade(env, "/", [("Authorization", "Bearer " + old)])[0] == 101
    # A rotated secret: tokens signed with it pass, the old ones no longer do.
    new_secret = b"n" * 48
    keys.secret_path.write_bytes(new_secret + b"\n")
    g.signal(signal.SIGHUP)
    new = keys.hs256(claims(), secret=new_secret)
    wait_for(lambda: upgrade(env, "/", [("Authorization", "Bearer " + new)])[0] == 101, 5,
             what="the new key")
    assert upgrade(env, "/", [("Authorization", "Bearer " + old)])[0] == 401
