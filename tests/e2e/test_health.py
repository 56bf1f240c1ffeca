"""SPEC §6: active health checks (tcp, http, websocket), rise and fall.

A backend starts up and is checked at once; `fall` failed checks take it
down without any client traffic, `rise` passes bring it back, and only the
checks (not traffic) decide while they are configured.
"""

import re

import pytest

from conftest import dead_port, free_port, make_config, pool, run, wait_for, wsc
from wsg_raw import connect, upgrade_request

FAST = {"interval_ms": 100, "timeout_ms": 200, "rise": 1, "fall": 1}


def status(port, path="/?user=x"):
    c = connect(port)
    try:
        c.send(upgrade_request(path, f"127.0.0.1:{port}")[0])
        return c.read_http_head()[0]
    finally:
        c.close()


async def whoami(port, user):
    async with wsc(port, f"/?user={user}") as ws:
        await ws.send("whoami")
        return await ws.recv()


@pytest.mark.parametrize("htype", ["tcp", "http", "websocket"])
def test_active_check_takes_a_dead_backend_down_without_traffic(stack, htype):
    dead = f"127.0.0.1:{dead_port()}"
    live = stack.echo(f"live-{htype}")
    port = free_port()
    cfg = make_config(port, {"p": pool([dead, live.address], retries=0,
                                       health=dict(FAST, type=htype, path="/healthz"))},
                      heartbeat={"interval_ms": 0})
    g = stack.gate(cfg)
    wait_for(lambda: re.search(rf"{re.escape(dead)}.*\bdown\b", g.log()), 5,
             what="the dead backend to be marked down by checks alone")
    assert not re.search(rf"{re.escape(live.address)}.*\bdown\b", g.log()), g.log()
    # With retries 0, a key of the dead backend can only succeed if the
    # balancer already skips it.
    names = run(whoami_all(port, [f"u{i}" for i in range(12)]))
    assert set(names) == {live.name}, names


async def whoami_all(port, users):
    return [await whoami(port, u) for u in users]


def test_all_backends_down_gives_503_and_rise_brings_one_back(stack):
    ports = [free_port(), free_port()]
    port = free_port()
    cfg = make_config(port, {"p": pool([f"127.0.0.1:{p}" for p in ports], retries=1,
                                       health=dict(FAST, type="tcp"))},
                      heartbeat={"interval_ms": 0})
    stack.gate(cfg)
    wait_for(lambda: status(port) == 503, 5, interval=0.1, what="503 with every backend down")
    echo = stack.echo("late", ports[0])
    wait_for(lambda: status(port) == 101, 10, interval=0.1, what="recovery after a check")
    assert echo.alive
