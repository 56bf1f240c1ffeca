"""Issue 8: frames split across reads, close validation, RSV bits, frames
after a close, mid-frame loss, and request heads wsgate must refuse.

The split tests send the first part of a frame, pause, and send the rest: the
pause is the stimulus (wsgate must see two reads), not a wait for a result,
and a test still checks the right thing if the two parts ever coalesce. Each
test ends by proving the process alive and relaying (a new echo round trip).
"""

import socket
import struct
import time
import uuid

import pytest

from conftest import free_port, make_config, pool
from wsg_raw import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, Closed,
                     close_payload, connect, encode_frame, http_exchange, upgrade_request,
                     ws_connect)

ZERO = b"\0\0\0\0"
# A ping whose payload is a text frame and a header announcing 2^62 bytes:
# if the ping's header were dropped, these bytes would become frames.
SMUGGLE = b"\x81\x08smuggled\x82\x7f\x40" + b"\0" * 7
SPLIT_PAUSE = 0.05


@pytest.fixture(scope="module")
def env(mstack):
    fake = mstack.fake("split-fake")
    port = free_port()
    cfg = make_config(port, {"main": pool([fake.address])},
                      timeouts={"drain_ms": 5000},
                      heartbeat={"interval_ms": 0})
    gate = mstack.gate(cfg)
    return {"port": port, "fake": fake, "gate": gate}


def conn(env, query=""):
    t = uuid.uuid4().hex[:12]
    c, _ = ws_connect(env["port"], f"/?id={t}{query}")
    return c, env["fake"].wait_conn(t)


def masked0(opcode, payload, fin=True, rsv=0):
    """A client frame with mask key 0, so its wire bytes are its payload."""
    return encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=True, mask_key=ZERO)


def send_split(c, data, at):
    c.send(data[:at])
    time.sleep(SPLIT_PAUSE)
    c.send(data[at:])


def assert_alive(env):
    assert env["gate"].alive, "wsgate died"
    c, _ = conn(env)
    try:
        c.send_frame(OP_TEXT, b"foo")
        assert c.read_message() == (OP_TEXT, b"bar")
    finally:
        c.close()


def read_close(c, timeout=5.0):
    c.settimeout(timeout)
    while True:
        f = c.read_frame()
        if f.opcode == OP_CLOSE:
            return f


# ---- the crash and the smuggling, client to backend ---------------------------------

def test_close_split_after_its_header_from_the_client(env):
    c, rec = conn(env)
    try:
        send_split(c, bytes.fromhex("888200000000") + bytes.fromhex("03e8"), 6)
        assert read_close(c).close_code == 1000  # the fake's answer
        assert rec.wait_close().close_code == 1000
    finally:
        c.close()
    assert_alive(env)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG])
def test_control_frame_payload_is_never_taken_for_frames(env, opcode):
    c, rec = conn(env)
    try:
        send_split(c, masked0(opcode, SMUGGLE), 6)
        c.send_frame(OP_TEXT, b"after")
        assert c.read_message() == (OP_TEXT, b"after")
        got = [(f.opcode, f.payload) for f in rec.frames]
        # exactly the control frame, whole, then the text frame
        assert got == [(opcode, SMUGGLE), (OP_TEXT, b"after")], got
    finally:
        c.close()
    assert_alive(env)


def test_ping_split_everywhere_reaches_the_backend_whole(env):
    frame = masked0(OP_PING, b"0123456789")
    for at in range(1, len(frame)):
        c, rec = conn(env)
        try:
            send_split(c, frame, at)
            f = c.read_frame()
            assert (f.opcode, f.payload) == (OP_PONG, b"0123456789"), at
            assert [(g.opcode, g.payload) for g in rec.frames] == [(OP_PING, b"0123456789")]
        finally:
            c.close()
    assert_alive(env)


# ---- backend to client -------------------------------------------------------------

def test_close_split_after_its_header_from_the_backend(env):
    c, rec = conn(env)
    try:
        c.send_frame(OP_TEXT, b"raw:8802,03e8")
        assert read_close(c).close_code == 1000
    finally:
        c.close()
    assert_alive(env)


def test_backend_ping_split_after_its_header_is_relayed_whole(env):
    c, rec = conn(env)
    try:
        head = bytes([0x89, len(SMUGGLE)])
        c.send_frame(OP_TEXT, f"raw:{head.hex()},{SMUGGLE.hex()}".encode())
        c.send_frame(OP_TEXT, b"foo")
        f = c.read_frame()
        assert (f.opcode, f.payload) == (OP_PING, SMUGGLE)
        assert c.read_message() == (OP_TEXT, b"bar")  # nothing smuggled in between
    finally:
        c.close()
    assert_alive(env)


# ---- close validation --------------------------------------------------------------

BAD_CLOSES = [(b"\x03", 1002)] + [(struct.pack("!H", code) + b"x", 1002)
                                  for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999,
                                               5000, 65535)] + [(b"\x03\xe8\xff\xfe", 1007)]


@pytest.mark.parametrize("payload,code", BAD_CLOSES, ids=lambda v: v.hex() if isinstance(v, bytes) else str(v))
def test_invalid_close_from_the_client_fails_the_connection(env, payload, code):
    c, rec = conn(env)
    try:
        c.send_frame(OP_CLOSE, payload)
        assert read_close(c).close_code == code
        f = rec.wait_close()
        assert f.close_code == code and f.payload != payload  # wsgate's, not the client's
    finally:
        c.close()


@pytest.mark.parametrize("payload,code", [(b"\x03\xed", 1002), (b"\x03\xe8\xc0\x80", 1007)])
def test_invalid_close_from_the_backend_never_reaches_the_client(env, payload, code):
    c, rec = conn(env)
    try:
        raw = encode_frame(OP_CLOSE, payload, mask=False)
        c.send_frame(OP_TEXT, f"raw:{raw.hex()}".encode())
        assert read_close(c).close_code == code
        assert rec.wait_close().close_code == code
    finally:
        c.close()
    assert_alive(env)


def test_valid_close_codes_pass(env):
    for code in (1000, 1003, 1014, 3000, 4999):
        c, rec = conn(env)
        try:
            c.send_frame(OP_CLOSE, close_payload(code, "bye \u00e9"))
            f = read_close(c)
            assert (f.close_code, f.close_reason) == (code, "bye \u00e9")
        finally:
            c.close()


# ---- RSV bits and frames after a close ----------------------------------------------

@pytest.mark.parametrize("ext,frames,ok", [
    ("", [(OP_TEXT, True, 4)], False),
    ("", [(OP_TEXT, True, 2)], False),
    ("", [(OP_PING, True, 1)], False),
    ("permessage-deflate", [(OP_TEXT, True, 4)], True),
    ("permessage-deflate", [(OP_TEXT, False, 4), (OP_CONT, True, 4)], False),
    ("permessage-deflate", [(OP_PING, True, 4)], False),
    ("permessage-deflate", [(OP_BINARY, True, 1)], False),
    ("x-unknown-ext", [(OP_TEXT, True, 2)], True),
])
def test_rsv_bits_checked_against_the_negotiated_extensions(env, ext, frames, ok):
    c, rec = conn(env, f"&ext={ext}" if ext else "")
    try:
        for opcode, fin, rsv in frames:
            c.send_frame(opcode, b"r", fin=fin, rsv=rsv)
        if ok:
            f = c.read_frame()
            assert f.rsv == frames[0][2]
        else:
            assert read_close(c).close_code == 1002
            assert rec.wait_close().close_code == 1002
    finally:
        c.close()


def test_nothing_after_a_close_frame_is_forwarded(env):
    c, rec = conn(env)
    try:
        c.send(encode_frame(OP_CLOSE, close_payload(1000)) + encode_frame(OP_TEXT, b"late")
               + encode_frame(OP_PING, b"late"))
        assert read_close(c).close_code == 1000
        assert rec.eof.wait(10)
        assert rec.opcodes() == [OP_CLOSE], rec.frames
    finally:
        c.close()


# ---- mid-frame loss ------------------------------------------------------------------

def test_backend_lost_mid_frame_ends_the_client_at_once(env):
    c, rec = conn(env)
    try:
        c.send_frame(OP_TEXT, b"cut:1000:10")
        c.settimeout(5)
        head = c.read_exact(4)  # 82 7e 03 e8
        assert head == b"\x82\x7e\x03\xe8"
        t0 = time.monotonic()
        got = c.read_to_eof(timeout=5)
        took = time.monotonic() - t0
        assert len(got) <= 10  # the partial payload, and no close frame after it
        assert took < 1.0, f"client connection ended after {took:.2f} s"
    finally:
        c.close()
    assert_alive(env)
    wait_log(env, "backend lost mid-frame")


def test_client_lost_mid_frame_ends_the_backend_at_once(env):
    c, rec = conn(env, "&mode=sink")
    rec.resume.set()
    frame = encode_frame(OP_BINARY, b"\0" * 1000)
    c.send(frame[:20])
    time.sleep(SPLIT_PAUSE)
    t0 = time.monotonic()
    c.sock.shutdown(socket.SHUT_WR)
    assert rec.eof.wait(5)
    took = time.monotonic() - t0
    c.close()
    assert took < 1.0, f"backend connection ended after {took:.2f} s"
    assert OP_CLOSE not in rec.opcodes()
    assert_alive(env)


def wait_log(env, text, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in env["gate"].log():
            return
        time.sleep(0.02)
    raise AssertionError(f"no log line with {text!r}")


# ---- request heads ---------------------------------------------------------------------

@pytest.mark.parametrize("host", ["a b", "user@127.0.0.1", "127.0.0.1:99999", "exa/mple",
                                  "[::1", "host:8x", "a%41"])
def test_invalid_host_gets_400(env, host):
    req, _ = upgrade_request("/", host=host)
    status, _, _, _ = http_exchange(env["port"], req)
    assert status == 400


@pytest.mark.parametrize("host", ["example.com", "example.com:8080", "[::1]:80", "127.0.0.1",
                                  "xn--bcher-kva.example"])
def test_valid_host_is_accepted(env, host):
    req, _ = upgrade_request("/", host=host)
    status, _, _, _ = http_exchange(env["port"], req)
    assert status == 101


def test_fragment_in_target_gets_400(env):
    req, _ = upgrade_request("/chat#frag", host="x")
    assert http_exchange(env["port"], req)[0] == 400


def test_repeated_websocket_version_gets_400(env):
    req, _ = upgrade_request("/", host="x", headers=[("Sec-WebSocket-Version", "13"),
                                                      ("Sec-WebSocket-Version", "13")])
    assert req.count(b"Sec-WebSocket-Version") == 2
    assert http_exchange(env["port"], req)[0] == 400
