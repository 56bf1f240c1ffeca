#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/<target>/.

Seeds are small valid (and a few invalid) inputs that reach every branch of
the parser quickly; libFuzzer mutates from them. Run it again after changing
a target's input layout; files are named seed-*, so inputs that fuzzing
found (crash-*, regress-*) are kept apart and never overwritten.
"""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def frame(op, payload=b"", fin=True, rsv=0, mask=None):
    b0 = (0x80 if fin else 0) | (rsv << 4) | op
    n = len(payload)
    m = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    return head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


def ws_seeds():
    k = b"\x37\xfa\x21\x3d"
    client = (frame(1, b"hello", mask=k) + frame(9, b"p", mask=k) +
              frame(2, b"\xa5" * 300, mask=k) + frame(1, b"ab", fin=False, mask=k) +
              frame(10, b"", mask=k) + frame(0, b"cd", mask=k) +
              frame(8, b"\x03\xe8bye", mask=k) + frame(1, b"after", mask=k))
    server = (frame(1, b"hi") + frame(2, b"\x00" * 70000)[:200] )
    yield "client-mixed", bytes([1, 0, 7]) + client
    yield "client-pmd", bytes([3, 2, 9]) + frame(1, b"z", rsv=4, mask=k) + frame(0, b"y", rsv=4, mask=k)
    yield "client-split-close", bytes([1, 0, 0]) + bytes.fromhex("888200000000") + b"\x03\xe8"
    yield "client-smuggle", bytes([1, 0, 3]) + frame(9, b"\x81\x08smuggled\x82\x7f\x40" + b"\0" * 7, mask=b"\0\0\0\0")
    yield "server-mixed", bytes([0, 2, 5]) + server + frame(9, b"x" * 125) + frame(8, b"")
    yield "server-bad-close", bytes([0, 0, 1]) + frame(8, b"\x03\xed") + frame(8, b"\x03\xe8\xff")
    yield "server-anyrsv", bytes([4, 0, 2]) + frame(1, b"r", rsv=7) + frame(9, b"", rsv=2)
    yield "server-long64", bytes([0, 0, 11]) + frame(2, b"\x01" * 66000)[:64]


def request(path="/chat?user=a", extra=(), method="GET", version="HTTP/1.1"):
    lines = [f"{method} {path} {version}", "Host: example.com:8080", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             "Sec-WebSocket-Version: 13"] + list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def request_seeds():
    yield "upgrade", b"\x05" + request()
    yield "upgrade-xff", b"\x11" + request(extra=["X-Forwarded-For: 10.0.0.1", "Cookie: a=b",
                                                   "Sec-WebSocket-Protocol: chat, bearer"])
    yield "plain-get", b"\x02" + b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"
    yield "post-chunked", b"\x03" + (b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     b"5\r\nhello\r\n0\r\n\r\n")
    yield "http10", b"\x04" + b"GET / HTTP/1.0\r\n\r\n"
    yield "bad-host", b"\x06" + request(extra=["Host: a b"])
    yield "fragment", b"\x07" + request(path="/x#frag")
    yield "early-frames", b"\x08" + request() + bytes.fromhex("818200000000") + b"hi"


def response_seeds():
    yield "101", b"\x01\x00" + (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                                + bytes.fromhex("8102") + b"hi")
    yield "403-length", b"\x02\x00" + b"HTTP/1.1 403 Forbidden\r\nContent-Length: 10\r\n\r\nforbidden\n"
    yield "200-chunked", b"\x03\x01" + (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                        b"4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\n")
    yield "200-eof", b"\x04\x01" + b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end"
    yield "100-then-200", b"\x05\x00" + (b"HTTP/1.1 100 Continue\r\n\r\n"
                                         b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    yield "204", b"\x06\x00" + b"HTTP/1.1 204 No Content\r\n\r\n"
    yield "bad-chunk", b"\x07\x01" + b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"


def proxy_seeds():
    yield "v1-tcp4", b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n"
    yield "v1-tcp6", b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"
    yield "v1-unknown", b"PROXY UNKNOWN\r\n"
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    addr4 = bytes([192, 0, 2, 1, 198, 51, 100, 1]) + struct.pack("!HH", 56324, 443)
    yield "v2-tcp4", sig + bytes([0x21, 0x11]) + struct.pack("!H", len(addr4)) + addr4
    addr6 = bytes(15) + b"\x01" + bytes(15) + b"\x02" + struct.pack("!HH", 1, 2)
    tlv = bytes([0x04]) + struct.pack("!H", 3) + b"abc"
    yield "v2-tcp6-tlv", sig + bytes([0x21, 0x21]) + struct.pack("!H", len(addr6) + len(tlv)) + addr6 + tlv
    yield "v2-local", sig + bytes([0x20, 0x00, 0x00, 0x00])
    yield "garbage", b"GET / HTTP/1.1\r\n\r\n"


def config_seeds():
    base = {
        "listeners": [{"name": "public", "bind": "127.0.0.1:8080"}],
        "pools": {"chat": {"backends": [{"address": "127.0.0.1:9001", "weight": 2},
                                         {"address": "127.0.0.1:9002"}],
                           "balance": {"key": "query:user", "fallback": "random"}}},
        "routes": [{"path_prefix": "/", "pool": "chat"}],
    }
    yield "minimal", json.dumps(base).encode()
    full = json.loads(json.dumps(base))
    full.update({"workers": 2, "admin": {"bind": "127.0.0.1:9100"},
                 "timeouts": {"handshake_ms": 5000, "idle_ms": 60000, "drain_ms": 10000},
                 "heartbeat": {"interval_ms": 20000, "timeout_ms": 10000},
                 "limits": {"max_connections": 1000, "max_frame_bytes": 1048576}})
    yield "full", json.dumps(full, indent=1).encode()
    yield "bad-type", b'{"listeners": "nope", "pools": {}}'
    yield "unknown-key", b'{"listeners": [{"name": "a", "bind": "127.0.0.1:1"}], "pools": {}, "bogus": 1}'
    for shipped in ("demo.json", "example.json"):
        with open(os.path.join(HERE, "..", "config", shipped), "rb") as f:
            yield "shipped-" + shipped[:-5], f.read()
    yield "truncated", json.dumps(base).encode()[:40]


TARGETS = {"ws_stream": ws_seeds, "http_request": request_seeds,
           "http_response": response_seeds, "proxy_proto": proxy_seeds,
           "config": config_seeds}


def main():
    for target, gen in TARGETS.items():
        d = os.path.join(HERE, target)
        os.makedirs(d, exist_ok=True)
        for name, data in gen():
            with open(os.path.join(d, f"seed-{name}"), "wb") as f:
                f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
