"""Plain HTTP at shutdown (SPEC §8, §9): an exchange in flight finishes within
drain_ms and its client connection closes after it; one that takes longer is
cut at drain_ms; an SSE stream, which never finishes, ends at once between
two events; a kept-alive connection between requests closes quietly."""
import http.client
import signal
import socket
import threading
import time

from conftest import free_port, make_config, pool
from wsg_raw import Conn


def gate_for(stack, fake, drain_ms):
    port = free_port()
    cfg = make_config(port, {"web": pool([fake.address])}, heartbeat={"interval_ms": 100},
                      timeouts={"drain_ms": drain_ms, "response_idle_ms": 60000})
    return port, stack.gate(cfg)


def in_background(fn):
    out = {}

    def run():
        try:
            out["result"] = fn()
        except Exception as e:  # reported by the test
            out["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_an_exchange_in_flight_finishes_and_its_connection_closes(stack):
    fake = stack.http("origin")
    port, g = gate_for(stack, fake, drain_ms=8000)

    def poll():
        h = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        h.request("GET", "/wait?ms=1500")
        r = h.getresponse()
        return r.status, r.read(), r.getheader("Connection")
    t, out = in_background(poll)
    fake.wait_requests(1)
    t0 = time.monotonic()
    g.signal(signal.SIGTERM)
    t.join(10)
    assert out.get("result") == (200, b"late", "close"), out
    assert g.p.wait(10) == 0
    # It waited for the answer, not for drain_ms.
    assert 1.0 <= time.monotonic() - t0 < 6


def test_an_exchange_longer_than_drain_ms_is_cut(stack):
    fake = stack.http("origin")
    port, g = gate_for(stack, fake, drain_ms=500)
    c = Conn(socket.create_connection(("127.0.0.1", port)), timeout=10)
    c.send(b"GET /wait?ms=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
    fake.wait_requests(1)
    t0 = time.monotonic()
    g.signal(signal.SIGTERM)
    c.settimeout(5)
    got = bytes(c.buf) + c.sock.recv(65536)
    assert got == b"", got  # closed without an answer
    assert time.monotonic() - t0 < 3
    assert g.p.wait(10) == 0
    assert time.monotonic() - t0 < 4
    assert "exchange not complete within drain_ms" in g.log()


def test_an_sse_stream_ends_at_once_between_two_events(stack):
    fake = stack.http("origin")
    port, g = gate_for(stack, fake, drain_ms=20000)
    c = Conn(socket.create_connection(("127.0.0.1", port)), timeout=10)
    c.send(b"GET /sse-chunked?n=100&ms=200 HTTP/1.1\r\nHost: x\r\n"
           b"Accept: text/event-stream\r\n\r\n")
    status, headers, _ = c.read_http_head()
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    c.read_until(b"data: 0\n\n\r\n")  # the first event's chunk
    t0 = time.monotonic()
    g.signal(signal.SIGTERM)
    rest = bytes(c.buf)
    c.settimeout(5)
    while True:
        chunk = c.sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    c.close()  # as a browser does at EOF: wsgate waits for it (its lingering close)
    # What came after the first event: whole events (and heartbeats) only,
    # then the last chunk: the client sees a complete message.
    assert rest.endswith(b"\r\n0\r\n\r\n") or rest == b"0\r\n\r\n", rest[-40:]
    assert g.p.wait(10) == 0
    assert time.monotonic() - t0 < 3  # far below drain_ms


def test_a_kept_alive_connection_between_requests_closes_quietly(stack):
    fake = stack.http("origin")
    port, g = gate_for(stack, fake, drain_ms=20000)
    c = Conn(socket.create_connection(("127.0.0.1", port)), timeout=10)
    c.send(b"GET /len HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.read_response()[0] == 200
    t0 = time.monotonic()
    g.signal(signal.SIGTERM)
    c.settimeout(5)
    assert bytes(c.buf) + c.sock.recv(65536) == b""  # no answer to a request it never sent
    assert g.p.wait(10) == 0
    assert time.monotonic() - t0 < 3
