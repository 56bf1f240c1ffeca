"""A small DNS server for the DNS discovery tests (SPEC §12), standard
library only: UDP on a loopback port, A records from a dict the test
changes while it runs.

    dns = DnsServer({"app.wsgate.test": ["127.0.0.2", "127.0.0.3"]}, ttl=300)
    dns.records["app.wsgate.test"].append("127.0.0.4")
    dns.mode = "servfail"   # or "timeout" (no answer), "nxdomain", "ok"
    dns.queries("app.wsgate.test")   # A queries answered or dropped so far

A known name's AAAA query gets an empty NOERROR answer (no IPv6 address);
an unknown name gets NXDOMAIN. Answers fit one UDP datagram for the few
records a test holds (no truncation, so no TCP).
"""

import socket
import struct
import threading

QTYPE_A = 1
QTYPE_AAAA = 28
RCODE = {"ok": 0, "servfail": 2, "nxdomain": 3}


def _parse_question(msg):
    """(id, flags, name, qtype, question bytes) of a query, or None."""
    if len(msg) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", msg[:6])
    if qdcount != 1 or flags & 0x8000:
        return None
    labels, i = [], 12
    while i < len(msg):
        n = msg[i]
        i += 1
        if n == 0:
            break
        if n & 0xC0 or i + n > len(msg):
            return None
        labels.append(msg[i:i + n].decode("ascii", "replace"))
        i += n
    if i + 4 > len(msg):
        return None
    qtype, _qclass = struct.unpack("!HH", msg[i:i + 4])
    return qid, flags, ".".join(labels).lower(), qtype, msg[12:i + 4]


class DnsServer:
    def __init__(self, records=None, ttl=300, host="127.0.0.1"):
        self.records = {k.lower(): list(v) for k, v in (records or {}).items()}
        self.ttl = ttl
        self.mode = "ok"
        self._lock = threading.Lock()
        self._counts = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.address = f"{host}:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def queries(self, name):
        with self._lock:
            return self._counts.get(name.lower(), 0)

    def _answer(self, q):
        qid, flags, name, qtype, question = q
        if qtype == QTYPE_A:
            with self._lock:
                self._counts[name] = self._counts.get(name, 0) + 1
        mode = self.mode
        if mode == "timeout":
            return None
        known = name in self.records
        rcode = RCODE[mode] if mode != "ok" else (0 if known else 3)
        addrs = self.records.get(name, []) if rcode == 0 and qtype == QTYPE_A else []
        # QR, the query's RD, RA; authoritative for the names it knows.
        out_flags = 0x8000 | (flags & 0x0100) | 0x0080 | (0x0400 if known else 0) | rcode
        out = struct.pack("!HHHHHH", qid, out_flags, 1, len(addrs), 0, 0) + question
        for a in addrs:
            out += struct.pack("!HHHIH", 0xC00C, QTYPE_A, 1, self.ttl, 4) + socket.inet_aton(a)
        return out

    def _serve(self):
        while not self._stop.is_set():
            try:
                msg, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            q = _parse_question(msg)
            if q is None:
                continue
            out = self._answer(q)
            if out is not None:
                self.sock.sendto(out, peer)

    def stop(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
