"""SPEC §12 (and §7): backends added and removed at run time.

POST /pools/P/backends and DELETE /pools/P/backends/ADDR with and without
the token; the body checked like the file's backends[] entries; only the
keys of the added or removed backend move; unchanged backends keep their
state and counters; a removed backend's clients get 1012 and it is listed
as draining until they have ended; a reload puts the file's backends back
(file wins). Rebalance: after an add, exactly the live connections whose
key now maps to the new backend get 1012, at the configured rate; the
others, and those placed at random (no key), stay.
"""

import json
import signal
import threading
import time

import pytest

from conftest import free_port, make_config, pool, wait_for
from opshelpers import Client, admin_json, landing, scrape, status, which
from wsg_raw import OP_TEXT, ws_connect

TOKEN = "rt-t0ken"
USERS = [f"rt-user-{i}" for i in range(48)]


def _gate(stack, n=2, extra=None, **pool_kw):
    echos = [stack.echo(f"rt{i}") for i in range(n + 1)]
    port, aport = free_port(), free_port()
    cfg = make_config(port, {"p": pool([e.address for e in echos[:n]], **pool_kw)},
                      admin={"bind": f"127.0.0.1:{aport}", "token": TOKEN},
                      heartbeat={"interval_ms": 0}, **(extra or {}))
    g = stack.gate(cfg)
    g.aport = aport
    g.echos = echos
    return g


def _add(g, body, token=TOKEN, pool_name="p"):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return admin_json(g.aport, "POST", f"/pools/{pool_name}/backends", token, body=data,
                      headers={"Content-Type": "application/json"})


def _names(g):
    return {e.address: e.name for e in g.echos}


def test_add_needs_the_token_and_answers_the_pool_state(stack):
    g = _gate(stack)
    new = g.echos[2].address
    for tok in (None, "wrong"):
        st, hdrs, j = _add(g, {"address": new}, token=tok)
        assert st == 401 and "error" in j, j
    assert [b["address"] for b in status(g.aport, TOKEN)["pools"]["p"]["backends"]] == \
        [e.address for e in g.echos[:2]]

    st, _, j = _add(g, {"address": new, "weight": 2})
    assert st == 201, j
    assert j["pool"] == "p"
    got = {b["address"]: b for b in j["backends"]}
    assert list(got) == [e.address for e in g.echos], j
    assert got[new]["weight"] == 2 and got[new]["state"] == "up"
    # The pool's state, as /status shows it.
    assert [(b["address"], b["weight"], b["state"])
            for b in status(g.aport, TOKEN)["pools"]["p"]["backends"]] == \
        [(b["address"], b["weight"], b["state"]) for b in j["backends"]]

    # DELETE: without the token refused, nothing changes.
    for tok in (None, "wrong"):
        st, _, j = admin_json(g.aport, "DELETE", f"/pools/p/backends/{new}", tok)
        assert st == 401, j
    assert len(status(g.aport, TOKEN)["pools"]["p"]["backends"]) == 3
    st, _, j = admin_json(g.aport, "DELETE", f"/pools/p/backends/{new}", TOKEN)
    assert st == 200, j
    assert [b["address"] for b in j["backends"]] == [e.address for e in g.echos[:2]]


@pytest.mark.parametrize("body, where", [
    ({"address": "10.0.0.1"}, "request body: address: expected \"host:port\""),
    ({"address": "127.0.0.1:9", "weight": 0}, "request body: weight: expected an integer from 1 to 256"),
    ({"address": "127.0.0.1:9", "wieght": 2}, "request body: wieght: unknown key, did you mean \"weight\"?"),
    ({"weight": 2}, "request body: address: missing"),
    ([{"address": "127.0.0.1:9"}], "request body: expected an object"),
    ("{\"address\": ", "request body:1:"),
    ("", "request body:"),
])
def test_add_validates_the_body_like_the_file(stack, body, where):
    g = _gate(stack)
    st, _, j = _add(g, body)
    assert st == 400, j
    assert j["error"].startswith(where), j
    assert j["errors"][0] == j["error"]
    assert len(status(g.aport, TOKEN)["pools"]["p"]["backends"]) == 2


def test_add_and_remove_errors_are_json_4xx(stack):
    g = _gate(stack)
    a0, a1 = g.echos[0].address, g.echos[1].address
    st, _, j = _add(g, {"address": a0})
    assert st == 409 and "already" in j["error"], j
    st, _, j = _add(g, {"address": a0}, pool_name="nope")
    assert st == 404 and "nope" in j["error"], j
    st, _, j = admin_json(g.aport, "DELETE", "/pools/p/backends/127.0.0.1:1", TOKEN)
    assert st == 404 and "127.0.0.1:1" in j["error"], j
    st, _, j = admin_json(g.aport, "DELETE", f"/pools/nope/backends/{a0}", TOKEN)
    assert st == 404, j
    st, hdrs, j = admin_json(g.aport, "GET", "/pools/p/backends", TOKEN)
    assert st == 405 and hdrs["allow"] == "POST", j
    st, hdrs, j = admin_json(g.aport, "POST", f"/pools/p/backends/{a0}", TOKEN)
    assert st == 405 and hdrs["allow"] == "DELETE", j
    st, _, j = admin_json(g.aport, "DELETE", f"/pools/p/backends/{a0}?spread_ms=x", TOKEN)
    assert st == 400 and "spread_ms" in j["error"], j
    st, _, j = admin_json(g.aport, "DELETE", f"/pools/p/backends/{a0}", TOKEN)
    assert st == 200, j
    st, _, j = admin_json(g.aport, "DELETE", f"/pools/p/backends/{a1}", TOKEN)
    assert st == 409 and "last backend" in j["error"], j
    # A browser page of another origin cannot change the pool.
    st, _, j = admin_json(g.aport, "POST", "/pools/p/backends", TOKEN,
                          body=json.dumps({"address": a0}),
                          headers={"Origin": "http://evil.example"})
    assert st == 403, j


def test_add_moves_only_the_new_backends_keys_and_keeps_counters(stack, tmp_path):
    g = _gate(stack, health={"type": "tcp", "interval_ms": 200, "timeout_ms": 500,
                             "rise": 1, "fall": 1})
    names = _names(g)
    before = landing(g.port, USERS)
    totals = {b["address"]: b["total"] for b in status(g.aport, TOKEN)["pools"]["p"]["backends"]}
    assert sum(totals.values()) == len(USERS)

    new = g.echos[2].address
    st, _, j = _add(g, {"address": new})
    assert st == 201, j
    cfg2 = json.loads(json.dumps(g.cfg))
    cfg2["pools"]["p"]["backends"].append({"address": new})
    want = which(cfg2, USERS, tmp_path)
    after = landing(g.port, USERS)
    assert after == {u: names[a] for u, a in want.items()}, (after, want)
    moved = [u for u in USERS if after[u] != before[u]]
    assert moved and all(after[u] == g.echos[2].name for u in moved), (before, after)

    # Unchanged backends kept their counters (not reset by the change).
    now = {b["address"]: b for b in status(g.aport, TOKEN)["pools"]["p"]["backends"]}
    for a, t in totals.items():
        assert now[a]["total"] >= t, (a, t, now[a])
        assert now[a]["state"] == "up"
    assert now[new]["total"] == len(moved)


def test_remove_drains_its_connections_and_lists_it_until_they_end(stack):
    g = _gate(stack, n=3)
    clients = [Client(g.port, u) for u in USERS]
    try:
        victim = g.echos[1]
        mine = [c for c in clients if c.name == victim.name]
        others = [c for c in clients if c.name != victim.name]
        assert mine and others
        # Spread, so the answer comes while its clients are still there:
        # it is listed (draining, removed) until they have ended.
        st, _, j = admin_json(g.aport, "DELETE", f"/pools/p/backends/{victim.address}"
                              "?spread_ms=300", TOKEN)
        assert st == 200, j
        left = {b["address"]: b for b in j["backends"]}
        assert list(left)[:2] == [g.echos[0].address, g.echos[2].address]
        assert left[victim.address]["state"] == "draining"
        assert left[victim.address]["removed"] is True
        for c in mine:
            assert c.read_close() == 1012
        for c in others:  # untouched
            assert c.ask() == c.name
        wait_for(lambda: victim.address not in
                 [b["address"] for b in status(g.aport, TOKEN)["pools"]["p"]["backends"]],
                 timeout=g.drain_ms / 1000 + 5, what="the removed backend to be unlisted")
        # New connections avoid it; keys of the others stay home.
        now = landing(g.port, USERS)
        assert victim.name not in now.values()
        for c in others:
            assert now[c.user] == c.name
    finally:
        for c in clients:
            c.close()


def test_reload_puts_the_files_backends_back(stack):
    g = _gate(stack)
    a0, a1, a2 = (e.address for e in g.echos)
    assert _add(g, {"address": a2})[0] == 201
    assert admin_json(g.aport, "DELETE", f"/pools/p/backends/{a0}", TOKEN)[0] == 200
    assert [b["address"] for b in status(g.aport, TOKEN)["pools"]["p"]["backends"]] == [a1, a2]
    c = Client(g.port, "kept")  # on a1 or a2: a reload never cuts it
    g.signal(signal.SIGHUP)
    wait_for(lambda: [b["address"] for b in status(g.aport, TOKEN)["pools"]["p"]["backends"]]
             == [a0, a1], timeout=5, what="the file's backends after SIGHUP")
    assert {b["state"] for b in status(g.aport, TOKEN)["pools"]["p"]["backends"]} == {"up"}
    assert c.ask() == c.name
    c.close()


# ---- rebalance ---------------------------------------------------------------

RATE = 5  # max_per_s


def test_rebalance_closes_exactly_the_moved_keys_at_the_rate(stack, tmp_path):
    g = _gate(stack, rebalance={"max_per_s": RATE}, fallback="random")
    new = g.echos[2].address
    # The backends' ports differ from run to run, and so does the ring:
    # the keys are chosen with the new ring (`wsgate --which`), 10 that
    # move and 10 that stay (of 150 candidates about 50 move).
    cfg2 = json.loads(json.dumps(g.cfg))
    cfg2["pools"]["p"]["backends"].append({"address": new})
    want = which(cfg2, [f"rb-{i}" for i in range(150)], tmp_path)
    moving = [u for u, a in want.items() if a == new][:10]
    staying = [u for u, a in want.items() if a != new][:10]
    assert len(moving) == len(staying) == 10, want
    users = moving + staying
    clients = {u: Client(g.port, u) for u in users}
    # Random fallback: no key, never moved whatever the ring says.
    nokey = [ws_connect(g.port, "/")[0] for _ in range(8)]
    closes = {}

    def read(u):
        c = clients[u]
        c.conn.settimeout(len(moving) / RATE + 10)
        closes[u] = (c.read_close(), time.monotonic())

    threads = [threading.Thread(target=read, args=(u,)) for u in moving]
    try:
        for t in threads:
            t.start()
        t0 = time.monotonic()
        st, _, j = _add(g, {"address": new})
        assert st == 201, j
        for t in threads:
            t.join(len(moving) / RATE + 15)
        assert sorted(closes) == sorted(moving)
        assert {code for code, _ in closes.values()} == {1012}
        # One close per 1/RATE s slot, at a random point in it: the k-th
        # close comes no sooner than k slots after the add, and all within
        # len(moving) slots (+ slack for scheduling).
        times = sorted(t - t0 for _, t in closes.values())
        slot = 1.0 / RATE
        for k, t in enumerate(times):
            assert t >= k * slot - 0.1, (k, times)
        assert times[-1] <= len(moving) * slot + 1.0, times
        # Every other client still relays, to its old backend.
        for u, c in clients.items():
            if u not in moving:
                assert c.ask() == c.name, u
        for s in nokey:
            s.send_frame(OP_TEXT, "whoami")
            assert s.read_message()[0] == OP_TEXT
        m = scrape(g.aport, TOKEN)
        assert m.value("wsgate_rebalanced_total", pool="p") == len(moving)
        # The moved keys reconnect to the new backend.
        assert set(landing(g.port, moving).values()) == {g.echos[2].name}
    finally:
        for c in clients.values():
            c.close()
        for s in nokey:
            s.close()


def test_without_rebalance_an_add_closes_nothing(stack):
    g = _gate(stack)
    clients = [Client(g.port, u) for u in USERS]
    try:
        assert _add(g, {"address": g.echos[2].address})[0] == 201
        time.sleep(0.3)  # would be long enough for several rebalance closes
        for c in clients:
            assert c.ask() == c.name
        assert scrape(g.aport, TOKEN).value("wsgate_rebalanced_total", pool="p") == 0
    finally:
        for c in clients:
            c.close()


def test_rebalance_leaves_cookie_holders_alone(stack, tmp_path):
    """SPEC §12 with §10: a connection that holds the pool's sticky cookie,
    one that came with it or one its 101 just gave it, stays put after an
    add, even when its key now maps to the new backend: its next connection
    would carry the cookie back to the same backend anyway."""
    g = _gate(stack, rebalance={"max_per_s": 50}, fallback="random")
    new = g.echos[2].address
    cfg2 = json.loads(json.dumps(g.cfg))
    cfg2["pools"]["p"]["backends"].append({"address": new})
    want = which(cfg2, [f"ck-{i}" for i in range(100)], tmp_path)
    moving = [u for u, a in want.items() if a == new][:6]
    assert len(moving) == 6, want
    # The same gate again, with a cookie on the pool.
    g.stop()
    g.cfg["pools"]["p"]["balance"]["cookie"] = {"secret": "rebalance-test-secret-0123456789"}
    g2 = stack.gate(g.cfg)
    g2.aport = g.aport
    came_with, given = moving[:3], moving[3:]
    cookies = {}
    for u in came_with:
        c, hdrs = ws_connect(g2.port, f"/?user={u}")
        cookies[u] = hdrs["set-cookie"].split(";", 1)[0]
        c.close()
    conns = {u: ws_connect(g2.port, f"/?user={u}", headers={"Cookie": cookies[u]})[0]
             for u in came_with}
    for u in given:
        c, hdrs = ws_connect(g2.port, f"/?user={u}")
        assert "set-cookie" in hdrs, hdrs
        conns[u] = c
    try:
        before = {}
        for u, c in conns.items():
            c.send_frame(OP_TEXT, "whoami")
            before[u] = c.read_message()[1].decode()
        assert _add(g2, {"address": new})[0] == 201
        time.sleep(0.5)  # at 50/s, long enough for every one of them to be closed
        for u, c in conns.items():
            c.send_frame(OP_TEXT, "whoami")
            assert c.read_message()[1].decode() == before[u], u
        assert scrape(g.aport, TOKEN).value("wsgate_rebalanced_total", pool="p") == 0
    finally:
        for c in conns.values():
            c.close()
