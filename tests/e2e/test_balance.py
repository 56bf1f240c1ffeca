"""SPEC §5 (and the passive half of §6): choosing a backend. Stickiness for
each key kind, fallbacks, weights, bounded loads, down backends skipped with
only their keys moving, passive health, and --which agreeing with the proxy.

The C echo backends answer "whoami" with their name, which is how a test
sees where a connection landed.
"""

import asyncio
import collections
import re
import subprocess

import pytest

from conftest import WSGATE_BIN, free_port, make_config, pool, run, wait_for, wsc

KEYS = [f"user-{i}" for i in range(24)]


@pytest.fixture(scope="module")
def echos(mstack):
    return [mstack.echo(f"b{i}") for i in range(3)]


def by_address(echos):
    return {e.address: e.name for e in echos}


def gate_for(stack, echos, key="query:user", fallback="random", workers=1, **pool_kw):
    port = free_port()
    cfg = make_config(port, {"p": pool([e.address for e in echos], key=key, fallback=fallback,
                                       **pool_kw)},
                      workers=workers, heartbeat={"interval_ms": 0})
    return stack.gate(cfg)


async def whoami(port, path="/", **kw):
    async with wsc(port, path, **kw) as ws:
        await ws.send("whoami")
        return await ws.recv()


def placements(port, requests, concurrency=30):
    """requests: list of (path, kwargs); returns the list of names, in order."""
    async def body():
        sem = asyncio.Semaphore(concurrency)

        async def one(path, kw):
            async with sem:
                return await whoami(port, path, **kw)
        return await asyncio.gather(*(one(p, kw) for p, kw in requests))
    return run(body(), timeout=60)


def which(gate, key):
    r = subprocess.run([WSGATE_BIN, "--which", key, "-c", gate.cfg_path],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    return r.stdout


def which_name(gate, key, echos):
    out = which(gate, key)
    hits = [name for addr, name in by_address(echos).items() if addr in out]
    assert len(hits) == 1, out
    return hits[0]


def assert_sticky(names_by_key):
    for k, names in names_by_key.items():
        assert len(set(names)) == 1, f"key {k} landed on {names}"
    distinct = {names[0] for names in names_by_key.values()}
    assert len(distinct) > 1, f"all keys on one backend: {distinct}"


def sticky_run(port, keys, request_for, rounds=3):
    reqs = [request_for(k) for _ in range(rounds) for k in keys]
    names = placements(port, reqs)
    by_key = collections.defaultdict(list)
    for i, n in enumerate(names):
        by_key[keys[i % len(keys)]].append(n)
    return by_key


# ---- stickiness per key kind ----------------------------------------------------

def test_query_key_is_sticky_and_agrees_with_which(stack, echos):
    g = gate_for(stack, echos, key="query:user")
    by_key = sticky_run(g.port, KEYS, lambda k: (f"/?a=1&user={k}&b=2", {}))
    assert_sticky(by_key)
    for k in KEYS[:6]:
        assert which_name(g, k, echos) == by_key[k][0], k


def test_header_key_is_sticky_and_agrees_with_which(stack, echos):
    g = gate_for(stack, echos, key="header:X-User")
    by_key = sticky_run(g.port, KEYS, lambda k: ("/", {"extra_headers": {"x-user": k}}))
    assert_sticky(by_key)
    for k in KEYS[:6]:
        assert which_name(g, k, echos) == by_key[k][0], k


def test_cookie_key_is_sticky_and_agrees_with_which(stack, echos):
    g = gate_for(stack, echos, key="cookie:session")
    by_key = sticky_run(g.port, KEYS, lambda k: (
        "/", {"extra_headers": {"Cookie": f"theme=dark; session={k}; lang=en"}}))
    assert_sticky(by_key)
    for k in KEYS[:6]:
        assert which_name(g, k, echos) == by_key[k][0], k


SOURCES = [f"127.0.0.{i}" for i in range(2, 26)]


def test_ip_key_is_sticky_per_client_address(stack, echos):
    g = gate_for(stack, echos, key="ip")
    by_key = sticky_run(g.port, SOURCES, lambda ip: ("/", {"local_addr": (ip, 0)}))
    assert_sticky(by_key)
    for ip in SOURCES[:4]:
        assert which_name(g, ip, echos) == by_key[ip][0], ip


def test_same_key_sticky_across_workers(stack, echos):
    g = gate_for(stack, echos, key="query:user", workers=2)
    by_key = sticky_run(g.port, KEYS[:12], lambda k: (f"/?user={k}", {}), rounds=6)
    assert_sticky(by_key)
    for k in KEYS[:4]:
        assert which_name(g, k, echos) == by_key[k][0], k


# ---- fallbacks ------------------------------------------------------------------

def test_random_fallback_spreads_keyless_requests(stack, echos):
    g = gate_for(stack, echos, key="query:user", fallback="random")
    names = placements(g.port, [("/?other=1", {})] * 30)
    assert len(set(names)) > 1, names


def test_ip_fallback_uses_the_client_address(stack, echos):
    g = gate_for(stack, echos, key="header:X-User", fallback="ip")
    by_key = sticky_run(g.port, SOURCES, lambda ip: ("/", {"local_addr": (ip, 0)}))
    assert_sticky(by_key)
    # The key, when present, still wins over the address.
    for k in KEYS[:4]:
        got = placements(g.port, [("/", {"extra_headers": {"X-User": k},
                                         "local_addr": (ip, 0)}) for ip in SOURCES[:3]])
        assert len(set(got)) == 1 and got[0] == which_name(g, k, echos), (k, got)


# ---- weights and bounded loads -------------------------------------------------------

def test_weights_skew_the_distribution(stack, echos):
    two = echos[:2]
    g = gate_for(stack, two, weights=[1, 3])
    keys = [f"w{i}" for i in range(160)]
    names = placements(g.port, [(f"/?user={k}", {}) for k in keys])
    share = names.count(two[1].name) / len(names)
    assert 0.6 <= share <= 0.9, f"weight 3 of 4 got {share:.2f} of the keys"


def test_load_factor_bounds_a_backend(stack, echos):
    two = echos[:2]
    g = gate_for(stack, two, balance={"key": "query:user", "fallback": "random",
                                      "load_factor": 1.0})

    async def body():
        socks = []
        names = []
        try:
            for _ in range(10):
                ws = await wsc(g.port, "/?user=same-key")
                socks.append(ws)
                await ws.send("whoami")
                names.append(await ws.recv())
        finally:
            for ws in socks:
                await ws.close()
        return names
    names = run(body())
    counts = collections.Counter(names)
    assert min(counts.get(e.name, 0) for e in two) >= 4, counts


# ---- down backends -----------------------------------------------------------------

def test_down_backend_is_skipped_and_only_its_keys_move(stack):
    ports = [free_port() for _ in range(3)]
    echos = [stack.echo(f"d{i}", p) for i, p in enumerate(ports)]
    port = free_port()
    # Passive checks only: a stopped backend fails its connects (each retried
    # on the next backend of the ring) and is marked down after `fall`.
    cfg = make_config(port, {"p": pool([e.address for e in echos], retries=2)},
                      heartbeat={"interval_ms": 0})
    g = stack.gate(cfg)
    keys = [f"k{i}" for i in range(30)]

    def mapping():
        return dict(zip(keys, placements(port, [(f"/?user={k}", {}) for k in keys])))
    before = mapping()
    counts = collections.Counter(before.values())
    victim = max(echos, key=lambda e: counts[e.name])
    assert counts[victim.name] > 0

    victim.stop()
    stack.procs.remove(victim)
    during = mapping()
    for k in keys:
        if before[k] == victim.name:
            assert during[k] != victim.name
        else:
            assert during[k] == before[k], f"key {k} moved although its backend is up"

    # Back up: its keys, and only those, return.
    revived = stack.echo(victim.name, victim.port)
    wait_for(lambda: mapping() == before, 15, interval=0.2,
             what="the revived backend's keys to move back")
    assert revived.alive
    log = g.log()
    assert re.search(rf"{re.escape(victim.address)}.*\bdown\b", log), log[-3000:]


def test_passive_health_marks_down_after_fall_failures_and_retries_later(stack):
    dead_port = free_port()
    dead = f"127.0.0.1:{dead_port}"
    live = [stack.echo(f"p{i}") for i in range(2)]
    port = free_port()
    cfg = make_config(port, {"p": pool([dead] + [e.address for e in live], retries=2)},
                      heartbeat={"interval_ms": 0})
    g = stack.gate(cfg)
    dkeys = [k for k in (f"pk{i}" for i in range(40)) if dead in which(g, k)][:3]
    assert dkeys, "no key maps to the dead backend"

    # Three (default fall) failed connects, each retried on a live backend.
    for i in range(3):
        name = placements(port, [(f"/?user={dkeys[i % len(dkeys)]}", {})])[0]
        assert name in {e.name for e in live}
    wait_for(lambda: re.search(rf"{re.escape(dead)}.*\bdown\b", g.log()), 5,
             what="the state change to down in the log")

    # Marked down: its keys avoid it even once it listens again ...
    revived = stack.echo("revived", dead_port)
    assert placements(port, [(f"/?user={dkeys[0]}", {})])[0] != "revived"
    # ... and it is tried again later.
    wait_for(lambda: placements(port, [(f"/?user={dkeys[0]}", {})])[0] == "revived", 20,
             interval=0.25, what="the down backend to be retried")
    assert revived.alive
