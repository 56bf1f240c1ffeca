"""Raw RFC 6455 helpers for the end-to-end tests: a frame codec and a blocking
socket client/connection wrapper.

The websockets library hides exactly what some tests must see (malformed
requests, unmasked frames, the bytes of a close frame, who closed TCP first),
so those tests speak the protocol by hand with these helpers. Written for the
tests; deliberately small and strict.
"""

import base64
import hashlib
import os
import socket
import struct
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA


def accept_for(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    if isinstance(key, str):
        key = key.encode()
    return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()


def new_key():
    return base64.b64encode(os.urandom(16)).decode()


def apply_mask(data, mask):
    """XOR with a 4-byte mask, using big integers so that megabytes stay fast."""
    n = len(data)
    if n == 0:
        return b""
    reps = mask * (n // 4 + 1)
    v = int.from_bytes(data, "big") ^ int.from_bytes(reps[:n], "big")
    return v.to_bytes(n, "big")


def encode_frame(opcode, payload=b"", fin=True, mask=True, rsv=0, mask_key=None,
                 length=None):
    """One frame. <length> overrides the header's length field (for lying
    headers); <rsv> is the 3-bit RSV value (RSV1 = 4)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n <= 0xFFFF:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask:
        key = mask_key if mask_key is not None else os.urandom(4)
        return head + key + apply_mask(payload, key)
    return head + payload


def close_payload(code, reason=""):
    return struct.pack("!H", code) + reason.encode()


class Frame:
    __slots__ = ("fin", "rsv", "opcode", "masked", "payload", "mask_key")

    def __init__(self, fin, rsv, opcode, masked, payload, mask_key=None):
        self.fin, self.rsv, self.opcode, self.masked, self.payload = (
            fin, rsv, opcode, masked, payload)
        self.mask_key = mask_key

    @property
    def close_code(self):
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        return struct.unpack("!H", self.payload[:2])[0]

    @property
    def close_reason(self):
        return self.payload[2:].decode("utf-8", "replace")

    def __repr__(self):
        p = self.payload if len(self.payload) <= 40 else self.payload[:40] + b"..."
        return (f"Frame(op={self.opcode:#x} fin={self.fin} rsv={self.rsv} "
                f"masked={self.masked} len={len(self.payload)} {p!r})")


class Closed(Exception):
    """The peer ended the TCP connection (EOF or reset)."""


class Conn:
    """A blocking socket with a read buffer: exact reads, HTTP heads, frames.
    Every read is bounded by the socket timeout (socket.timeout on expiry)."""

    def __init__(self, sock, timeout=5.0):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = bytearray()

    def settimeout(self, t):
        self.sock.settimeout(t)

    def _fill(self, size=262144):
        try:
            chunk = self.sock.recv(size)
        except ConnectionResetError as e:
            raise Closed("reset") from e
        if not chunk:
            raise Closed("eof")
        self.buf += chunk

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill(max(65536, n - len(self.buf)))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_until(self, marker, limit=1 << 20):
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out = bytes(self.buf[:i + len(marker)])
                del self.buf[:i + len(marker)]
                return out
            if len(self.buf) > limit:
                raise ValueError("no %r within %d bytes" % (marker, limit))
            self._fill()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def send_frame(self, opcode, payload=b"", **kw):
        self.send(encode_frame(opcode, payload, **kw))

    def read_frame(self):
        b0, b1 = self.read_exact(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.read_exact(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.read_exact(8))[0]
        masked = bool(b1 & 0x80)
        key = self.read_exact(4) if masked else None
        payload = self.read_exact(n)
        if masked:
            payload = apply_mask(payload, key)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, masked, payload, key)

    def read_message(self, skip_control=True):
        """Reassembles one data message; returns (opcode, payload)."""
        op, parts = None, []
        while True:
            f = self.read_frame()
            if f.opcode >= 0x8:
                if skip_control and f.opcode != OP_CLOSE:
                    continue
                return f.opcode, f.payload
            if op is None:
                op = f.opcode
            parts.append(f.payload)
            if f.fin:
                return op, b"".join(parts)

    def read_http_head(self):
        """Returns (status, headers {lower name: value, repeated joined by ', '},
        raw head bytes)."""
        raw = self.read_until(b"\r\n\r\n", limit=65536)
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = headers[name] + ", " + value if name in headers else value
        return status, headers, raw

    def read_response(self):
        """A full HTTP response: (status, headers, body, raw). The body is read
        by Content-Length, or up to EOF when there is none."""
        status, headers, raw = self.read_http_head()
        if "content-length" in headers:
            body = self.read_exact(int(headers["content-length"]))
        elif status in (101, 204, 304) or 100 <= status < 200:
            body = b""
        else:
            body = self.read_to_eof()
        return status, headers, body, raw

    def read_to_eof(self, timeout=None):
        """Everything until the peer closes (buffered bytes included)."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        while True:
            try:
                self._fill()
            except Closed:
                break
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def wait_closed(self, timeout=5.0):
        """Discards input until EOF/reset; returns the seconds it took. Raises
        socket.timeout if the peer keeps the connection open."""
        t0 = time.monotonic()
        self.sock.settimeout(timeout)
        self.buf.clear()
        while True:
            try:
                if not self.sock.recv(262144):
                    break
            except ConnectionResetError:
                break
        return time.monotonic() - t0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def connect(port, host="127.0.0.1", timeout=5.0, source=None, rcvbuf=None):
    """<rcvbuf> sets SO_RCVBUF before connecting (a small window for
    backpressure tests)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source:
        sock.bind((source, 0))
    try:
        sock.connect((host, port))
    except OSError:
        sock.close()
        raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Conn(sock, timeout)


def upgrade_request(path="/", host="127.0.0.1", key=None, headers=None, omit=(),
                    method="GET", version="HTTP/1.1"):
    """An Upgrade request head. <headers> (list of pairs or dict) are added;
    <omit> names default headers to leave out."""
    key = key or new_key()
    base = [("Host", host), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]
    base = [(k, v) for k, v in base if k not in omit]
    extra = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in extra}
    base = [(k, v) for k, v in base if k.lower() not in names]
    lines = [f"{method} {path} {version}"] + [f"{k}: {v}" for k, v in base + extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


def ws_connect(port, path="/", host=None, headers=None, early=b"", timeout=5.0,
               source=None, rcvbuf=None):
    """Raw client: handshake and check the 101. Returns (conn, headers)."""
    c = connect(port, timeout=timeout, source=source, rcvbuf=rcvbuf)
    req, key = upgrade_request(path, host or f"127.0.0.1:{port}", headers=headers)
    c.send(req + early)
    status, hdrs, raw = c.read_http_head()
    if status != 101:
        c.close()
        raise AssertionError(f"expected 101, got {raw!r}")
    assert hdrs.get("sec-websocket-accept") == accept_for(key), raw
    return c, hdrs


def http_exchange(port, data, timeout=5.0):
    """Sends raw bytes; returns (status, headers, body, raw_head) and checks
    nothing."""
    c = connect(port, timeout=timeout)
    try:
        c.send(data)
        return c.read_response()
    finally:
        c.close()
