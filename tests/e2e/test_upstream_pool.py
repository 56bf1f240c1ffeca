"""Backend connection reuse for plain HTTP (SPEC §9): the worker's pool of
idle backend connections, pools.NAME.keepalive, timeouts.upstream_idle_ms,
a backend that closes idle connections, the resend of an idempotent request
whose kept-alive connection died, and what /status, /metrics and the access
line say about it. One worker everywhere, so that every request meets the
same pool."""
import http.client
import json
import signal
import socket
import threading
import time

from conftest import free_port, make_config, pool, wait_for
from opshelpers import scrape, status, which


def gate_for(stack, fake, pool_kw=None, **sections):
    port, aport = free_port(), free_port()
    sections.setdefault("heartbeat", {"interval_ms": 0})
    cfg = make_config(port, {"web": pool([fake.address], **(pool_kw or {}))},
                      admin={"bind": f"127.0.0.1:{aport}"}, **sections)
    return port, aport, stack.gate(cfg)


def get(port, path, method="GET", body=None, headers=None):
    """One request on its own client connection: (status, body)."""
    h = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        h.request(method, path, body=body, headers=headers or {})
        r = h.getresponse()
        return r.status, r.read()
    finally:
        h.close()


def metric(aport, name):
    return scrape(aport).value(name) or 0


def upstream(aport, pool_name="web"):
    st = status(aport)
    (be,) = st["pools"][pool_name]["backends"]
    return be["upstream"]


def test_requests_from_different_clients_share_one_backend_connection(stack):
    fake = stack.http("origin")
    port, aport, g = gate_for(stack, fake)
    for i in range(10):
        assert get(port, f"/r{i}") == (200, f"/r{i}".encode())
    # Ten client connections, one after the other: one backend connection.
    assert fake.connections == 1, fake.per_conn
    assert fake.per_conn == [10]
    reqs = fake.wait_requests(10)
    assert all("connection" not in h for _, h, _ in reqs), [h for _, h, _ in reqs]
    assert metric(aport, "wsgate_upstream_connections_total") == 1
    assert metric(aport, "wsgate_upstream_reused_total") == 9
    wait_for(lambda: upstream(aport) == {"idle": 1, "busy": 0}, 5, what="one idle upstream")
    assert metric(aport, "wsgate_upstream_idle_connections") == 1
    # The access lines say which requests rode a kept-alive connection.
    wait_for(lambda: g.log().count("upstream=reused") == 9, 5, what="nine reused access lines")
    assert g.log().count("upstream=new") == 1


def test_keepalive_zero_opens_a_connection_per_request_and_says_close(stack):
    fake = stack.http("origin")
    port, aport, g = gate_for(stack, fake, pool_kw={"keepalive": 0})
    for i in range(3):
        assert get(port, "/len") == (200, b"hello")
    reqs = fake.wait_requests(3)
    assert [h.get("connection") for _, h, _ in reqs] == ["close"] * 3
    assert fake.connections == 3
    assert metric(aport, "wsgate_upstream_reused_total") == 0
    assert upstream(aport) == {"idle": 0, "busy": 0}


def test_idle_connections_are_closed_after_upstream_idle_ms(stack):
    fake = stack.http("origin")
    port, aport, g = gate_for(stack, fake, timeouts={"upstream_idle_ms": 300})
    assert get(port, "/len") == (200, b"hello")
    t0 = time.monotonic()
    wait_for(lambda: upstream(aport)["idle"] == 1, 5, what="the connection parked")
    fake.wait_closed(1, timeout=5)  # wsgate closed it: the fake saw EOF
    assert time.monotonic() - t0 >= 0.2
    assert upstream(aport)["idle"] == 0
    # The next request opens a new one.
    assert get(port, "/len") == (200, b"hello")
    assert fake.connections == 2


def test_a_backend_closing_its_idle_connection_is_noticed_before_reuse(stack):
    # The backend's own keep-alive timeout is shorter than wsgate's.
    fake = stack.http("origin", idle_close_ms=200)
    port, aport, g = gate_for(stack, fake, timeouts={"upstream_idle_ms": 60000})
    assert get(port, "/a") == (200, b"/a")
    fake.wait_closed(1, timeout=5)
    wait_for(lambda: upstream(aport)["idle"] == 0, 5, what="wsgate dropped the closed connection")
    assert get(port, "/b") == (200, b"/b")
    assert fake.connections == 2
    assert metric(aport, "wsgate_upstream_retries_total") == 0


def test_an_idempotent_request_on_a_dead_kept_alive_connection_is_resent(stack):
    # Each backend connection takes one request and dies on the second,
    # without answering: the race of a backend closing an idle connection
    # while a request is on its way.
    fake = stack.http("origin", drop_nth=2)
    port, aport, g = gate_for(stack, fake)
    assert get(port, "/first") == (200, b"/first")
    wait_for(lambda: upstream(aport)["idle"] == 1, 5, what="the connection parked")
    assert get(port, "/second") == (200, b"/second")
    # Seen twice by the backend: on the dead connection and on a new one.
    lines = [r[0] for r in fake.wait_requests(3)]
    assert lines == ["GET /first HTTP/1.1", "GET /second HTTP/1.1", "GET /second HTTP/1.1"]
    assert fake.connections == 2
    assert metric(aport, "wsgate_upstream_retries_total") == 1
    assert "resending GET /second" in g.log()
    # A kept-alive connection's death is not the backend's failure.
    (be,) = status(aport)["pools"]["web"]["backends"]
    assert be["state"] == "up" and be["failures"] == 0


def test_a_post_on_a_dead_kept_alive_connection_is_not_resent(stack):
    fake = stack.http("origin", drop_nth=2)
    port, aport, g = gate_for(stack, fake)
    assert get(port, "/first") == (200, b"/first")
    wait_for(lambda: upstream(aport)["idle"] == 1, 5, what="the connection parked")
    # The backend reads the POST and dies: resending could apply it twice.
    # (The probe before a POST finds the connection alive: it dies only
    # once the request is in.)
    st, body = get(port, "/echo", method="POST", body=b"pay once",
                   headers={"Accept": "application/json"})
    assert st == 502, body
    assert json.loads(body)["status"] == 502
    posts = [r for r in fake.wait_requests(2) if r[0].startswith("POST")]
    assert len(posts) == 1 and posts[0][2] == b"pay once"
    assert metric(aport, "wsgate_upstream_retries_total") == 0


def test_a_response_with_connection_close_or_extra_bytes_is_not_reused(stack):
    fake = stack.http("origin")
    port, aport, g = gate_for(stack, fake)
    # /close answers "Connection: close" and closes; /eof is delimited by
    # the close: neither connection can come back.
    assert get(port, "/close") == (200, b"ok")
    assert get(port, "/eof") == (200, b"to the end")
    assert get(port, "/len") == (200, b"hello")
    assert fake.connections == 3
    assert metric(aport, "wsgate_upstream_reused_total") == 0


def test_at_most_keepalive_connections_are_kept_per_backend(stack):
    fake = stack.http("origin")
    port, aport, g = gate_for(stack, fake, pool_kw={"keepalive": 2})
    # Five long polls at once need five backend connections...
    res = [None] * 5
    ths = [threading.Thread(target=lambda i=i: res.__setitem__(i, get(port, "/wait?ms=1500")))
           for i in range(5)]
    for t in ths:
        t.start()
    wait_for(lambda: upstream(aport)["busy"] == 5, 5, what="five exchanges in flight")
    for t in ths:
        t.join(10)
    assert res == [(200, b"late")] * 5
    # ...and afterwards only two stay.
    wait_for(lambda: upstream(aport) == {"idle": 2, "busy": 0}, 5, what="two kept")
    fake.wait_closed(3, timeout=5)
    assert fake.connections == 5


def test_pipelined_requests_reuse_the_same_backend_connection(stack):
    fake = stack.http("origin")
    port, aport, g = gate_for(stack, fake)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"".join(f"GET /p{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(5)) +
              b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    assert data.count(b"HTTP/1.1 200") == 6
    assert fake.connections == 1 and fake.per_conn == [6]


def test_shutdown_closes_idle_connections_at_once(stack):
    fake = stack.http("origin")
    port, aport, g = gate_for(stack, fake, timeouts={"upstream_idle_ms": 600000,
                                                     "drain_ms": 20000})
    assert get(port, "/len") == (200, b"hello")
    wait_for(lambda: upstream(aport)["idle"] == 1, 5, what="the connection parked")
    t0 = time.monotonic()
    g.signal(signal.SIGTERM)
    assert g.p.wait(10) == 0
    # Idle connections hold nothing up: far below drain_ms.
    assert time.monotonic() - t0 < 5
    fake.wait_closed(1, timeout=5)


# ---- SSE heartbeat (SPEC §9) -------------------------------------------------------------

def sse_body(port, path):
    h = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        h.request("GET", path, headers={"Accept": "text/event-stream"})
        r = h.getresponse()
        assert r.status == 200
        return r.read().decode()
    finally:
        h.close()


BEAT = ": wsgate\n\n"


def comments_only_between_events(body):
    for i in range(len(body)):
        if body.startswith(BEAT, i):
            assert i == 0 or body[:i].endswith("\n\n"), body
    return body.count(BEAT)


def test_a_silent_sse_stream_gets_comment_heartbeats_between_events(stack):
    fake = stack.http("origin")
    port, aport, g = gate_for(stack, fake, heartbeat={"interval_ms": 100})
    n0 = metric(aport, "wsgate_sse_heartbeats_total")
    # Up to the close, and chunked: both can take a comment.
    for path in ("/sse?n=3&ms=450", "/sse-chunked?n=3&ms=450"):
        body = sse_body(port, path)
        beats = comments_only_between_events(body)
        assert beats >= 3, (path, body)
        events = body.replace(BEAT, "")
        assert [ln.split()[1] for ln in events.split("\n\n") if ln] == ["0", "1", "2"], body
    assert metric(aport, "wsgate_sse_heartbeats_total") >= n0 + 6


def test_no_heartbeat_inside_an_event(stack):
    fake = stack.http("origin")
    port, aport, g = gate_for(stack, fake, heartbeat={"interval_ms": 100})
    # Silent only in the middle of each event: never a place for a comment.
    body = sse_body(port, "/sse-chunked?n=2&ms=450&split=1")
    assert body == "data: 0\n\ndata: 1\n\n", body
    assert metric(aport, "wsgate_sse_heartbeats_total") == 0


def test_no_heartbeat_when_heartbeats_are_off(stack):
    fake = stack.http("origin")
    port, aport, g = gate_for(stack, fake, heartbeat={"interval_ms": 0})
    body = sse_body(port, "/sse-chunked?n=2&ms=300")
    assert body == "data: 0\n\ndata: 1\n\n", body


def test_a_long_poll_held_30_s_is_answered_and_its_connection_reused(stack):
    fake = stack.http("origin")
    port, aport, g = gate_for(stack, fake, timeouts={"response_idle_ms": 40000})
    t0 = time.monotonic()
    h = http.client.HTTPConnection("127.0.0.1", port, timeout=40)
    h.request("GET", "/wait?ms=30000")
    r = h.getresponse()
    assert (r.status, r.read()) == (200, b"late")
    assert time.monotonic() - t0 >= 29.5
    # The same client connection and the same backend connection go on.
    h.request("GET", "/after")
    r = h.getresponse()
    assert (r.status, r.read()) == (200, b"/after")
    h.close()
    assert fake.connections == 1


def test_a_get_whose_backend_closes_without_answering_goes_to_the_next_backend(stack, tmp_path):
    bad = stack.http("bad", drop_nth=1)   # reads every request, answers none
    good = stack.http("good")
    port, aport = free_port(), free_port()
    cfg = make_config(port, {"web": pool([bad.address, good.address], key="query:user")},
                      heartbeat={"interval_ms": 0}, admin={"bind": f"127.0.0.1:{aport}"})
    land = which(cfg, [f"u{i}" for i in range(40)], tmp_path, pool="web")
    user = next(u for u, a in land.items() if a == bad.address)
    other = next(u for u, a in land.items() if a == bad.address and u != user)
    g = stack.gate(cfg)
    assert get(port, f"/x?user={user}") == (200, b"/x")
    assert [r[0] for r in bad.wait_requests(1)] == [f"GET /x?user={user} HTTP/1.1"]
    assert [r[0] for r in good.wait_requests(1)] == [f"GET /x?user={user} HTTP/1.1"]
    assert metric(aport, "wsgate_upstream_retries_total") == 1
    assert "closed without answering GET /x: resending it to the next backend" in g.log()
    # A POST is not resent: it may have been applied.
    st, _ = get(port, f"/echo?user={other}", method="POST", body=b"once")
    assert st == 502
    assert len(bad.wait_requests(2)) == 2 and len(good.requests) == 1
