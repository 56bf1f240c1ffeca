"""Several workers, the buffer pool, and the per-address limit.

- With workers: 2 both workers accept connections (the kernel spreads them
  over the SO_REUSEPORT sockets) and a key's backend does not depend on the
  worker that accepted it.
- A connection with nothing in flight holds no I/O buffer
  (wsgate_buffers_in_use), even after it carried traffic.
- limits.max_connections_per_ip: one more than allowed gets 429, and a slot
  frees when a connection ends.
- A short concurrent load over two workers (run under ASan by make test).
"""

import asyncio
import json
import re
import socket
import urllib.request

import websockets

from conftest import free_port, make_config, pool, run, wait_for, wsc


def metrics(aport):
    with urllib.request.urlopen(f"http://127.0.0.1:{aport}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def access_lines(gate):
    lines = []
    for line in gate.log().splitlines():
        if line.startswith("{"):
            j = json.loads(line)
            if j.get("module") == "access" or "status" in j and "client" in j:
                lines.append(j)
    return lines


async def whoami(port, user):
    async with wsc(port, f"/?user={user}") as ws:
        await ws.send("whoami")
        return await ws.recv()


def test_two_workers_share_the_load_and_keep_stickiness(stack):
    echos = [stack.echo(f"b{i}") for i in range(3)]
    port = free_port()
    cfg = make_config(port, {"p": pool([e.address for e in echos])}, workers=2,
                      log={"format": "json"})
    g = stack.gate(cfg)

    async def go():
        # Many short connections per key, concurrently, so both workers
        # accept some of each key.
        users = [f"u{i}" for i in range(8)]
        tasks = [whoami(port, u) for u in users for _ in range(12)]
        names = await asyncio.gather(*tasks)
        by_user = {}
        for (u, n) in zip([u for u in users for _ in range(12)], names):
            by_user.setdefault(u, set()).add(n)
        return by_user

    by_user = run(go())
    for u, names in by_user.items():
        assert len(names) == 1, (u, names)  # sticky whichever worker accepted
    wait_for(lambda: len(access_lines(g)) >= 96, 5, what="96 access lines")
    workers = {j["worker"] for j in access_lines(g)}
    assert workers == {0, 1}, workers


def test_idle_connections_hold_no_buffers(stack):
    echo = stack.echo("b")
    port, aport = free_port(), free_port()
    cfg = make_config(port, {"p": pool([echo.address])}, workers=2,
                      admin={"bind": f"127.0.0.1:{aport}"}, heartbeat={"interval_ms": 0})
    stack.gate(cfg)

    async def go():
        conns = [await websockets.connect(f"ws://127.0.0.1:{port}/?user=i{i}")
                 for i in range(40)]
        try:
            for i, ws in enumerate(conns):
                await ws.send("x" * (100 + i * 1000))  # some above one 16 KiB chunk
                assert len(await ws.recv()) == 100 + i * 1000
            m = await asyncio.get_running_loop().run_in_executor(None, metrics, aport)
            assert m["wsgate_connections_active"] == 40, m
            # Everything was echoed: nothing is in flight, so no buffer is held.
            assert m["wsgate_buffers_in_use"] == 0, m
            assert m["wsgate_buffers_cached"] >= 1, m
            # The messages above 16 KiB were read into 64 KiB bulk buffers
            # (one was taken: one is cached), and none is held now.
            assert m["wsgate_bulk_buffers_in_use"] == 0, m
            assert m["wsgate_bulk_buffers_cached"] >= 1, m
        finally:
            for ws in conns:
                await ws.close()

    run(go())


def http_status(port, path="/"):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return int(data.split(b" ")[1])
    finally:
        s.close()


def test_max_connections_per_ip(stack):
    echo = stack.echo("b")
    port = free_port()
    cfg = make_config(port, {"p": pool([echo.address])}, workers=2,
                      limits={"max_connections_per_ip": 3})
    g = stack.gate(cfg)

    async def go():
        held = [await websockets.connect(f"ws://127.0.0.1:{port}/?user=h{i}") for i in range(3)]
        try:
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, http_status, port) == 429
            await held[0].close()
            # The slot comes back once the first connection has ended.
            deadline = loop.time() + 5
            while True:
                try:
                    ws = await websockets.connect(f"ws://127.0.0.1:{port}/?user=again")
                    await ws.send("whoami")
                    assert await ws.recv() == "b"
                    await ws.close()
                    break
                except websockets.InvalidStatusCode as e:
                    assert e.status_code == 429
                    assert loop.time() < deadline, "slot never came back"
                    await asyncio.sleep(0.05)
        finally:
            for ws in held:
                await ws.close()

    run(go())
    assert "max_connections_per_ip" in g.log()


def test_short_concurrent_load_over_two_workers(stack):
    echos = [stack.echo(f"b{i}") for i in range(2)]
    port = free_port()
    cfg = make_config(port, {"p": pool([e.address for e in echos])}, workers=2)
    stack.gate(cfg)

    async def client(i):
        async with wsc(port, f"/?user=load{i}") as ws:
            for k in range(30):
                msg = f"{i}:{k}:" + "y" * (k * 97)
                await ws.send(msg)
                assert await ws.recv() == msg
            await ws.send(bytes(range(256)) * 300)
            assert await ws.recv() == bytes(range(256)) * 300

    async def go():
        await asyncio.gather(*[client(i) for i in range(40)])

    run(go(), timeout=60)
