"""SPEC §10: the sticky cookie, on the wire.

wsgate sets `wsg=VALUE` on the first response (plain HTTP or the 101) of a
request that carried no valid cookie; a valid one pins the request to its
backend while that backend is up, and is cut out of the request the backend
gets. The pools here use `balance.key: header:x-nothing` with the random
fallback, a key no client sends, so that only the cookie can keep a client
on one backend: without it, 20 requests land on at least two of three.
"""

import re
import subprocess

import pytest

from conftest import WSGATE_BIN, free_port, make_config, pool, wait_for
from opshelpers import admin_json
from wsg_raw import connect, http_exchange, upgrade_request, accept_for

SECRET = "e2e-cookie-secret-0123456789"
COOKIE_RE = re.compile(r"^wsg=([A-Za-z0-9_-]{34}); Path=/; HttpOnly; SameSite=Lax$")


def cookie_pool(addresses, **cookie):
    ck = {"secret": SECRET}
    ck.update(cookie)
    p = pool(addresses, key="header:x-nothing", fallback="random")
    p["balance"]["cookie"] = ck
    return p


def get(port, path="/x", cookie=None):
    """One GET on its own connection: (status, headers, body)."""
    extra = f"Cookie: {cookie}\r\n" if cookie is not None else ""
    req = f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n".encode()
    st, hdrs, body, _ = http_exchange(port, req)
    return st, hdrs, body


def served_by(fakes, path):
    """The fake that got the last request for <path>, and that request's headers."""
    for f in fakes:
        for line, h, _ in reversed(f.requests):
            if line.split(" ")[1] == path:
                return f, h
    raise AssertionError(f"no backend got {path}")


@pytest.fixture
def env(stack):
    fakes = [stack.http(f"h{i}") for i in range(3)]
    port, aport = free_port(), free_port()
    cfg = make_config(port, {"p": cookie_pool([f.address for f in fakes])},
                      admin={"bind": f"127.0.0.1:{aport}"}, heartbeat={"interval_ms": 0})
    gate = stack.gate(cfg)
    return {"port": port, "aport": aport, "fakes": fakes, "gate": gate, "cfg": cfg,
            "stack": stack}


def first_cookie(env, path="/first"):
    st, hdrs, _ = get(env["port"], path)
    assert st == 200
    m = COOKIE_RE.match(hdrs.get("set-cookie", ""))
    assert m, hdrs
    be, _ = served_by(env["fakes"], path)
    return m.group(1), be


def test_first_response_sets_the_cookie_and_it_pins_every_later_request(env):
    value, be = first_cookie(env)
    for i in range(20):
        st, hdrs, _ = get(env["port"], f"/again{i}", cookie=f"a=1; wsg={value}; b=2")
        assert st == 200
        assert "set-cookie" not in hdrs, hdrs  # a valid cookie for this backend: none again
        f, h = served_by(env["fakes"], f"/again{i}")
        assert f is be, (i, f.name, be.name)
        # Cut out of what the backend gets; the other cookies pass.
        assert h.get("cookie") == "a=1; b=2", h
    get(env["port"], "/only", cookie=f"wsg={value}")
    f, h = served_by(env["fakes"], "/only")
    assert f is be and "cookie" not in h, h


def test_without_the_cookie_the_key_spreads_requests(env):
    # The control: the same pool without a cookie sends 20 requests to at
    # least two backends (random fallback; all on one: 3 * (1/3)^20).
    for i in range(20):
        get(env["port"], f"/spread{i}")
    used = {served_by(env["fakes"], f"/spread{i}")[0].name for i in range(20)}
    assert len(used) >= 2, used


def flip(value, i):
    alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return value[:i] + alpha[(alpha.index(value[i]) + 1) % 64] + value[i + 1:]


@pytest.mark.parametrize("bad", ["forged", "garbage", "empty"])
def test_a_forged_cookie_is_ignored_and_replaced(env, bad):
    value, _ = first_cookie(env)
    sent = {"forged": flip(value, 20), "garbage": "x" * 34, "empty": ""}[bad]
    st, hdrs, _ = get(env["port"], "/forged", cookie=f"wsg={sent}")
    assert st == 200
    m = COOKIE_RE.match(hdrs.get("set-cookie", ""))
    assert m, hdrs
    f, h = served_by(env["fakes"], "/forged")
    assert "cookie" not in h
    # The fresh cookie names the backend that served the request.
    for i in range(5):
        get(env["port"], f"/after{i}", cookie=f"wsg={m.group(1)}")
        assert served_by(env["fakes"], f"/after{i}")[0] is f


def test_two_instances_with_one_secret_agree_and_another_secret_does_not(env):
    value, be = first_cookie(env)
    stack = env["stack"]
    port2 = free_port()
    cfg2 = make_config(port2, env["cfg"]["pools"], heartbeat={"interval_ms": 0})
    stack.gate(cfg2)
    for i in range(10):
        st, hdrs, _ = get(port2, f"/two{i}", cookie=f"wsg={value}")
        assert "set-cookie" not in hdrs
        assert served_by(env["fakes"], f"/two{i}")[0] is be
    # Another secret, or the same backends in a pool of another name: not ours.
    for name, ck in (("p", {"secret": "another-secret-0123456789"}), ("q", {})):
        port3 = free_port()
        pools = {name: cookie_pool([f.address for f in env["fakes"]], **ck)}
        stack.gate(make_config(port3, pools, heartbeat={"interval_ms": 0}))
        st, hdrs, _ = get(port3, f"/other-{name}", cookie=f"wsg={value}")
        assert COOKIE_RE.match(hdrs.get("set-cookie", "")), (name, hdrs)
        assert hdrs["set-cookie"] != f"wsg={value}; Path=/; HttpOnly; SameSite=Lax"


def test_drain_moves_cookie_holders_once_and_they_stay(env):
    value, be = first_cookie(env)
    st, _, j = admin_json(env["aport"], "POST", f"/pools/p/backends/{be.address}/drain")
    assert st == 200, j
    st, hdrs, _ = get(env["port"], "/moved", cookie=f"wsg={value}")
    m = COOKIE_RE.match(hdrs.get("set-cookie", ""))
    assert m, hdrs
    new, _ = served_by(env["fakes"], "/moved")
    assert new is not be
    for i in range(10):
        st, hdrs, _ = get(env["port"], f"/stay{i}", cookie=f"wsg={m.group(1)}")
        assert "set-cookie" not in hdrs
        assert served_by(env["fakes"], f"/stay{i}")[0] is new
    # Enabled again, the old cookie is good again (it names an up backend).
    admin_json(env["aport"], "POST", f"/pools/p/backends/{be.address}/enable")
    wait_for(lambda: get(env["port"], "/back", cookie=f"wsg={value}")[1].get("set-cookie")
             is None and served_by(env["fakes"], "/back")[0] is be, what="backend back")


def test_a_removed_backend_is_stale(env):
    value, be = first_cookie(env)
    st, _, j = admin_json(env["aport"], "DELETE", f"/pools/p/backends/{be.address}")
    assert st == 200, j
    st, hdrs, _ = get(env["port"], "/gone", cookie=f"wsg={value}")
    assert COOKIE_RE.match(hdrs.get("set-cookie", "")), hdrs
    assert served_by(env["fakes"], "/gone")[0] is not be


def test_max_age_sets_it_on_every_response(stack):
    fake = stack.http("h")
    port = free_port()
    stack.gate(make_config(port, {"p": cookie_pool([fake.address], max_age_s=600, secure=True,
                                                   same_site="strict", path="/app", name="lb")}))
    st, hdrs, _ = get(port, "/app/a")
    sc = hdrs.get("set-cookie", "")
    m = re.match(r"^lb=([A-Za-z0-9_-]{34}); Path=/app; HttpOnly; SameSite=Strict; Secure; "
                 r"Max-Age=600$", sc)
    assert m, sc
    st, hdrs, _ = get(port, "/app/b", cookie=f"lb={m.group(1)}")
    assert hdrs.get("set-cookie", "").startswith("lb="), hdrs  # refreshed


def ws_upgrade(port, path, cookie=None):
    c = connect(port)
    headers = {"Cookie": cookie} if cookie else None
    req, key = upgrade_request(path, f"127.0.0.1:{port}", headers=headers)
    c.send(req)
    status, hdrs, raw = c.read_http_head()
    assert status == 101, raw
    assert hdrs.get("sec-websocket-accept") == accept_for(key)
    return c, hdrs


def test_the_101_sets_it_and_load_factor_never_moves_a_holder(stack):
    fakes = [stack.fake(f"f{i}") for i in range(2)]
    port = free_port()
    p = cookie_pool([f.address for f in fakes])
    p["balance"]["load_factor"] = 1.0
    stack.gate(make_config(port, {"p": p}, heartbeat={"interval_ms": 0}))
    conns = []
    try:
        c, hdrs = ws_upgrade(port, "/ws?id=first")
        conns.append(c)
        m = COOKIE_RE.match(hdrs.get("set-cookie", ""))
        assert m, hdrs
        home = [f for f in fakes if any(r.query.get("id") == "first" for r in f.records)][0]
        # Six more with the cookie: a load_factor of 1.0 would spread them
        # 4 and 3; the cookie keeps every one home.
        for i in range(6):
            c, hdrs = ws_upgrade(port, f"/ws?id=n{i}", cookie=f"wsg={m.group(1)}; x=y")
            conns.append(c)
            assert "set-cookie" not in hdrs
            r = home.wait_conn(f"n{i}")
            assert r.headers.get("cookie") == "x=y", r.headers
    finally:
        for c in conns:
            c.close()


def test_check_refuses_a_short_or_missing_secret(tmp_path):
    import json
    for secret, want in (("short", "got a string of 5 bytes"),
                         ("env:WSG_E2E_UNSET_SECRET", "the environment variable is not set")):
        cfg = make_config(free_port(), {"p": cookie_pool(["127.0.0.1:1"], secret=secret)})
        f = tmp_path / "c.json"
        f.write_text(json.dumps(cfg))
        r = subprocess.run([WSGATE_BIN, "-t", "-c", str(f)], capture_output=True, text=True,
                           timeout=10)
        assert r.returncode == 1, r
        assert "pools.p.balance.cookie.secret: expected a string of at least 16 bytes" in r.stderr
        assert want in r.stderr, r.stderr


def test_which_decodes_a_cookie(env, tmp_path):
    import json
    value, be = first_cookie(env)
    f = tmp_path / "c.json"
    f.write_text(json.dumps(env["cfg"]))
    r = subprocess.run([WSGATE_BIN, "--which", "--cookie", value, "-c", str(f)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == be.address, r.stdout
    r = subprocess.run([WSGATE_BIN, "--which", "--cookie", flip(value, 30), "-c", str(f)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "names no backend" in r.stderr, r
