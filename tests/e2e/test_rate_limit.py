"""SPEC §11 "Rate limits": the per-address bucket over upgrades and HTTP
requests (429 with Retry-After, then recovery; another address unaffected),
the per-connection message rate (messages, not frames; close 1008 "rate
limit" to the client and 1001 to the backend), and client bytes/s shaping
by pausing reads (measured; other connections unaffected).
"""

import threading
import time
import uuid

from conftest import free_port, make_config, pool, wait_for
from opshelpers import scrape
from wsg_fakes import pattern
from wsg_raw import OP_BINARY, OP_CONT, OP_TEXT, connect, upgrade_request, ws_connect


def tag():
    return uuid.uuid4().hex[:12]


def gate(stack, limits, with_admin=False):
    fake = stack.fake("rl-fake")
    http = stack.http("rl-http")
    port = free_port()
    extra = {}
    if with_admin:
        extra["admin"] = {"bind": f"127.0.0.1:{free_port()}"}
    routes = [{"path_prefix": "/api", "pool": "web"}, {"path_prefix": "/", "pool": "ws"}]
    g = stack.gate(make_config(port, {"ws": pool([fake.address]), "web": pool([http.address])},
                               routes=routes, limits=limits, heartbeat={"interval_ms": 0},
                               **extra))
    return port, fake, http, g


def upgrade_status(port, path="/", source=None):
    req, _ = upgrade_request(path, "x")
    c = connect(port, source=source)
    try:
        c.send(req)
        status, hdrs, _ = c.read_http_head()
        return status, hdrs
    finally:
        c.close()


def test_handshakes_past_the_bucket_get_429_then_recover(stack):
    port, fake, http, g = gate(stack, {"handshakes_per_ip_per_s": 2, "handshake_burst": 3},
                               with_admin=True)
    for _ in range(3):
        assert upgrade_status(port)[0] == 101
    t = tag()
    status, hdrs = upgrade_status(port, f"/?id={t}")
    assert status == 429 and int(hdrs["retry-after"]) >= 1
    assert all(r.query.get("id") != t for r in fake.records)
    # Plain HTTP requests share the address's bucket.
    c = connect(port)
    c.send(b"GET /api/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    st, h, _, _ = c.read_response()
    c.close()
    assert st == 429 and int(h["retry-after"]) >= 1
    # Another address has its own bucket.
    assert upgrade_status(port, source="127.0.0.2")[0] == 101
    # A token comes back every half second; refused tries take none.
    t0 = time.monotonic()
    wait_for(lambda: upgrade_status(port)[0] == 101, 3, interval=0.05, what="recovery")
    assert time.monotonic() - t0 <= 1.5
    m = scrape(int(g.cfg["admin"]["bind"].rsplit(":", 1)[1]))
    assert m.value("wsgate_refused_total", reason="handshake_rate") >= 2
    assert 'reason="handshakes_per_ip_per_s reached"' in g.log()


def test_message_rate_counts_messages_not_frames_and_closes_1008(stack):
    port, fake, _, g = gate(stack, {"messages_per_s": 1, "message_burst": 3})
    t = tag()
    c, _ = ws_connect(port, f"/?id={t}")
    rec = fake.wait_conn(t)
    # Three messages of four frames each: 12 frames, 3 messages, all pass.
    for i in range(3):
        for k in range(4):
            c.send_frame(OP_TEXT if k == 0 else OP_CONT, f"m{i}f{k}".encode(), fin=(k == 3))
        assert c.read_message() == (OP_TEXT, "".join(f"m{i}f{k}" for k in range(4)).encode())
    # Then more than the refill can cover: the connection is closed.
    code = reason = None
    for i in range(10):
        try:
            c.send_frame(OP_TEXT, b"more")
        except OSError:
            break
        f = c.read_frame()
        if f.opcode == 0x8:
            code, reason = f.close_code, f.close_reason
            break
        assert f.payload == b"more"
    assert (code, reason) == (1008, "rate limit")
    assert rec.wait_close().close_code == 1001
    c.close()


def test_client_bytes_are_shaped_and_other_connections_are_not(stack):
    rate = 1024 * 1024  # the case: 10 MiB at 1 MiB/s takes 10 ± 1.5 s
    port, fake, _, g = gate(stack, {"client_bytes_per_s": rate})
    t = tag()
    up, _ = ws_connect(port, f"/?id={t}&mode=sink")
    rec = fake.wait_conn(t)
    rec.resume.set()
    frames, size = 160, 64 * 1024  # 10 MiB
    total = frames * size

    def send():
        for i in range(frames):
            up.send_frame(OP_BINARY, pattern(i, size))

    sender = threading.Thread(target=send, daemon=True)
    t0 = time.monotonic()
    sender.start()
    # Meanwhile another client's round trips are not slowed.
    other, _ = ws_connect(port, f"/?id={tag()}")
    for _ in range(5):
        s = time.monotonic()
        other.send_frame(OP_TEXT, b"ping?")
        assert other.read_message() == (OP_TEXT, b"ping?")
        assert time.monotonic() - s < 0.5
    other.close()
    wait_for(lambda: rec.sink_bytes >= total, 25, interval=0.02, what="the upload")
    took = time.monotonic() - t0
    sender.join(5)
    assert rec.sink_ok
    # The first second's worth goes at once, the rest at the rate: 9 s.
    want = (total - rate) / rate
    assert want - 0.6 <= took <= want + 1.5 and 8.5 <= took <= 11.5, took
    up.close()
