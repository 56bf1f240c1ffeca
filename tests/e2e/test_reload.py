"""SPEC §8 reload (SIGHUP and POST /reload): the new file is checked first;
an invalid one changes nothing and is reported; a valid one routes new
connections per the new file while live connections keep relaying on their
backend; backends that stay keep their health state; the admin endpoint
follows its own section (token, address).
"""

import json
import re
import signal

import pytest

from conftest import dead_port, free_port, make_config, pool, wait_for
from opshelpers import Client, admin, admin_json, backend, landing, status, wait_state

TOKEN = "reload-token"


def write(gate, cfg):
    gate.cfg = cfg
    gate.cfg_path.write_text(json.dumps(cfg, indent=2))


def base(port, aport, pools, **kw):
    return make_config(port, pools, admin={"bind": f"127.0.0.1:{aport}", "token": TOKEN},
                       heartbeat={"interval_ms": 0}, **kw)


def reload_admin(aport, token=TOKEN):
    return admin_json(aport, "POST", "/reload", token)


def reload_sighup(gate, aport):
    n = gate.log().count("reloaded ")
    gate.signal(signal.SIGHUP)
    wait_for(lambda: gate.log().count("reloaded ") > n, 5, what="the SIGHUP reload")


@pytest.mark.parametrize("how", ["admin", "sighup"])
def test_reload_under_a_live_connection_keeps_it_and_routes_new_ones_per_the_new_file(
        stack, how):
    a, b = stack.echo(f"old-{how}"), stack.echo(f"new-{how}")
    port, aport = free_port(), free_port()
    g = stack.gate(base(port, aport, {"p": pool([a.address])}, workers=2))
    live = [Client(port, f"live-{i}") for i in range(4)]
    try:
        assert {c.name for c in live} == {a.name}
        write(g, base(port, aport, {"p": pool([b.address])}, workers=2))
        if how == "admin":
            st, _, j = reload_admin(aport)
            assert (st, j) == (200, {"reloaded": True})
        else:
            reload_sighup(g, aport)
        # Live connections keep relaying on their backend, untouched.
        for c in live:
            for _ in range(3):
                assert c.ask() == a.name
        # New connections follow the new file.
        assert set(landing(port, [f"n{i}" for i in range(6)]).values()) == {b.name}
        assert [x["address"] for x in status(aport, TOKEN)["pools"]["p"]["backends"]] == \
            [b.address]
    finally:
        for c in live:
            c.close()
    # The old connections ended normally, on the old backend.
    def old_lines():
        ls = [ln for ln in g.log().splitlines() if " access " in ln and a.address in ln]
        return ls if len(ls) >= 4 else None
    lines = wait_for(old_lines, 5, what="four access lines for the old backend")
    assert len(lines) == 4 and all(" close=1000" in ln for ln in lines), lines


def test_invalid_reload_keeps_the_running_configuration_and_reports_every_error(stack):
    a, b = stack.echo("keep-a"), stack.echo("keep-b")
    port, aport = free_port(), free_port()
    g = stack.gate(base(port, aport, {"p": pool([a.address])}))
    live = Client(port, "live")
    try:
        bad = base(port, aport, {"p": pool([b.address, "10.0.0.1"])})  # no port
        bad["pools"]["p"]["bogus_key"] = 1
        write(g, bad)
        st, _, j = reload_admin(aport)
        assert st in (400, 422), (st, j)
        assert j["reloaded"] is False
        errs = "\n".join(j["errors"])
        assert "pools.p.backends[1].address" in errs and "bogus_key" in errs, errs
        assert live.ask() == a.name
        assert set(landing(port, ["x", "y", "z"]).values()) == {a.name}
        assert [x["address"] for x in status(aport, TOKEN)["pools"]["p"]["backends"]] == \
            [a.address]
        assert re.search(r"reload.*fail", g.log()), g.log()

        # A syntax error names line and column; SIGHUP changes nothing either.
        g.cfg_path.write_text('{\n  "workers": 1,\n  "listeners": [ }\n}\n')
        st, _, j = reload_admin(aport)
        assert st in (400, 422) and j["reloaded"] is False
        assert re.search(r"(line\s*3|:3:)", "\n".join(j["errors"])), j
        g.signal(signal.SIGHUP)
        wait_for(lambda: len(re.findall(r"reload.*fail", g.log())) >= 3, 5,
                 what="the failed SIGHUP reload to be logged")
        assert live.ask() == a.name
        assert set(landing(port, ["x", "y"]).values()) == {a.name}
    finally:
        live.close()


def test_backends_that_stay_keep_their_health_state(stack):
    a, b = stack.echo("stay-a"), stack.echo("stay-b")
    dead = f"127.0.0.1:{dead_port()}"
    health = {"type": "tcp", "interval_ms": 150, "timeout_ms": 300, "rise": 1, "fall": 1}
    port, aport = free_port(), free_port()
    g = stack.gate(base(port, aport, {"p": pool([a.address, dead], health=health)}))
    wait_state(aport, "p", dead, "down", 3, TOKEN)
    before = backend(aport, "p", dead, TOKEN)
    st, _, j = admin_json(aport, "POST", f"/pools/p/backends/{a.address}/drain", TOKEN)
    assert st == 200

    write(g, base(port, aport, {"p": pool([a.address, dead, b.address], health=health)}))
    st, j = reload_admin(aport)[::2]
    assert st == 200, j
    after = {x["address"]: x for x in status(aport, TOKEN)["pools"]["p"]["backends"]}
    assert after[dead]["state"] == "down"
    assert after[dead]["failures"] >= before["failures"]
    assert after[a.address]["state"] == "draining"  # an admin drain survives a reload
    wait_state(aport, "p", b.address, "up", 3, TOKEN)
    # With a drained and b new, new connections go to b.
    assert set(landing(port, ["k1", "k2", "k3"]).values()) == {b.name}


def test_reload_adds_a_pool_and_a_route(stack):
    a, b = stack.echo("route-a"), stack.echo("route-b")
    port, aport = free_port(), free_port()
    g = stack.gate(base(port, aport, {"p": pool([a.address])}))
    write(g, base(port, aport, {"p": pool([a.address]), "q": pool([b.address])},
                  routes=[{"path_prefix": "/q", "pool": "q"}, {"path_prefix": "/", "pool": "p"}]))
    st, _, j = reload_admin(aport)
    assert st == 200, j
    c = Client.__new__(Client)
    from wsg_raw import ws_connect
    c.conn, _ = ws_connect(port, "/q?user=u")
    assert c.ask() == b.name
    c.close()
    assert landing(port, ["u"]) == {"u": a.name}
    assert set(status(aport, TOKEN)["pools"]) == {"p", "q"}


def test_reload_applies_a_new_admin_token_and_answers_the_reload_itself(stack):
    a = stack.echo("tok")
    port, aport = free_port(), free_port()
    g = stack.gate(base(port, aport, {"p": pool([a.address])}))
    cfg = base(port, aport, {"p": pool([a.address])})
    cfg["admin"]["token"] = "rotated"
    write(g, cfg)
    st, _, j = reload_admin(aport)  # answered even though the endpoint restarts
    assert (st, j) == (200, {"reloaded": True})

    def rotated():
        try:
            return admin(aport, "GET", "/status", "rotated")[0] == 200
        except OSError:
            return False
    wait_for(rotated, 5, what="the new token to be accepted")
    assert admin(aport, "GET", "/status", TOKEN)[0] == 401


def test_reload_moves_the_admin_endpoint(stack):
    a = stack.echo("move")
    port, aport, aport2 = free_port(), free_port(), free_port()
    g = stack.gate(base(port, aport, {"p": pool([a.address])}))
    write(g, base(port, aport2, {"p": pool([a.address])}))
    st, _, j = reload_admin(aport)
    assert (st, j) == (200, {"reloaded": True})

    def moved():
        try:
            return admin(aport2, "GET", "/healthz")[0] == 200
        except OSError:
            return False
    wait_for(moved, 5, what="the admin endpoint on its new address")
    with pytest.raises(OSError):
        admin(aport, "GET", "/healthz", timeout=1)


def test_reload_never_changes_io_and_says_so_against_the_start(stack):
    """"io" is read at start only: every reload whose file differs from what
    wsgate started with says so (not only the first, whose file then became
    the running config), and one back to the start's value says nothing."""
    echo = stack.echo("io-reload")
    port, aport = free_port(), free_port()
    cfg = base(port, aport, {"p": pool([echo.address])}, io="epoll")
    g = stack.gate(cfg)
    warning = 'io: "uring" takes effect only after a restart: wsgate started with "epoll"'
    changed = dict(cfg, io="uring")
    for n in (1, 2):
        write(g, changed)
        assert reload_admin(aport)[0] == 200
        assert g.log().count(warning) == n, g.log()
    write(g, cfg)
    assert reload_admin(aport)[0] == 200
    assert g.log().count("takes effect only after a restart") == 2, g.log()
    assert status(aport, TOKEN)["io"] == "epoll"
