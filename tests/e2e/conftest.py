"""Fixtures for wsgate's end-to-end tests.

They start the real `wsgate` (env WSGATE_BIN, default build/wsgate) with a
generated JSON configuration on free loopback ports, the C echo backend (env
WSGATE_ECHO_BIN, default build/bench/echo_backend) and python fake backends
(wsg_fakes.py), and always stop and reap them, also when a test fails. Every
wait polls a condition under a bound. At teardown the captured stderr of each
process is scanned for sanitizer reports, so that the ASan/UBSan run of this
suite fails on memory errors and leaks.
"""

import asyncio
import copy
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websockets

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from wsg_fakes import FakeBackend, HttpFake, WsLibBackend  # noqa: E402

ROOT = HERE.parents[1]
WSGATE_BIN = os.environ.get("WSGATE_BIN") or str(ROOT / "build" / "wsgate")
ECHO_BIN = os.environ.get("WSGATE_ECHO_BIN") or str(ROOT / "build" / "bench" / "echo_backend")
# WSGATE_E2E_IO=uring runs every wsgate of the suite with that "io" (a test
# that sets "io" itself keeps its own); meson's e2e-uring test sets it.
E2E_IO = os.environ.get("WSGATE_E2E_IO") or None

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer", "ERROR: UndefinedBehaviorSanitizer")

# ASan keeps freed memory in a quarantine (256 MiB by default), which would
# show up as RSS growth in the memory tests; they start wsgate with a small one.
SMALL_QUARANTINE = {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") +
                                     ":quarantine_size_mb=1:thread_local_quarantine_size_kb=64"
                                     ).lstrip(":")}


# ---- waiting -------------------------------------------------------------

def wait_for(cond, timeout=5.0, interval=0.01, what="condition"):
    """Polls cond() until it returns a true value (returned) or the bound."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def run(coro, timeout=30.0):
    """Runs an async test body with a bound."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


_GIVEN_PORTS = set()


def free_port():
    """A loopback port nothing listens on now and that this process has not
    handed out before: the kernel may return a port it just released again,
    and a test that asks twice in a row (a listener and the admin endpoint)
    must get two."""
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port
    raise AssertionError("no fresh free port in 100 tries")


_DEAD = []


def dead_port():
    """A loopback port where nothing listens, and nothing can: a socket stays
    bound to it (not listening) for the whole session, so connects to it are
    refused and it can never be a connect's own source port (a free_port()
    in the ephemeral range could be, and then a connect to it succeeds)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    _DEAD.append(s)
    return s.getsockname()[1]


def can_connect(port, host="127.0.0.1"):
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def split_bind(bind):
    """"host:port" / "[v6]:port" -> (connectable host, port)."""
    host, port = bind.rsplit(":", 1)
    host = host.strip("[]")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, int(port)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def wsc(port, path="/", **kw):
    """websockets client with test-friendly defaults: no library keepalive
    pings (they would interfere with heartbeat/idle tests), no size limit,
    no compression unless asked."""
    opts = dict(ping_interval=None, max_size=None, compression=None, open_timeout=5,
                close_timeout=3)
    opts.update(kw)
    return websockets.connect(f"ws://127.0.0.1:{port}{path}", **opts)


# ---- processes -----------------------------------------------------------

class Proc:
    """A child process whose stdout+stderr go to a log file."""

    def __init__(self, args, log_path, env=None, cwd=None, stdout_pipe=False):
        self.args = [str(a) for a in args]
        self.log_path = Path(log_path)
        self.logf = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.p = subprocess.Popen(
            self.args, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self.logf,
            stderr=self.logf)
        self.pid = self.p.pid

    @property
    def alive(self):
        return self.p.poll() is None

    def log(self):
        if not self.logf.closed:
            self.logf.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig):
        if self.alive:
            self.p.send_signal(sig)

    def wait(self, timeout):
        """Exit status, or None if still running after <timeout>."""
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=5.0):
        """SIGTERM, then SIGKILL after <timeout>; always reaps. Returns the
        exit status (negative: killed by that signal)."""
        if self.alive:
            self.p.send_signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.p.kill()
                self.p.wait(10)
        rc = self.p.wait(10)
        if self.p.stdout is not None:
            self.p.stdout.close()
        self.logf.close()
        return rc

    def sanitizer_report(self):
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        for mark in SANITIZER_MARKS:
            i = text.find(mark)
            if i >= 0:
                return text[max(0, i - 200):i + 3000]
        return None


class Echo(Proc):
    """The C echo backend. `name` answers "whoami"."""

    def __init__(self, log_dir, name, port=0, args=(), host="127.0.0.1"):
        self.name = name
        super().__init__([ECHO_BIN, "--port", port, "--name", name, "--host", host, *args],
                         Path(log_dir) / f"echo-{name}-{port}.log", stdout_pipe=True)
        line = b""
        deadline = time.monotonic() + 10
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.p.stdout], [], [], left)[0]:
                self.stop()
                raise AssertionError(f"echo backend {name} did not start: {self.log()}")
            b = self.p.stdout.read1(256) if hasattr(self.p.stdout, "read1") else \
                os.read(self.p.stdout.fileno(), 256)
            if not b:
                self.stop()
                raise AssertionError(f"echo backend {name} exited: {self.log()}")
            line += b
        text = line.decode().strip()
        assert text.startswith("listening "), text
        self.port = int(text.rsplit(":", 1)[1])
        self.host = host
        self.address = f"{host}:{self.port}"


class Gate(Proc):
    """A running wsgate with the configuration <cfg> (a dict)."""

    def __init__(self, cfg, tmpdir, tag="wsgate", env=None, wait=True, cwd=None):
        if E2E_IO and "io" not in cfg:
            cfg = dict(cfg, io=E2E_IO)
        self.cfg = cfg
        self.cfg_path = Path(tmpdir) / f"{tag}.json"
        self.cfg_path.write_text(json.dumps(cfg, indent=2))
        super().__init__([WSGATE_BIN, "-c", self.cfg_path], Path(tmpdir) / f"{tag}.log",
                         env=env, cwd=cwd)
        self.port = split_bind(cfg["listeners"][0]["bind"])[1]
        self.drain_ms = cfg.get("timeouts", {}).get("drain_ms", 10000)
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                # Not handed to the stack yet: stop it here, or it outlives the run.
                self.p.kill()
                self.p.wait(10)
                raise

    def wait_ready(self, timeout=30.0):
        binds = [lst["bind"] for lst in self.cfg["listeners"]]
        if self.cfg.get("admin"):
            binds.append(self.cfg["admin"]["bind"])
        deadline = time.monotonic() + timeout
        for bind in binds:
            host, port = split_bind(bind)
            while not can_connect(port, host):
                if not self.alive:
                    raise AssertionError(f"wsgate exited with {self.p.returncode}:\n{self.log()}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"wsgate not listening on {port}:\n{self.log()}")
                time.sleep(0.02)
        if E2E_IO == "uring" and '"io": "uring" is unavailable' in self.log():
            # The machine refuses io_uring (sysctl, seccomp): the run says so
            # as skipped (77 for meson) instead of passing on epoll.
            self.p.kill()
            self.p.wait(10)
            pytest.exit("io_uring is unavailable here: " + self.log(), returncode=77)

    def stop(self, timeout=None):
        return super().stop(timeout if timeout is not None else self.drain_ms / 1000 + 5)


# ---- configuration -------------------------------------------------------

def pool(addresses, key="query:user", fallback="random", weights=None, **kw):
    backends = []
    for i, a in enumerate(addresses):
        b = {"address": a}
        if weights:
            b["weight"] = weights[i]
        backends.append(b)
    p = {"backends": backends, "balance": {"key": key, "fallback": fallback}}
    p.update(kw)
    return p


def merge(base, extra):
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def make_config(port, pools, routes=None, workers=1, **sections):
    """A complete SPEC §2 configuration with one listener on 127.0.0.1:<port>.
    drain_ms is short so that teardown stays fast; <sections> are merged."""
    cfg = {
        "workers": workers,
        "listeners": [{"name": "public", "bind": f"127.0.0.1:{port}"}],
        "routes": routes or [{"path_prefix": "/", "pool": next(iter(pools))}],
        "pools": pools,
        "timeouts": {"handshake_ms": 5000, "idle_ms": 300000, "drain_ms": 1000},
        "log": {"level": "info", "format": "text", "access": True},
    }
    return merge(cfg, sections)


# ---- fixtures ------------------------------------------------------------

class Stack:
    """Starts processes and fakes and tears all of them down."""

    def __init__(self, tmpdir):
        self.tmpdir = Path(tmpdir)
        self.procs = []
        self.fakes = []
        self.n = 0

    def echo(self, name, port=0, args=(), host="127.0.0.1"):
        """An echo backend; on a given <port> (a backend coming back where
        wsgate expects it), retried while the port is briefly held: wsgate's
        own connects to the other backends take their source ports from the
        same ephemeral range that free_port() drew this one from."""
        deadline = time.monotonic() + 5
        while True:
            try:
                e = Echo(self.tmpdir, name, port, args, host)
                break
            except AssertionError as err:
                if not port or "in use" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.procs.append(e)
        return e

    def fake(self, name="fake", port=0):
        f = FakeBackend(name, port)
        self.fakes.append(f)
        return f

    def http(self, name="http", port=0, **kw):
        f = HttpFake(name, port, **kw)
        self.fakes.append(f)
        return f

    def wslib(self, handler, **kw):
        f = WsLibBackend(handler, **kw)
        self.fakes.append(f)
        return f

    def gate(self, cfg, env=None, wait=True, cwd=None):
        self.n += 1
        g = Gate(cfg, self.tmpdir, f"wsgate-{self.n}", env=env, wait=wait, cwd=cwd)
        self.procs.append(g)
        return g

    def teardown(self):
        errors = []
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception as e:  # keep reaping the others
                errors.append(f"stopping {p.args}: {e!r}")
            rep = p.sanitizer_report()
            if rep:
                errors.append(f"sanitizer report from {p.args[0]}:\n{rep}")
        for f in self.fakes:
            try:
                f.stop()
            except Exception as e:
                errors.append(f"stopping fake: {e!r}")
        if errors:
            pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture
def stack(tmp_path):
    s = Stack(tmp_path)
    yield s
    s.teardown()


@pytest.fixture(scope="module")
def mstack(tmp_path_factory):
    """A Stack shared by the tests of one module (one wsgate, many tests)."""
    s = Stack(tmp_path_factory.mktemp("m"))
    yield s
    s.teardown()


@pytest.fixture(scope="session", autouse=True)
def binaries_exist():
    for b in (WSGATE_BIN, ECHO_BIN):
        if not os.access(b, os.X_OK):
            pytest.exit(f"{b} is not built (set WSGATE_BIN / WSGATE_ECHO_BIN)", returncode=1)
