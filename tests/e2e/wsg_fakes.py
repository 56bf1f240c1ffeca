"""Python fake backends for the end-to-end tests.

FakeBackend is a raw, threaded WebSocket server that records everything it
receives (request head, every frame with its mask bit, EOF) and whose
behaviour is chosen per connection by the request's query string, so that one
fake behind one wsgate serves many tests:

  mode=echo (default)  101, then echo data frames unmasked, pong pings, answer
                       a close with the same close; text commands:
                         "foo"        -> "bar"
                         "die"        -> close TCP with no close frame
                         "masked"     -> send a MASKED text frame (illegal)
                         "big:N"      -> send one binary frame of N bytes
                         "stream:N:S" -> send N bytes in binary frames of S
                                         bytes, frame i = pattern(i, S)
                         "ping:P"     -> send a ping with payload P
                         "tick:N:MS"  -> send N text frames "tick-i", one every MS ms
                         "raw:H1,H2"  -> send the hex bytes H1, then H2... as separate
                                         writes 50 ms apart (split frames)
                         "cut:N:K"    -> send the header of an N-byte binary frame and K
                                         payload bytes, then close TCP (mid-frame loss)
  ext=VALUE            the 101 carries Sec-WebSocket-Extensions: VALUE
  proto=1              the 101 names the first Sec-WebSocket-Protocol offered
  mode=noclose         as echo, but never answers a close frame
  mode=linger          as echo, but after answering a close frame waits for
                       wsgate to end the TCP connection instead of ending it
  mode=sink            101, then read nothing until rec.resume is set; then
                       count data bytes (rec.sink_bytes) without echoing
  mode=403             answer 403 with a body instead of 101
  mode=badaccept       answer 101 with a wrong Sec-WebSocket-Accept
  mode=hdr101          101 carrying an extra header X-Backend-Extra: yes
  mode=silent          never answer the request

Tests find their connection by a unique id=... query parameter.

WsLibBackend runs a websockets (library) server in a thread, for behaviour
that should come from an independent implementation (subprotocol selection,
permessage-deflate).
"""

import asyncio
import socket
import struct
import threading
import time
import urllib.parse

import websockets

from wsg_raw import (OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, Closed, Conn,
                     accept_for, encode_frame)


def pattern(i, size):
    """Payload of frame i of a stream: recognisable and cheap to check."""
    word = struct.pack("!I", i & 0xFFFFFFFF)
    return (word * (size // 4 + 1))[:size]


class ConnRecord:
    """What one backend connection saw. Lists are appended by the connection
    thread; readers use the wait_* helpers (bounded)."""

    def __init__(self, peer):
        self.peer = peer
        self.request_line = None
        self.path = None
        self.query = {}
        self.headers = {}
        self.mode = None
        self.frames = []         # wsg_raw.Frame, in arrival order
        self.sent_bytes = 0      # data payload bytes sent by the stream command
        self.sink_bytes = 0
        self.sink_frames = 0
        self.sink_ok = True      # payload pattern intact in sink mode
        self.eof = threading.Event()   # TCP from wsgate ended
        self.resume = threading.Event()
        self.error = None
        self.cond = threading.Condition()

    def add_frame(self, f):
        with self.cond:
            self.frames.append(f)
            self.cond.notify_all()

    def wait_frame(self, pred, timeout=5.0, what="frame"):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for f in self.frames:
                    if pred(f):
                        return f
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"backend never got {what}; got {self.frames!r}")
                self.cond.wait(left)

    def wait_close(self, timeout=5.0):
        return self.wait_frame(lambda f: f.opcode == OP_CLOSE, timeout, "a close frame")

    def opcodes(self):
        with self.cond:
            return [f.opcode for f in self.frames]


class FakeBackend:
    def __init__(self, name="fake", port=0):
        self.name = name
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(512)
        self.lsock.settimeout(0.1)
        self.port = self.lsock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.records = []
        self.accepted = 0
        self.cond = threading.Condition()
        self.stopping = False
        self.socks = []
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self.acceptor.start()

    # -- public ---------------------------------------------------------

    def wait_conn(self, tag, timeout=5.0):
        """The record of the connection whose query has id=<tag>."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for r in self.records:
                    if r.query.get("id") == tag:
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"backend {self.name} never got a request id={tag}")
                self.cond.wait(left)

    def stop(self):
        self.stopping = True
        self.acceptor.join(5)
        self.lsock.close()
        with self.cond:
            for r in self.records:
                r.resume.set()
        for s in list(self.socks):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(5)
        for s in self.socks:
            s.close()

    # -- internals ------------------------------------------------------

    def _accept_loop(self):
        while not self.stopping:
            try:
                s, peer = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socks.append(s)
            rec = ConnRecord(peer)
            t = threading.Thread(target=self._serve, args=(s, rec), daemon=True)
            self.threads.append(t)
            t.start()

    def _publish(self, rec):
        with self.cond:
            self.records.append(rec)
            self.cond.notify_all()

    def _serve(self, s, rec):
        c = Conn(s, timeout=30)
        try:
            self._handle(c, rec)
        except (Closed, OSError, ValueError) as e:
            if not isinstance(e, Closed):
                rec.error = repr(e)
        finally:
            rec.eof.set()
            with rec.cond:
                rec.cond.notify_all()
            c.close()

    def _wait_eof(self, c, rec, timeout=30):
        try:
            c.wait_closed(timeout)
        except (socket.timeout, OSError):
            pass

    def _handle(self, c, rec):
        try:
            status, headers, raw = _read_request(c)
        except Closed:
            # A connection that never sends a request (a TCP health check, the
            # readiness probe): nothing to record.
            return
        rec.request_line, rec.headers = status, headers
        target = rec.request_line.split(" ")[1] if " " in rec.request_line else "/"
        u = urllib.parse.urlsplit(target)
        rec.path = u.path
        rec.query = dict(urllib.parse.parse_qsl(u.query))
        rec.mode = mode = rec.query.get("mode", "echo")
        self._publish(rec)

        if mode == "silent":
            self._wait_eof(c, rec)
            return
        if mode == "403":
            c.send(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
                   b"X-Backend: fake\r\nContent-Length: 10\r\n\r\nforbidden\n")
            self._wait_eof(c, rec)
            return
        key = headers.get("sec-websocket-key", "")
        if headers.get("upgrade", "").lower() != "websocket":
            # A plain HTTP health check.
            c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            self._wait_eof(c, rec)
            return
        accept = accept_for(key)
        if mode == "badaccept":
            accept = accept_for(key + "x")
        extra = "X-Backend-Extra: yes\r\n" if mode == "hdr101" else ""
        if rec.query.get("ext"):
            extra += f"Sec-WebSocket-Extensions: {rec.query['ext']}\r\n"
        if rec.query.get("proto") and headers.get("sec-websocket-protocol"):
            # Chooses the first protocol offered, as a server speaking it would.
            first = headers["sec-websocket-protocol"].split(",")[0].strip()
            extra += f"Sec-WebSocket-Protocol: {first}\r\n"
        c.send(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extra}\r\n")
               .encode())
        if mode == "badaccept":
            self._wait_eof(c, rec)
            return
        if mode == "sink":
            self._sink(c, rec)
            return
        self._echo(c, rec, answer_close=(mode != "noclose"), close_first=(mode != "linger"))

    def _echo(self, c, rec, answer_close, close_first=True):
        while True:
            f = c.read_frame()
            if f.opcode in (OP_TEXT, OP_BINARY, 0) and len(f.payload) > 65536:
                # Keep the record light for big frames.
                rec.add_frame(type(f)(f.fin, f.rsv, f.opcode, f.masked, f.payload[:16], f.mask_key))
            else:
                rec.add_frame(f)
            if f.opcode == OP_CLOSE:
                if answer_close:
                    # RFC 6455 §7.1.1: the server closes the TCP connection
                    # once the close handshake is done (_serve's finally).
                    c.send(encode_frame(OP_CLOSE, f.payload, mask=False))
                    if close_first:
                        return
                self._wait_eof(c, rec)
                return
            if f.opcode == OP_PING:
                c.send(encode_frame(OP_PONG, f.payload, mask=False))
                continue
            if f.opcode == OP_PONG:
                continue
            p = f.payload
            if f.opcode == OP_TEXT and f.fin:
                if p == b"foo":
                    c.send(encode_frame(OP_TEXT, b"bar", mask=False))
                    continue
                if p == b"die":
                    c.sock.shutdown(socket.SHUT_RDWR)
                    return
                if p == b"masked":
                    c.send(encode_frame(OP_TEXT, b"masked!", mask=True))
                    continue
                if p.startswith(b"big:"):
                    n = int(p[4:])
                    c.send(encode_frame(OP_BINARY, b"\x5a" * n, mask=False))
                    continue
                if p.startswith(b"ping:"):
                    c.send(encode_frame(OP_PING, p[5:], mask=False))
                    continue
                if p.startswith(b"tick:"):
                    _, count, ms = p.decode().split(":")
                    for i in range(int(count)):
                        time.sleep(int(ms) / 1000)
                        c.send(encode_frame(OP_TEXT, f"tick-{i}".encode(), mask=False))
                    continue
                if p.startswith(b"raw:"):
                    for i, part in enumerate(p[4:].decode().split(",")):
                        if i:
                            time.sleep(0.05)  # the stimulus: separate reads at wsgate
                        c.send(bytes.fromhex(part))
                    continue
                if p.startswith(b"cut:"):
                    _, total, k = p.decode().split(":")
                    head = encode_frame(OP_BINARY, b"\x00" * int(total), mask=False)
                    c.send(head[:len(head) - int(total) + int(k)])
                    c.sock.shutdown(socket.SHUT_RDWR)
                    return
                if p.startswith(b"stream:"):
                    _, total, size = p.decode().split(":")
                    self._stream(c, rec, int(total), int(size))
                    continue
            c.send(encode_frame(f.opcode, p, fin=f.fin, rsv=f.rsv, mask=False))

    def _stream(self, c, rec, total, size):
        i = 0
        while rec.sent_bytes < total:
            n = min(size, total - rec.sent_bytes)
            c.send(encode_frame(OP_BINARY, pattern(i, n), mask=False))
            rec.sent_bytes += n
            i += 1

    def _sink(self, c, rec):
        rec.resume.wait(60)
        while True:
            f = c.read_frame()
            if f.opcode == OP_CLOSE:
                rec.add_frame(f)
                c.send(encode_frame(OP_CLOSE, f.payload, mask=False))
                self._wait_eof(c, rec)
                return
            if f.opcode in (OP_BINARY, 0, OP_TEXT):
                if f.payload != pattern(rec.sink_frames, len(f.payload)):
                    rec.sink_ok = False
                rec.sink_frames += 1
                rec.sink_bytes += len(f.payload)


def _read_request(c):
    raw = c.read_until(b"\r\n\r\n", limit=65536)
    lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = headers[name] + ", " + value if name in headers else value
    return lines[0], headers, raw


class WsLibBackend:
    """A websockets library server in its own thread and event loop. <handler>
    is `async def handler(ws, path)`; requests (path, headers) are recorded."""

    def __init__(self, handler, **serve_kw):
        self.handler = handler
        self.serve_kw = serve_kw
        self.requests = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("websockets server did not start")
        self.address = f"127.0.0.1:{self.port}"

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def wrapped(ws, path):
            self.requests.append((path, dict((k.lower(), v)
                                             for k, v in ws.request_headers.raw_items())))
            await self.handler(ws, path)

        async def start():
            self.server = await websockets.serve(wrapped, "127.0.0.1", 0, **self.serve_kw)
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()
        self.loop.run_until_complete(self._close())
        self.loop.close()

    async def _close(self):
        self.server.close()
        await asyncio.wait_for(self.server.wait_closed(), 5)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class HttpFake:
    """A raw, threaded HTTP/1.1 origin server that records every request
    (head, headers, decoded body) and every accepted connection, and answers
    by path:

      /len            200 "hello" with Content-Length
      /chunked        200, body "abc" "defg" "" in chunks
      /eof            200, no length: "to the end", then close
      /echo           200, the request body back (Content-Length)
      /continue       100 Continue, then reads the body, then 200 with it
      /head           200 with "Content-Length: 5" (and the body, unless HEAD)
      /204, /304      no body
      /sse?n=N&ms=M   text/event-stream: N events "data: i", M ms apart, then close
      /big?mb=N       200 with N MiB of pattern() blocks (big_sent counts progress)
      /sse-chunked?n=N&ms=M&split=S  the same, chunked (split=1: each event in two
                      chunks with the pause between them), then the last chunk
      /sse-id?n=N     events with ids, from Last-Event-ID + 1, N per connection, then close
      /wait?ms=M      answers 200 "late" after M ms (a long poll)
      /silent         reads the request, never answers
      /smuggle        200 with both Content-Length and Transfer-Encoding
      /close          200 with a length, then closes its side
    Any other path: 200 with the path as the body. Keep-alive is honoured.

    For backend connection reuse: <idle_close_ms> closes a kept-alive
    connection that waited that long for its next request (as servers' own
    keep-alive timeouts do); <drop_nth> reads the Nth request of each
    connection and closes without answering (a server that closed an idle
    connection just as a request was on its way). <closed> counts ended
    connections, <per_conn> the requests each connection carried."""

    def __init__(self, name="http", port=0, idle_close_ms=None, drop_nth=None):
        self.name = name
        self.idle_close_ms = idle_close_ms
        self.drop_nth = drop_nth
        self.closed = 0
        self.per_conn = []
        self.big_sent = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.requests = []       # (request_line, headers dict lower-case, body bytes)
        self.connections = 0
        self.cond = threading.Condition()
        self.stopping = False
        self.threads = []
        self.socks = []
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self.threads.append(t)

    def wait_requests(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.name}: {len(self.requests)} requests, wanted {n}")
                self.cond.wait(left)
            return list(self.requests)

    def stop(self):
        self.stopping = True
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        self.sock.close()

    def _accept_loop(self):
        while not self.stopping:
            try:
                s, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.cond:
                self.connections += 1
            self.socks.append(s)
            t = threading.Thread(target=self._serve, args=(s,), daemon=True)
            t.start()

    def wait_closed(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.closed < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.name}: {self.closed} connections closed, "
                                         f"wanted {n}")
                self.cond.wait(left)

    def _serve(self, s):
        c = Conn(s, timeout=30)
        with self.cond:
            slot = len(self.per_conn)
            self.per_conn.append(0)
        try:
            while True:
                if self.idle_close_ms is not None and self.per_conn[slot] > 0:
                    c.settimeout(self.idle_close_ms / 1000)
                    if not c.buf:
                        c._fill()  # the next request's first bytes, or a timeout
                    c.settimeout(30)
                if not self._one(c, slot):
                    break
        except (Closed, OSError, ValueError):
            pass
        finally:
            c.close()
            with self.cond:
                self.closed += 1
                self.cond.notify_all()

    def _read_body(self, c, headers):
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size = int(c.read_until(b"\r\n")[:-2].split(b";")[0], 16)
                if size == 0:
                    c.read_until(b"\r\n")  # no trailers from wsgate's clients here
                    return body
                body += c.read_exact(size)
                c.read_exact(2)
        n = int(headers.get("content-length", "0") or 0)
        return c.read_exact(n) if n else b""

    def _one(self, c, slot=None):
        raw = c.read_until(b"\r\n\r\n")
        drop = False
        if slot is not None:
            with self.cond:
                self.per_conn[slot] += 1
                drop = self.per_conn[slot] == self.drop_nth
        lines = raw.decode("latin-1").split("\r\n")
        headers = {}
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                k = k.strip().lower()
                headers[k] = headers[k] + ", " + v.strip() if k in headers else v.strip()
        method, target = lines[0].split(" ")[:2]
        u = urllib.parse.urlsplit(target)
        q = dict(urllib.parse.parse_qsl(u.query))
        path = u.path
        body = b""
        if path == "/continue":
            c.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if path != "/silent":
            body = self._read_body(c, headers)
        with self.cond:
            self.requests.append((lines[0], headers, body))
            self.cond.notify_all()
        if drop:
            return False
        keep = headers.get("connection", "").lower() != "close"

        def reply(status, extra, payload):
            c.send((f"HTTP/1.1 {status}\r\n{extra}").encode() + b"\r\n" +
                   (b"" if method == "HEAD" else payload))

        if path == "/len":
            reply("200 OK", "Content-Length: 5\r\nX-Origin: fake\r\n", b"hello")
        elif path == "/chunked":
            reply("200 OK", "Transfer-Encoding: chunked\r\n",
                  b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        elif path == "/eof":
            reply("200 OK", "Content-Type: text/plain\r\n", b"to the end")
            return False
        elif path in ("/echo", "/continue"):
            reply("200 OK", f"Content-Length: {len(body)}\r\n", body)
        elif path == "/head":
            reply("200 OK", "Content-Length: 5\r\n", b"12345")
        elif path == "/204":
            reply("204 No Content", "", b"")
        elif path == "/304":
            reply("304 Not Modified", "ETag: \"x\"\r\n", b"")
        elif path == "/sse":
            c.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                   b"Cache-Control: no-cache\r\n\r\n")
            for i in range(int(q.get("n", "3"))):
                time.sleep(int(q.get("ms", "100")) / 1000)  # the stream's own pace
                c.send(f"data: {i} {time.monotonic():.6f}\n\n".encode())
            return False
        elif path == "/big":
            # MB MiB of pattern() blocks with a length; big_sent follows the
            # progress (the socket blocks when nobody reads).
            mb = int(q.get("mb", "1"))
            c.send(f"HTTP/1.1 200 OK\r\nContent-Length: {mb << 20}\r\n\r\n".encode())
            for i in range(mb):
                c.send(pattern(i, 1 << 20))
                with self.cond:
                    self.big_sent += 1 << 20
            return keep
        elif path == "/sse-chunked":
            # Chunked events; with split=1 each event is sent in two chunks
            # with the pause between them (the backend silent mid-event).
            c.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n")
            pause = int(q.get("ms", "100")) / 1000

            def chunk(data):
                c.send(b"%x\r\n%s\r\n" % (len(data), data))
            for i in range(int(q.get("n", "3"))):
                ev = f"data: {i}\n\n".encode()
                if q.get("split") == "1":
                    chunk(ev[:4])
                    time.sleep(pause)  # silent inside an event
                    chunk(ev[4:])
                else:
                    time.sleep(pause)
                    chunk(ev)
            c.send(b"0\r\n\r\n")
            return keep
        elif path == "/sse-id":
            c.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                   b"Cache-Control: no-cache\r\n\r\nretry: 50\n\n")
            start = int(headers.get("last-event-id", "-1")) + 1
            for i in range(start, start + int(q.get("n", "3"))):
                c.send(f"id: {i}\ndata: event {i}\n\n".encode())
            return False
        elif path == "/wait":
            time.sleep(int(q.get("ms", "100")) / 1000)  # a long poll's wait
            reply("200 OK", "Content-Length: 4\r\n", b"late")
        elif path == "/silent":
            c.wait_closed(60)
            return False
        elif path == "/smuggle":
            reply("200 OK", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"hello")
        elif path == "/close":
            reply("200 OK", "Content-Length: 2\r\nConnection: close\r\n", b"ok")
            return False
        else:
            reply("200 OK", f"Content-Length: {len(path)}\r\n", path.encode())
        return keep
