"""SPEC §8 reload (and §1 SIGHUP): the new file is checked first; an invalid
one is logged and the running configuration stays; a valid one swaps
listeners, routes and pools for new connections; live relayed connections
are never cut."""

import asyncio
import json
import signal

from conftest import can_connect, free_port, make_config, pool, run, wait_for, wsc


async def whoami(port, path="/"):
    async with wsc(port, path) as ws:
        await ws.send("whoami")
        return await ws.recv()


def rewrite(g, cfg):
    g.cfg = cfg
    g.cfg_path.write_text(json.dumps(cfg, indent=2))


def test_sighup_swaps_pools_for_new_connections_and_keeps_live_ones(stack):
    a, b = stack.echo("reload-a"), stack.echo("reload-b")
    port = free_port()
    cfg = make_config(port, {"p": pool([a.address])}, heartbeat={"interval_ms": 0})
    g = stack.gate(cfg)

    async def body():
        live = await wsc(port, "/")
        await live.send("whoami")
        assert await live.recv() == "reload-a"

        new = make_config(port, {"p": pool([b.address])}, heartbeat={"interval_ms": 0})
        rewrite(g, new)
        g.signal(signal.SIGHUP)
        for _ in range(100):
            if await whoami(port) == "reload-b":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("new connections still go to the old pool")

        # The connection made before the reload still relays to its backend.
        for i in range(3):
            await live.send(f"still-{i}")
            assert await live.recv() == f"still-{i}"
        await live.send("whoami")
        assert await live.recv() == "reload-a"
        await live.close()
        assert live.close_code == 1000
    run(body())
    assert g.alive


def test_sighup_with_invalid_file_keeps_running_configuration(stack):
    a = stack.echo("keep-a")
    port = free_port()
    cfg = make_config(port, {"p": pool([a.address])}, heartbeat={"interval_ms": 0})
    g = stack.gate(cfg)
    g.cfg_path.write_text('{ "workers": 1, "listeners": [ }')
    g.signal(signal.SIGHUP)
    wait_for(lambda: g.cfg_path.name in g.log().split("started", 1)[-1], 5,
             what="the reload error to be logged")
    assert g.alive
    assert run(whoami(port)) == "keep-a"

    bad = make_config(port, {"p": pool([a.address])}, heartbeat={"interval_ms": 0})
    bad["pools"]["p"]["backends"][0]["address"] = "nonsense"
    g.cfg_path.write_text(json.dumps(bad))
    g.signal(signal.SIGHUP)
    wait_for(lambda: "pools.p.backends[0].address" in g.log(), 5,
             what="the JSON path of the error in the log")
    assert g.alive
    assert run(whoami(port)) == "keep-a"


def test_sighup_adds_a_listener_and_changes_routes(stack):
    a, b = stack.echo("route-a"), stack.echo("route-b")
    port, port2 = free_port(), free_port()
    pools = {"a": pool([a.address]), "b": pool([b.address])}
    cfg = make_config(port, pools, routes=[{"path_prefix": "/", "pool": "a"}],
                      heartbeat={"interval_ms": 0})
    g = stack.gate(cfg)
    assert run(whoami(port, "/x")) == "route-a"

    new = make_config(port, pools, routes=[{"path_prefix": "/x", "pool": "b"},
                                           {"path_prefix": "/", "pool": "a"}],
                      heartbeat={"interval_ms": 0})
    new["listeners"].append({"name": "second", "bind": f"127.0.0.1:{port2}"})
    rewrite(g, new)
    g.signal(signal.SIGHUP)
    wait_for(lambda: can_connect(port2), 5, what="the new listener")
    assert run(whoami(port, "/x")) == "route-b"
    assert run(whoami(port2, "/y")) == "route-a"
    assert run(whoami(port2, "/x")) == "route-b"
