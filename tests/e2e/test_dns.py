"""SPEC §12: DNS discovery. A backend entry with "resolve": true stands for
every address its name resolves to, each a backend NAME#IP:PORT, looked up
again every resolve_ms with the servers of dns.servers: here a small DNS
server the test runs (wsg_dns.py) and whose records it changes.

The backends are three echo servers on one port of 127.0.0.2, .3 and .4
(all of 127/8 is loopback), as the pods behind a headless Service are.
A name that grows gets a new backend with new keys (and with rebalance,
exactly the moved live connections get 1012); one that shrinks has the
leaving backend's connections drained with 1012; a failed lookup
(SERVFAIL, timeout, NXDOMAIN) changes nothing; a reload keeps the set,
even when its own lookup fails; a name that does not resolve at start
leaves its pool empty (503) until it does.
"""

import json
import signal
import socket
import subprocess
import threading

import pytest

from conftest import WSGATE_BIN, free_port, make_config, wait_for
from opshelpers import Client, landing, scrape, status, which
from wsg_dns import DnsServer
from wsg_raw import ws_connect

NAME = "app.wsgate.test"
IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


def _echos(stack):
    """Echo backends on IPS, all on one port."""
    for _ in range(20):
        first = stack.echo("d2", host=IPS[0])
        try:
            rest = [stack.echo(f"d{ip.rsplit('.', 1)[1]}", port=first.port, host=ip)
                    for ip in IPS[1:]]
            return [first] + rest
        except AssertionError:
            continue  # the port is taken on another address: another one
    raise AssertionError("no port free on all of " + ", ".join(IPS))


def _ident(e):
    return f"{NAME}#{e.address}"


@pytest.fixture
def dns():
    d = DnsServer({NAME: IPS[:2]}, ttl=300)
    yield d
    d.stop()


def _cfg(echos, dns, resolve_ms=200, **pool_kw):
    port, aport = free_port(), free_port()
    p = {"backends": [{"address": f"{NAME}:{echos[0].port}", "resolve": True}],
         "balance": {"key": "query:user", "fallback": "random"}, "resolve_ms": resolve_ms}
    p.update(pool_kw)
    cfg = make_config(port, {"p": p}, admin={"bind": f"127.0.0.1:{aport}"},
                      heartbeat={"interval_ms": 0}, dns={"servers": [dns.address]})
    return cfg, aport


def _gate(stack, cfg, aport):
    g = stack.gate(cfg)
    g.aport = aport
    return g


def _addresses(g):
    return [b["address"] for b in status(g.aport)["pools"]["p"]["backends"]]


def _lookups(g, result):
    return scrape(g.aport).value("wsgate_dns_lookups_total", result=result)


def test_a_name_is_every_address_it_resolves_to(stack, dns, tmp_path):
    echos = _echos(stack)
    cfg, aport = _cfg(echos, dns)
    (tmp_path / "t.json").write_text(json.dumps(cfg))
    r = subprocess.run([WSGATE_BIN, "-t", "-c", str(tmp_path / "t.json")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr
    g = _gate(stack, cfg, aport)
    assert _addresses(g) == [_ident(echos[0]), _ident(echos[1])]
    (res,) = status(g.aport)["pools"]["p"]["resolve"]
    assert res["name"] == f"{NAME}:{echos[0].port}"
    assert res["addresses"] == IPS[:2]
    assert res["last_lookup"]["result"] == "ok"
    names = set(landing(g.port, [f"u{i}" for i in range(24)]).values())
    assert names == {"d2", "d3"}
    assert _lookups(g, "ok") >= 1


def test_a_growing_name_adds_a_backend_and_rebalances_exactly_the_moved(stack, dns, tmp_path):
    echos = _echos(stack)
    cfg, aport = _cfg(echos, dns, rebalance={"max_per_s": 20})
    by_ident = {_ident(e): e.name for e in echos}
    # The keys are chosen with the rings --which computes from the DNS
    # answers (the port differs from run to run): 10 that move to the third
    # address, 10 that stay.
    candidates = [f"g-{i}" for i in range(150)]
    dns.records[NAME] = IPS[:3]
    want3 = which(cfg, candidates, tmp_path)
    dns.records[NAME] = IPS[:2]
    moving = [u for u in candidates if want3[u] == _ident(echos[2])][:10]
    staying = [u for u in candidates if want3[u] != _ident(echos[2])][:10]
    assert len(moving) == len(staying) == 10, want3
    g = _gate(stack, cfg, aport)
    clients = {u: Client(g.port, u) for u in moving + staying}
    nokey = [ws_connect(g.port, "/")[0] for _ in range(6)]  # random: never moved
    for u in staying:
        assert clients[u].name == by_ident[want3[u]]
    before = {b["address"]: b["total"] for b in status(g.aport)["pools"]["p"]["backends"]}
    closes = {}

    def read(u):
        clients[u].conn.settimeout(15)
        closes[u] = clients[u].read_close()

    threads = [threading.Thread(target=read, args=(u,)) for u in moving]
    try:
        for t in threads:
            t.start()
        dns.records[NAME] = IPS[:3]
        for t in threads:
            t.join(20)
        assert closes == {u: 1012 for u in moving}
        assert _addresses(g) == [_ident(e) for e in echos]
        for u in staying:
            assert clients[u].ask() == clients[u].name
        for s in nokey:
            s.send_frame(1, "whoami")
            assert s.read_message()[0] == 1
        m = scrape(g.aport)
        assert m.value("wsgate_rebalanced_total", pool="p") == len(moving)
        # The unchanged backends kept their counters.
        now = {b["address"]: b for b in status(g.aport)["pools"]["p"]["backends"]}
        for a, t in before.items():
            assert now[a]["total"] >= t and now[a]["state"] == "up"
        assert set(landing(g.port, moving).values()) == {echos[2].name}
    finally:
        for c in clients.values():
            c.close()
        for s in nokey:
            s.close()


def test_a_shrinking_name_drains_the_leaving_backend(stack, dns):
    echos = _echos(stack)
    dns.records[NAME] = IPS[:3]
    cfg, aport = _cfg(echos, dns)
    g = _gate(stack, cfg, aport)
    users = [f"s-{i}" for i in range(36)]
    clients = [Client(g.port, u) for u in users]
    try:
        mine = [c for c in clients if c.name == echos[1].name]
        others = [c for c in clients if c.name != echos[1].name]
        assert mine and others
        dns.records[NAME] = [IPS[0], IPS[2]]
        for c in mine:
            c.conn.settimeout(g.drain_ms / 1000 + 5)
            assert c.read_close() == 1012
        for c in others:
            assert c.ask() == c.name
        wait_for(lambda: _ident(echos[1]) not in _addresses(g), timeout=g.drain_ms / 1000 + 5,
                 what="the leaving backend to be unlisted")
        now = landing(g.port, users)
        assert echos[1].name not in now.values()
        for c in others:
            assert now[c.user] == c.name
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("mode", ["servfail", "nxdomain", "timeout"])
def test_a_failed_lookup_changes_nothing(stack, dns, mode):
    echos = _echos(stack)
    cfg, aport = _cfg(echos, dns)
    g = _gate(stack, cfg, aport)
    clients = [Client(g.port, f"f-{i}") for i in range(12)]
    try:
        label = "timeout" if mode == "timeout" else mode
        n0 = _lookups(g, label)
        dns.mode = mode
        dns.records[NAME] = [IPS[2]]  # would replace both, were it answered
        wait_for(lambda: _lookups(g, label) >= n0 + 2, timeout=15,
                 what=f"two {mode} lookups")
        assert _addresses(g) == [_ident(echos[0]), _ident(echos[1])]
        (res,) = status(g.aport)["pools"]["p"]["resolve"]
        assert res["last_lookup"]["result"] == label
        assert res["addresses"] == IPS[:2]
        for c in clients:
            assert c.ask() == c.name
        assert f"lookup of {NAME}:{echos[0].port} failed ({label})" in g.log()
        # Answered again: the change applies.
        dns.mode = "ok"
        wait_for(lambda: _addresses(g) == [_ident(echos[2])], timeout=10,
                 what="the answered change")
    finally:
        for c in clients:
            c.close()


def test_a_reload_keeps_the_set_even_when_its_lookup_fails(stack, dns):
    echos = _echos(stack)
    cfg, aport = _cfg(echos, dns, resolve_ms=60000)
    g = _gate(stack, cfg, aport)
    c = Client(g.port, "kept")
    try:
        before = status(g.aport)["pools"]["p"]["backends"]
        g.signal(signal.SIGHUP)
        wait_for(lambda: g.log().count("reloaded ") >= 1, timeout=10, what="the reload")
        assert status(g.aport)["pools"]["p"]["backends"] == before
        dns.mode = "timeout"
        g.signal(signal.SIGHUP)
        wait_for(lambda: g.log().count("reloaded ") >= 2, timeout=15, what="the second reload")
        assert _addresses(g) == [_ident(echos[0]), _ident(echos[1])]
        assert c.ask() == c.name
        # And the next lookups follow the reloaded file.
        dns.mode = "ok"
        dns.records[NAME] = IPS
        g.signal(signal.SIGHUP)
        wait_for(lambda: _addresses(g) == [_ident(e) for e in echos], timeout=10,
                 what="the third address after a reload")
        assert c.ask() == c.name
    finally:
        c.close()


def test_a_name_that_does_not_resolve_at_start_leaves_its_pool_empty(stack, dns, tmp_path):
    echos = _echos(stack)
    del dns.records[NAME]
    cfg, aport = _cfg(echos, dns)
    (tmp_path / "t.json").write_text(json.dumps(cfg))
    r = subprocess.run([WSGATE_BIN, "-t", "-c", str(tmp_path / "t.json")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr  # a name that does not resolve now is no file error
    r = subprocess.run([WSGATE_BIN, "--which", "x", "-c", str(tmp_path / "t.json")],
                       capture_output=True, text=True)
    assert r.returncode == 3 and "no backend now" in r.stderr, r.stderr
    g = _gate(stack, cfg, aport)
    assert _addresses(g) == []
    s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert s.recv(64).startswith(b"HTTP/1.1 503"), "no backend: 503"
    s.close()
    dns.records[NAME] = [IPS[0]]
    wait_for(lambda: _addresses(g) == [_ident(echos[0])], timeout=10, what="the name resolving")
    assert Client(g.port, "late").name == echos[0].name


def test_a_short_ttl_asks_sooner_than_resolve_ms(stack, dns):
    echos = _echos(stack)
    dns.ttl = 1
    cfg, aport = _cfg(echos, dns, resolve_ms=60000)
    g = _gate(stack, cfg, aport)
    n = dns.queries(NAME)
    wait_for(lambda: dns.queries(NAME) >= n + 2, timeout=8, what="lookups every second")
    assert len(_addresses(g)) == 2
