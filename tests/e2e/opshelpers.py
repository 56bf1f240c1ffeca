"""Helpers for the operations tests (admin endpoint, health, drain, reload,
metrics): an admin HTTP client, /status lookups, a raw WebSocket client that
knows which backend it landed on, and a strict parser of the Prometheus
text exposition format 0.0.4 written for these tests (no client library is
packaged for Debian's python3 that parses it strictly enough).
"""

import http.client
import json
import math
import re
import subprocess
import time

from wsg_raw import OP_CLOSE, OP_TEXT, close_payload, ws_connect

# ---- where keys land ----------------------------------------------------------

def which(cfg, users, tmp, pool="p"):
    """{user: backend address} as `wsgate --which` computes it for <cfg> (a
    dict, written to <tmp>), so that a test can choose keys whose outcome is
    certain whatever its ports make of the ring."""
    from conftest import WSGATE_BIN
    path = tmp / "which.json"
    path.write_text(json.dumps(cfg))
    out = {}
    for u in users:
        r = subprocess.run([WSGATE_BIN, "--which", u, "-p", pool, "-c", str(path)],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        out[u] = r.stdout.strip()
    return out


# ---- admin client ----------------------------------------------------------


def admin(port, method, path, token=None, headers=None, body=None, timeout=5.0):
    """One request on a fresh connection: (status, {lower name: value}, body)."""
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def admin_json(port, method, path, token=None, **kw):
    st, hdrs, body = admin(port, method, path, token, **kw)
    assert hdrs.get("content-type", "").startswith("application/json"), (st, hdrs, body)
    return st, hdrs, json.loads(body)


def status(port, token=None):
    st, _, j = admin_json(port, "GET", "/status", token)
    assert st == 200, j
    return j


def backend(port, pool, address, token=None):
    """The /status entry of one backend."""
    for b in status(port, token)["pools"][pool]["backends"]:
        if b["address"] == address:
            return b
    raise AssertionError(f"no backend {address} in pool {pool}")


def wait_state(port, pool, address, state, timeout, token=None):
    """Polls /status until the backend is in <state>; returns the seconds it
    took and the entry."""
    t0 = time.monotonic()
    last = None
    while True:
        last = backend(port, pool, address, token)
        if last["state"] == state:
            return time.monotonic() - t0, last
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{address} not {state} after {timeout}s: {last}")
        time.sleep(0.02)


def wait_port_free(port, timeout=5.0):
    """Waits until nothing accepts on 127.0.0.1:<port>."""
    import socket
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket()
        try:
            s.settimeout(0.2)
            s.connect(("127.0.0.1", port))
        except OSError:
            return
        finally:
            s.close()
        if time.monotonic() > deadline:
            raise AssertionError(f"port {port} still accepting")
        time.sleep(0.02)


# ---- raw WebSocket clients ---------------------------------------------------


class Client:
    """A raw WebSocket client through wsgate that knows its backend (the C
    echo backend answers "whoami" with its name)."""

    def __init__(self, port, user, timeout=5.0):
        self.user = user
        self.conn, _ = ws_connect(port, f"/?user={user}", timeout=timeout)
        self.name = self.ask()

    def ask(self, text="whoami"):
        self.conn.send_frame(OP_TEXT, text)
        op, payload = self.conn.read_message()
        assert op == OP_TEXT, (op, payload)
        return payload.decode()

    def read_close(self):
        """Reads until a close frame; returns its code (answers it)."""
        while True:
            f = self.conn.read_frame()
            if f.opcode == OP_CLOSE:
                try:
                    self.conn.send_frame(OP_CLOSE, f.payload[:2])
                except OSError:
                    pass
                return f.close_code

    def close(self, code=1000):
        try:
            self.conn.send_frame(OP_CLOSE, close_payload(code))
            while self.conn.read_frame().opcode != OP_CLOSE:
                pass
            self.conn.wait_closed(5)
        except Exception:
            pass
        self.conn.close()


def landing(port, users):
    """{user: backend name} for one short connection per user."""
    out = {}
    for u in users:
        c = Client(port, u)
        out[u] = c.name
        c.close()
    return out


# ---- Prometheus text format 0.0.4 --------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_SAMPLE = re.compile(rf"^({_NAME})(\{{(.*)\}})? (\S+)( -?\d+)?$")
_LABEL_PAIR = re.compile(rf'({_LABEL})="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def _unescape(v):
    return re.sub(r'\\(.)', lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], v)


def _value(s):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    return float(s)


class Exposition:
    """A parsed, validated exposition. Raises AssertionError (with the line)
    on anything the format does not allow."""

    def __init__(self, text):
        assert text.endswith("\n"), "the exposition must end with a line feed"
        self.types = {}
        self.help = {}
        self.samples = {}      # (name, ((label, value), ...)) -> float
        self.order = []        # sample keys in text order
        families_done = set()
        current = None
        for n, line in enumerate(text.split("\n")[:-1], 1):
            where = f"line {n}: {line!r}"
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    name = parts[2]
                    assert re.fullmatch(_NAME, name), where
                    assert name not in families_done and name != current, \
                        f"HELP/TYPE after the samples of {name}: {where}"
                    if parts[1] == "HELP":
                        assert name not in self.help, f"second HELP: {where}"
                        self.help[name] = parts[3] if len(parts) > 3 else ""
                    else:
                        assert name not in self.types, f"second TYPE: {where}"
                        assert len(parts) == 4 and parts[3] in (
                            "counter", "gauge", "histogram", "summary", "untyped"), where
                        self.types[name] = parts[3]
                continue
            assert line.strip(), f"empty line: {where}"
            m = _SAMPLE.match(line)
            assert m, f"not a sample: {where}"
            name, labels_text, value = m.group(1), m.group(3), m.group(4)
            labels = []
            if labels_text:
                pos = 0
                while pos < len(labels_text):
                    lm = _LABEL_PAIR.match(labels_text, pos)
                    assert lm, f"bad label list: {where}"
                    labels.append((lm.group(1), _unescape(lm.group(2))))
                    pos = lm.end()
            fam = self.family_of(name)
            assert fam in self.types, f"sample before its TYPE: {where}"
            if fam != current:
                assert fam not in families_done, f"family {fam} split: {where}"
                if current is not None:
                    families_done.add(current)
                current = fam
            key = (name, tuple(sorted(labels)))
            assert key not in self.samples, f"duplicate sample: {where}"
            self.samples[key] = _value(value)
            self.order.append(key)
        for fam, t in self.types.items():
            if t == "counter":
                assert fam.endswith("_total"), f"counter {fam} without _total"
            if t == "histogram":
                self._check_histogram(fam)

    def family_of(self, name):
        if name in self.types:
            return name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[: -len(suffix)]
            if name.endswith(suffix) and self.types.get(base) in ("histogram", "summary"):
                return base
        return name

    def _check_histogram(self, fam):
        buckets = [(dict(k[1]), v) for k in self.order
                   for v in [self.samples[k]] if k[0] == fam + "_bucket"]
        assert buckets, f"histogram {fam} has no buckets"
        les = [_value(b["le"]) for b, _ in buckets]
        assert les == sorted(les), f"{fam}: le not ascending: {les}"
        assert les[-1] == math.inf, f"{fam}: last bucket is not +Inf"
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), f"{fam}: buckets not cumulative: {counts}"
        count = self.samples.get((fam + "_count", ()))
        assert count is not None and (fam + "_sum", ()) in self.samples, f"{fam}: no _sum/_count"
        assert counts[-1] == count, f"{fam}: +Inf bucket {counts[-1]} != _count {count}"

    def value(self, name, **labels):
        """The sample's value, or None when absent."""
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def names(self):
        return {k[0] for k in self.samples}


def scrape(port, token=None):
    st, hdrs, body = admin(port, "GET", "/metrics", token)
    assert st == 200, body
    ctype = hdrs.get("content-type", "")
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
    return Exposition(body.decode("utf-8"))
