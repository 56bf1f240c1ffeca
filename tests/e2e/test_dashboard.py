"""SPEC §7 GET /: the admin dashboard.

Without a browser: the page as served lists every listener, pool and backend
(readable without JavaScript), carries a Content-Security-Policy whose hashes
are those of its own inline style and script, and with a token set carries no
data until the request is authorized; a state-changing request from another
origin (a web page POSTing to the admin address) is refused.

With headless Chromium (wsg_browser.py) through a real wsgate: the live page
shows what /status says (cells, totals, listeners), computes message rates
from successive samples, drains a backend with its button (two clicks) so
that the backend's WebSocket clients get 1012, shows the state change, and
enables it again; with a token the page asks for it once, keeps it for the
tab and uses it for its requests; with 1,000 backends the rows are built
once and only updated. A screenshot goes to the build directory
(dashboard.png next to the wsgate binary) for a person to look at.
"""

import base64
import hashlib
import json
import os
import re
import time
from pathlib import Path

import pytest

from conftest import WSGATE_BIN, free_port, make_config, pool, wait_for
from opshelpers import Client, admin, admin_json, backend, status
from wsg_browser import CHROMIUM, Browser

TOKEN = "dash-t0ken"
USERS = [f"dash-{i}" for i in range(12)]

needs_chromium = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                                    reason=f"{CHROMIUM} is not installed")


def _gate(stack, nechos=3, token=None, **kw):
    echos = [stack.echo(f"dash{i}") for i in range(nechos)]
    port, aport = free_port(), free_port()
    admin_cfg = {"bind": f"127.0.0.1:{aport}"}
    if token:
        admin_cfg["token"] = token
    cfg = make_config(port, {"p": pool([e.address for e in echos],
                                       health={"type": "tcp", "interval_ms": 300,
                                               "timeout_ms": 500, "rise": 1, "fall": 2})},
                      admin=admin_cfg, heartbeat={"interval_ms": 0}, **kw)
    g = stack.gate(cfg)
    g.aport, g.echos = aport, echos
    return g


def _rows(html):
    """{address: {class: text}} of the backend rows of a served page."""
    out = {}
    for m in re.finditer(r'<tr data-pool="([^"]*)" data-address="([^"]*)">(.*?)</tr>', html):
        cells = dict(re.findall(r'<td class="(?:n )?c-([a-z]+)[^"]*">(.*?)</td>', m.group(3)))
        out[m.group(2)] = cells | {"pool": m.group(1)}
    return out


# ---- the page as served --------------------------------------------------------------

def test_dashboard_as_served_lists_every_backend_without_javascript(stack):
    g = _gate(stack)
    wait_for(lambda: all(b["last_check"] for b in status(g.aport)["pools"]["p"]["backends"]), 5,
             what="a first check of every backend")
    st, h, body = admin(g.aport, "GET", "/")
    assert st == 200 and h["content-type"] == "text/html; charset=utf-8"
    assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
    assert h["cache-control"] == "no-store"
    html = body.decode()
    rows = _rows(html)
    j = status(g.aport)
    assert list(rows) == [b["address"] for b in j["pools"]["p"]["backends"]]
    for b in j["pools"]["p"]["backends"]:
        r = rows[b["address"]]
        assert r["pool"] == "p" and r["state"] == b["state"] == "up"
        assert (r["weight"], r["active"], r["total"]) == ("1", "0", "0")
        assert r["check"].startswith("ok, ")
    assert f"<td>127.0.0.1:{g.port}</td>" in html  # the listener
    assert admin(g.aport, "HEAD", "/")[0] == 200
    st, h, j = admin_json(g.aport, "POST", "/")
    assert st == 405 and "GET" in h["allow"]


def test_dashboard_csp_allows_exactly_its_own_style_and_script(stack):
    g = _gate(stack, nechos=1)
    _, h, body = admin(g.aport, "GET", "/")
    html = body.decode()
    csp = dict(d.strip().split(" ", 1) for d in h["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"

    def digest(tag):
        (text,) = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"
    assert csp["script-src"] == digest("script")
    assert csp["style-src"] == digest("style")
    # Anything the CSP would block, or that would load from elsewhere.
    assert not re.search(r"\sstyle=|\son[a-z]+=|\ssrc=|<link|https?://", html)


def test_dashboard_with_a_token_carries_data_only_when_authorized(stack):
    g = _gate(stack, nechos=2, token=TOKEN)
    st, _, body = admin(g.aport, "GET", "/")
    assert st == 200
    for e in g.echos:
        assert e.address not in body.decode()
    assert _rows(body.decode()) == {}
    st, _, body = admin(g.aport, "GET", "/", TOKEN)
    assert st == 200 and list(_rows(body.decode())) == [e.address for e in g.echos]
    assert admin(g.aport, "GET", "/status")[0] == 401


def test_a_cross_origin_post_cannot_drain(stack):
    g = _gate(stack, nechos=1)
    addr = g.echos[0].address
    path = f"/pools/p/backends/{addr}/drain"
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{g.aport}.evil",
                   f"https://127.0.0.1:{g.aport}"):
        st, _, j = admin_json(g.aport, "POST", path, headers={"Origin": origin})
        assert st == 403 and "origin" in j["error"], (origin, st, j)
    assert backend(g.aport, "p", addr)["state"] == "up"
    st, _, _ = admin_json(g.aport, "POST", path, headers={"Origin": f"http://127.0.0.1:{g.aport}"})
    assert st == 200 and backend(g.aport, "p", addr)["state"] == "draining"


def test_state_changes_are_kept_for_status_and_the_page(stack):
    g = _gate(stack, nechos=2)
    addr = g.echos[1].address
    t0 = time.time()
    assert admin_json(g.aport, "POST", f"/pools/p/backends/{addr}/drain")[0] == 200
    assert admin_json(g.aport, "POST", f"/pools/p/backends/{addr}/enable")[0] == 200
    ch = status(g.aport)["changes"]
    assert [(c["backend"], c["from"], c["to"], c["reason"]) for c in ch[:2]] == [
        (addr, "draining", "up", "admin request"), (addr, "up", "draining", "admin request")]
    assert ch[0]["seq"] == ch[1]["seq"] + 1 and ch[0]["pool"] == "p"
    assert abs(ch[0]["at_ms"] / 1000 - t0) < 60  # wall clock
    html = admin(g.aport, "GET", "/")[2].decode()
    items = re.findall(r"<li>(.*?)</li>", html.split('<ul id="changes">', 1)[1])
    text = [re.sub(r"<[^>]+>", "", i) for i in items[:2]]
    assert text[0].endswith(f"p {addr}: draining → up admin request"), text
    assert text[1].endswith(f"p {addr}: up → draining admin request"), text


# ---- in Chromium ------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed")
    b = Browser(tmp_path_factory.mktemp("chromium-dash") / "chromium.log")
    yield b
    b.close()


READ_PAGE = r"""
const num = t => t === "–" ? null : Number(t.replace(/,/g, ""));
const rows = {};
for (const tr of document.querySelectorAll("tr[data-address]")) {
  // The page as served (before the first sample) has no rate cells.
  const g = c => { const e = tr.querySelector(".c-" + c); return e ? e.textContent : "–"; };
  rows[tr.dataset.address] = {pool: tr.dataset.pool, state: g("state"), weight: num(g("weight")),
    active: num(g("active")), total: num(g("total")), failures: num(g("failures")),
    msgs: num(g("msgs")), bps: g("bytes"), check: g("check"), hidden: tr.hidden};
}
const card = id => { const e = document.getElementById("s-" + id); return e && e.textContent; };
const p = window.wsgDashboard || {samples: 0};
return {samples: p.samples, builds: p.builds, renderMs: p.renderMs, rows,
        active: num(card("active") || "–"), total: num(card("total") || "–"),
        msgs: card("msg-c2b"), live: document.getElementById("live").textContent,
        listeners: [...document.querySelectorAll("#listeners tbody tr")].map(
          r => [...r.cells].map(c => c.textContent)),
        changes: [...document.querySelectorAll("#changes li")].map(l => l.textContent),
        authShown: !document.getElementById("auth").hidden};
"""


def read_page(page):
    return page.evaluate(READ_PAGE)


def wait_samples(page, n, timeout=10):
    return wait_for(lambda: (lambda r: r if r["samples"] >= n else None)(read_page(page)),
                    timeout, interval=0.05, what=f"{n} dashboard samples")


def matches_status(page, aport, token=None):
    """The page's cells, once a sample newer than this /status has been
    drawn, equal /status (nothing changes in between in these tests but
    last_check's milliseconds)."""
    j = status(aport, token)
    n = read_page(page)["samples"]
    r = wait_samples(page, n + 1)
    want = {b["address"]: b for b in j["pools"]["p"]["backends"]}
    if set(r["rows"]) != set(want) or r["active"] != j["connections"]["active"]:
        return None
    for a, b in want.items():
        row = r["rows"][a]
        if (row["state"], row["weight"], row["active"], row["total"], row["failures"]) != \
                (b["state"], b["weight"], b["active"], b["total"], b["failures"]):
            return None
        if b["last_check"] and not row["check"].startswith("ok" if b["last_check"]["ok"]
                                                           else "failed"):
            return None
    return r


def click(page, address, action):
    return page.evaluate(f"""
        const b = document.querySelector(
            `tr[data-address={json.dumps(address)}] button[data-action={action}]`);
        b.click();
        return b.textContent;
    """)


def screenshot_path():
    return Path(WSGATE_BIN).resolve().parent / "dashboard.png"


@needs_chromium
def test_dashboard_in_chromium_follows_status_and_drains_with_its_button(stack, browser):
    g = _gate(stack)
    names = {e.address: e.name for e in g.echos}
    clients = [Client(g.port, u) for u in USERS]
    try:
        browser.navigate(f"http://127.0.0.1:{g.aport}/")
        wait_samples(browser, 2)
        r = wait_for(lambda: matches_status(browser, g.aport), 10,
                     what="the dashboard to show what /status says")
        assert r["active"] == len(USERS) and not r["authShown"]
        assert sum(row["active"] for row in r["rows"].values()) == len(USERS)
        assert r["listeners"] == [["public", f"127.0.0.1:{g.port}", "no", "no"]]
        assert "live" in r["live"]

        # Rates come from successive samples: traffic between two of them
        # shows as messages per second.
        def rate_shown():
            for c in clients[:4]:
                c.ask("tick")
            m = read_page(browser)["msgs"]
            return m not in (None, "–") and float(m.replace(",", "")) > 0
        wait_for(rate_shown, 10, interval=0.1, what="a client->backend message rate above 0")

        # Per backend too: only the backends of the clients that talk show a
        # message rate, from /status's per-backend traffic.
        talking = {c.name for c in clients[:4]}

        def backend_rates_shown():
            for c in clients[:4]:
                c.ask("tick")
            rows = read_page(browser)["rows"]
            busy = {names[a] for a, row in rows.items() if (row["msgs"] or 0) > 0}
            return busy == talking and all(rows[a]["bps"].endswith("/s") for a in rows
                                           if names[a] in talking)
        wait_for(backend_rates_shown, 10, interval=0.1,
                 what="message rates on exactly the backends with traffic")
        t = backend(g.aport, "p", [a for a, n in names.items() if n in talking][0])["traffic"]
        assert t["frames"]["client_to_backend"] > 0 and t["bytes"]["backend_to_client"] > 0

        by = {}
        for c in clients:
            by.setdefault(c.name, []).append(c)
        victim_name = max(by, key=lambda n: len(by[n]))
        victim = [a for a, n in names.items() if n == victim_name][0]
        # One click only arms the button: nothing is drained yet.
        assert click(browser, victim, "drain") == "confirm drain"
        assert backend(g.aport, "p", victim)["state"] == "up"
        click(browser, victim, "drain")
        for c in by[victim_name]:
            assert c.read_close() == 1012
        for n, cs in by.items():
            if n != victim_name:
                for c in cs:
                    assert c.ask() == n  # untouched
        assert backend(g.aport, "p", victim)["state"] == "draining"
        r = wait_for(lambda: (lambda r: r if r["rows"][victim]["state"] == "draining" and
                              r["changes"] else None)(read_page(browser)), 5,
                     what="the dashboard to show the drain")
        assert any(victim in ch and "up → draining admin request" in ch
                   for ch in r["changes"]), r["changes"]
        wait_for(lambda: matches_status(browser, g.aport), 10,
                 what="the dashboard to show the drained backend's counts")
        png = browser.screenshot(screenshot_path())
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10000

        click(browser, victim, "enable")
        wait_for(lambda: read_page(browser)["rows"][victim]["state"] == "up", 5,
                 what="the dashboard to show the backend enabled")
        assert backend(g.aport, "p", victim)["state"] == "up"
    finally:
        for c in clients:
            c.close()


@needs_chromium
def test_dashboard_asks_for_the_token_once_and_uses_it(stack, browser):
    g = _gate(stack, nechos=2, token=TOKEN)
    url = f"http://127.0.0.1:{g.aport}/"
    browser.navigate(url)
    browser.evaluate("sessionStorage.clear(); return true;")
    browser.navigate(url)
    wait_for(lambda: read_page(browser)["authShown"], 5, what="the token form")
    assert read_page(browser)["rows"] == {}

    def submit(tok):
        browser.evaluate(f"""
            document.getElementById("token").value = {json.dumps(tok)};
            document.getElementById("auth").requestSubmit();
            return true;""")
    submit("wrong")
    wait_for(lambda: browser.evaluate(
        'return document.getElementById("auth-err").textContent;') == "That token was refused.",
        5, what="the wrong token to be refused")
    submit(TOKEN)
    wait_for(lambda: matches_status(browser, g.aport, TOKEN), 10,
             what="the dashboard with the token")
    assert browser.evaluate('return sessionStorage.getItem("wsgate.admin.token");') == TOKEN
    # Kept for the tab: a reload does not ask again.
    browser.navigate(url)
    r = wait_samples(browser, 1)
    assert not r["authShown"] and len(r["rows"]) == 2
    # The buttons send it too.
    addr = g.echos[1].address
    click(browser, addr, "drain")
    click(browser, addr, "drain")
    wait_for(lambda: backend(g.aport, "p", addr, TOKEN)["state"] == "draining", 5,
             what="the drain through the button with the token")
    browser.evaluate("sessionStorage.clear(); return true;")


@needs_chromium
def test_dashboard_with_a_thousand_backends_builds_rows_once(stack, browser):
    echo = stack.echo("dash-big")
    port, aport = free_port(), free_port()
    # Nothing listens on these ports; without health checks they stay up.
    # The echo's own (random) port may fall in that range: skip it.
    addrs = [echo.address] + [f"127.0.0.1:{p}" for p in range(40001, 41100)
                              if p != echo.port][:999]
    drained = "127.0.0.1:40500" if echo.port != 40500 else "127.0.0.1:40501"
    g = stack.gate(make_config(port, {"p": pool(addrs)}, admin={"bind": f"127.0.0.1:{aport}"},
                               heartbeat={"interval_ms": 0}))
    # A change from before the page was opened is listed: the server keeps them.
    assert admin_json(aport, "POST", f"/pools/p/backends/{drained}/drain")[0] == 200
    browser.navigate(f"http://127.0.0.1:{aport}/")
    r = wait_samples(browser, 1)
    assert len(r["rows"]) == 1000
    assert r["rows"][drained]["state"] == "draining"
    assert f"p {drained}: up → draining admin request" in r["changes"][0]
    browser.evaluate("""
        for (const tr of document.querySelectorAll("tr[data-address]")) tr.wsgMark = 1;
        return true;""")
    r = wait_samples(browser, r["samples"] + 3)
    assert r["builds"] == 1
    assert browser.evaluate("""
        return [...document.querySelectorAll("tr[data-address]")].every(tr => tr.wsgMark === 1);
    """), "rows were rebuilt instead of updated"
    print(f"render of one sample of 1000 backends: {r['renderMs']:.1f} ms")
    # The filter narrows the table without a new sample.
    browser.evaluate("""
        const f = document.getElementById("filter");
        f.value = "127.0.0.1:40999";
        f.dispatchEvent(new Event("input"));
        return true;""")
    shown = [a for a, row in read_page(browser)["rows"].items() if not row["hidden"]]
    assert shown == ["127.0.0.1:40999"]
    assert g.alive


@needs_chromium
def test_dashboard_rebuilds_its_rows_when_a_reload_changes_the_backends(stack, browser):
    g = _gate(stack, nechos=2)
    browser.navigate(f"http://127.0.0.1:{g.aport}/")
    r = wait_samples(browser, 1)
    assert len(r["rows"]) == 2 and r["builds"] == 1
    extra = stack.echo("dash-new")
    cfg = json.loads(g.cfg_path.read_text())
    cfg["pools"]["p"]["backends"].append({"address": extra.address, "weight": 4})
    g.cfg_path.write_text(json.dumps(cfg))
    st, _, j = admin_json(g.aport, "POST", "/reload")
    assert st == 200, j
    r = wait_for(lambda: (lambda r: r if extra.address in r["rows"] else None)(
        read_page(browser)), 5, what="the new backend on the page")
    assert r["builds"] == 2 and len(r["rows"]) == 3
    assert r["rows"][extra.address]["weight"] == 4
    wait_for(lambda: matches_status(browser, g.aport), 10, what="the page to match /status")
