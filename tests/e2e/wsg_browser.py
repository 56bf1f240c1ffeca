"""Headless Chromium driven over the Chrome DevTools Protocol, for the
browser end-to-end tests (test_browser.py).

No extra packages: Chromium is started with --remote-debugging-port=0, the
port is read from <profile>/DevToolsActivePort and the page target is driven
with python3-websockets (Runtime.evaluate with awaitPromise/returnByValue).
Every evaluation opens its own short DevTools connection, so a test can leave
state in the page (window globals), do something from Python, and evaluate
again. Everything is bounded: start-up, each evaluation, and teardown, which
kills the whole process group (Chromium's zygote, renderer and utility
processes included) and removes the profile directory.

JS is a prelude defining `window.wsg`, a small promise-based WebSocket client
for the page (open / next message / close event, all with timeouts, and
deterministic payloads of exact byte sizes) prepended to every evaluation.
"""

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import websockets

CHROMIUM = "/usr/bin/chromium"

# The closed network here refuses Chromium's background connections (updates,
# sync, field trials, QUIC probes); these flags keep it from trying.
BASE_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
              "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync",
              "--disable-default-apps", "--disable-extensions", "--mute-audio",
              "--remote-debugging-port=0")


class BrowserError(AssertionError):
    pass


JS = r"""
if (!window.wsg) window.wsg = (() => {
  const limit = (p, ms, what) => new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("timed out after " + ms + " ms: " + what)), ms);
    p.then(v => { clearTimeout(t); resolve(v); }, e => { clearTimeout(t); reject(e); });
  });
  const closeInfo = e => ({code: e.code, reason: e.reason, wasClean: e.wasClean});
  const api = {
    conns: [],  // every client opened, so that a test's leftovers can be closed
    // Resolves with a client once open; rejects with the close event if the
    // handshake fails (a WebSocket gives no other detail on failure).
    open(url, ms = 5000) {
      const ws = new WebSocket(url);
      ws.binaryType = "arraybuffer";
      const c = {ws, queue: [], waiters: [], closed: null, closeWaiters: []};
      api.conns.push(c);
      c.closedPromise = new Promise(r => c.closeWaiters.push(r));
      ws.onmessage = e => {
        if (c.waiters.length) c.waiters.shift().resolve(e.data); else c.queue.push(e.data);
      };
      const opened = new Promise((resolve, reject) => {
        ws.onopen = () => resolve(c);
        ws.onclose = e => {
          c.closed = closeInfo(e);
          const why = JSON.stringify(c.closed);
          for (const w of c.waiters.splice(0)) w.reject(new Error("closed: " + why));
          for (const r of c.closeWaiters.splice(0)) r(c.closed);
          // A no-op once open; before, the only detail a failed handshake gives.
          reject(new Error("handshake failed for " + url + ": " + why));
        };
      });
      return limit(opened, ms, "open " + url);
    },
    next(c, ms = 10000) {
      if (c.queue.length) return Promise.resolve(c.queue.shift());
      if (c.closed) return Promise.reject(new Error("closed: " + JSON.stringify(c.closed)));
      return limit(new Promise((resolve, reject) => c.waiters.push({resolve, reject})),
                   ms, "a message");
    },
    async ask(c, text, ms) { c.ws.send(text); return await api.next(c, ms); },
    closed(c, ms = 10000) { return limit(c.closedPromise, ms, "the close event"); },
    // Text of exactly n UTF-8 bytes, with 2-, 3- and 4-byte characters so that
    // a corrupted or re-split byte shows up (the browser checks UTF-8, 1007).
    text(n) {
      const unit = ["a", "\u00e9", "b", "\u20ac", "c", "\u{1F600}", "d", "~"];
      const enc = new TextEncoder();
      const sizes = unit.map(u => enc.encode(u).length);
      let parts = [], bytes = 0, i = 0;
      while (bytes < n) {
        let k = i % unit.length;
        if (bytes + sizes[k] > n) { parts.push("x"); bytes += 1; }
        else { parts.push(unit[k]); bytes += sizes[k]; }
        i++;
      }
      return parts.join("");
    },
    closeAll() {
      for (const c of api.conns.splice(0)) if (c.ws.readyState < 2) c.ws.close(1000);
    },
    bytes(n) {
      const b = new Uint8Array(n);
      for (let i = 0; i < n; i++) b[i] = (i * 131 + (i >> 8) * 7 + 13) & 0xff;
      return b.buffer;
    },
    kind(d) {
      if (typeof d === "string") return "text";
      if (d instanceof ArrayBuffer) return "binary";
      return Object.prototype.toString.call(d);
    },
    size(d) {
      return typeof d === "string" ? new TextEncoder().encode(d).length : d.byteLength;
    },
    same(a, b) {
      if (typeof a === "string" || typeof b === "string") return a === b;
      if (!(a instanceof ArrayBuffer) || !(b instanceof ArrayBuffer)) return false;
      if (a.byteLength !== b.byteLength) return false;
      const x = new Uint8Array(a), y = new Uint8Array(b);
      for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
      return true;
    },
    // Sends each payload and checks its echo; returns one record per payload.
    async echo(c, payloads, ms) {
      const out = [];
      for (const p of payloads) {
        c.ws.send(p);
        const got = await api.next(c, ms);
        out.push({sent_kind: api.kind(p), sent_size: api.size(p),
                  kind: api.kind(got), size: api.size(got), same: api.same(p, got)});
      }
      return out;
    },
  };
  return api;
})();
"""


def _kill_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid):
    """True while a process of group <pgid> still runs. Zombies do not count:
    the orphaned children are reaped by PID 1, which here may take seconds."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


class Browser:
    """A headless Chromium with a fresh profile in a temporary directory."""

    def __init__(self, log_path, extra_flags=(), start_timeout=20.0, attempts=2):
        self.log_path = Path(log_path)
        self.logf = open(self.log_path, "wb")
        # A Chromium that has not come up after <start_timeout> (seen once on a
        # loaded CI machine: no DevToolsActivePort in 20 s) is stopped and
        # started again with a fresh profile; what the test checks is wsgate.
        for attempt in range(1, attempts + 1):
            try:
                self._start(extra_flags, start_timeout)
                return
            except BaseException as e:
                if not isinstance(e, BrowserError) or attempt == attempts:
                    self.logf.close()
                    raise
                self.logf.write(f"\n--- wsg_browser: attempt {attempt} failed ({e}); "
                                "starting again ---\n".encode())

    def _start(self, extra_flags, timeout):
        self.profile = Path(tempfile.mkdtemp(prefix="wsg-chromium-"))
        # --disable-dev-shm-usage: Debian's launcher adds it only when its
        # /dev/shm check parses, which fails where findmnt lists two mounts.
        args = [CHROMIUM, *BASE_FLAGS, "--disable-dev-shm-usage", *extra_flags,
                f"--user-data-dir={self.profile}", "about:blank"]
        # Its own session (and so process group): teardown reaches the zygote
        # and every renderer, not just the browser process.
        self.p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.logf,
                                  stderr=self.logf, start_new_session=True)
        self.pgid = self.p.pid
        try:
            self.port = self._wait_port(timeout)
            self.page_ws = self._page_target(timeout)
        except BaseException:
            self._stop()
            raise

    def log_tail(self, n=3000):
        self.logf.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def _wait_port(self, timeout):
        f = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while True:
            try:
                lines = f.read_text().split("\n")
                if len(lines) >= 2 and lines[0].strip().isdigit():
                    return int(lines[0])
            except FileNotFoundError:
                pass
            if self.p.poll() is not None:
                raise BrowserError(f"chromium exited with {self.p.returncode}:\n"
                                   f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BrowserError(f"no {f} after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def _page_target(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list",
                                            timeout=2) as r:
                    targets = json.loads(r.read())
                pages = [t for t in targets if t.get("type") == "page"
                         and t.get("url") == "about:blank" and t.get("webSocketDebuggerUrl")]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BrowserError(f"no about:blank page target:\n{self.log_tail()}")
            time.sleep(0.05)

    async def _evaluate(self, expression):
        async with websockets.connect(self.page_ws, max_size=None, ping_interval=None,
                                      compression=None, open_timeout=5,
                                      close_timeout=2) as cdp:
            await cdp.send(json.dumps({
                "id": 1, "method": "Runtime.evaluate",
                "params": {"expression": expression, "awaitPromise": True,
                           "returnByValue": True}}))
            while True:
                msg = json.loads(await cdp.recv())
                if msg.get("id") == 1:
                    return msg

    async def _command(self, method, params, *more):
        """Sends (method, params) and then each of <more> on one DevTools
        session (emulation overrides last only as long as their session);
        returns the last reply."""
        async with websockets.connect(self.page_ws, max_size=None, ping_interval=None,
                                      compression=None, open_timeout=5,
                                      close_timeout=2) as cdp:
            msg = None
            for i, (m, p) in enumerate(((method, params),) + more, 1):
                await cdp.send(json.dumps({"id": i, "method": m, "params": p}))
                while True:
                    msg = json.loads(await cdp.recv())
                    if msg.get("id") == i:
                        break
                if "error" in msg:
                    return msg
            return msg

    def command(self, method, params=None, timeout=20.0):
        """One DevTools command on the page target; returns its result."""
        async def bounded():
            return await asyncio.wait_for(self._command(method, params or {}), timeout)
        try:
            msg = asyncio.run(bounded())
        except asyncio.TimeoutError:
            raise BrowserError(f"{method} took over {timeout}s") from None
        if "error" in msg:
            raise BrowserError(f"DevTools error for {method}: {msg['error']}")
        return msg["result"]

    def navigate(self, url, timeout=20.0):
        """Loads <url> in the page and waits (bounded) until it is complete."""
        res = self.command("Page.navigate", {"url": url}, timeout)
        if res.get("errorText"):
            raise BrowserError(f"navigating to {url}: {res['errorText']}")
        deadline = time.monotonic() + timeout
        while self.evaluate("return document.readyState + ' ' + location.href;",
                            timeout) != f"complete {url}":
            if time.monotonic() > deadline:
                raise BrowserError(f"{url} not loaded within {timeout}s")
            time.sleep(0.05)

    def screenshot(self, path, width=1280, height=900, timeout=20.0):
        """Writes a PNG of the page at <width> (the whole page, not only the
        viewport). The size override, two animation frames (layout and
        paint at that width) and the capture share one session."""
        async def bounded():
            return await asyncio.wait_for(self._command(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                ("Runtime.evaluate",
                 {"expression": "new Promise(r => requestAnimationFrame(() => "
                                "requestAnimationFrame(r)))", "awaitPromise": True}),
                ("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})),
                timeout)
        try:
            msg = asyncio.run(bounded())
        except asyncio.TimeoutError:
            raise BrowserError(f"screenshot took over {timeout}s") from None
        if "error" in msg:
            raise BrowserError(f"DevTools error for the screenshot: {msg['error']}")
        data = base64.b64decode(msg["result"]["data"])
        Path(path).write_bytes(data)
        return data

    def evaluate(self, body, timeout=20.0):
        """Runs <body> (the statements of an async function, `return` gives
        the value) in the page with the wsg prelude; returns the value as
        JSON data. A JS exception or a timeout fails the test."""
        expression = JS + "\n(async () => {\n" + body + "\n})()"

        async def bounded():
            return await asyncio.wait_for(self._evaluate(expression), timeout)
        try:
            msg = asyncio.run(bounded())
        except asyncio.TimeoutError:
            raise BrowserError(f"evaluation took over {timeout}s:\n{body}") from None
        if "error" in msg:
            raise BrowserError(f"DevTools error {msg['error']}")
        res = msg["result"]
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            text = d.get("exception", {}).get("description") or d.get("text")
            raise BrowserError(f"JS exception: {text}")
        return res["result"].get("value")

    def close(self, timeout=5.0):
        """SIGTERM to the whole process group, SIGKILL after <timeout>; reaps
        the browser process and removes the profile. Idempotent."""
        self._stop(timeout)
        if not self.logf.closed:
            self.logf.close()

    def _stop(self, timeout=5.0):
        if self.p.poll() is None:
            _kill_group(self.pgid, signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Children may outlive the browser process for a moment.
        deadline = time.monotonic() + timeout
        while _group_alive(self.pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(self.pgid):
            _kill_group(self.pgid, signal.SIGKILL)
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 5
        while _group_alive(self.pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        # Chromium may still be writing into the profile while it dies.
        for _ in range(20):
            shutil.rmtree(self.profile, ignore_errors=True)
            if not self.profile.exists():
                break
            time.sleep(0.05)
