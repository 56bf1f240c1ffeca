"""deploy/grafana/wsgate.json: every metric its PromQL names is one that a
running wsgate exports on /metrics (scraped here from the real binary, with
a pool and an active check so that every family is present) and that
src/ctl/metrics.c writes; label matchers and `by` clauses use labels those
metrics carry; the panels do not overlap."""

import json
import re
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import ROOT, WSGATE_BIN

DASHBOARD = ROOT / "deploy" / "grafana" / "wsgate.json"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                "offset", "and", "or", "unless", "inf", "nan"}
# Added by Prometheus at scrape time, not by wsgate.
TARGET_LABELS = {"instance", "job"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{metric name: set of label names} as the running binary exports them."""
    port, admin = free_port(), free_port()
    cfg = {"listeners": [{"name": "public", "bind": f"127.0.0.1:{port}"}],
           "admin": {"bind": f"127.0.0.1:{admin}"},
           "routes": [{"pool": "p"}],
           "pools": {"p": {"backends": [{"address": "127.0.0.1:9"}],
                           "health": {"type": "tcp", "interval_ms": 100}}}}
    f = tmp_path_factory.mktemp("grafana") / "wsgate.json"
    f.write_text(json.dumps(cfg))
    proc = subprocess.Popen([WSGATE_BIN, "-c", str(f)], stderr=subprocess.DEVNULL)
    try:
        text, deadline = None, time.monotonic() + 10
        while text is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=2) as r:
                    text = r.read().decode()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    types, labels = {}, {}
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            types[m.group(1)] = m.group(2)
            continue
        m = re.match(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? ", line)
        if m:
            labels.setdefault(m.group(1), set()).update(
                re.findall(r'(\w+)="', m.group(2) or ""))
    out = {}
    for name, typ in types.items():
        series = [name] + ([name + s for s in ("_bucket", "_sum", "_count")]
                           if typ == "histogram" else [])
        for s in series:
            out[s] = labels.get(s, set())
    assert len(out) > 20
    return out


def expressions():
    d = json.loads(DASHBOARD.read_text())
    exprs = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            exprs.append((p["title"], t["expr"]))
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            exprs.append((f"${v['name']}", q))
    return d, exprs


def metrics_in(expr):
    """(metric, {labels matched}) for each selector; plus names in by()."""
    e = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    e = re.sub(r"label_values\((.*),\s*(\w+)\)", r"\1", e)  # label_values(sel, label)
    sels = []
    e = re.sub(r'"[^"]*"', '""', e)  # label values are not names
    for m in re.finditer(r"([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?", e):
        name, braces = m.group(1), m.group(2)
        after = e[m.end():].lstrip()[:1] if not braces else ""
        if name.lower() in PROMQL_WORDS or after == "(":
            continue
        if re.fullmatch(r"[\d.e]+", name):
            continue
        sels.append((name, set(re.findall(r"(\w+)\s*[=!~]", braces or ""))))
    by = set()
    for m in re.finditer(r"\b(?:by|without)\s*\(([^)]*)\)", e):
        by |= {x.strip() for x in m.group(1).split(",") if x.strip()}
    return sels, by


def clean(expr):
    # Label names inside by(...) would look like metrics; drop the clause.
    return re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)


def test_every_dashboard_metric_is_exported(exported):
    _, exprs = expressions()
    assert len(exprs) > 20
    source = (ROOT / "src" / "ctl" / "metrics.c").read_text()
    seen = set()
    for title, expr in exprs:
        sels, by = metrics_in(clean(expr))
        assert sels, f"{title}: no metric in {expr}"
        for name, matched in sels:
            assert name in exported, f"{title}: {name} is not exported by wsgate"
            base = re.sub(r"_(bucket|sum|count)$", "", name) if name not in source else name
            assert f'"{base}' in source, f"{title}: {name} not in src/ctl/metrics.c"
            assert matched <= exported[name] | TARGET_LABELS, \
                f"{title}: {name} has no label {sorted(matched - exported[name])}"
            seen.add(name)
        _, by = metrics_in(expr)
        have = set().union(*(exported[n] for n, _ in sels)) | TARGET_LABELS
        assert by <= have, f"{title}: by {sorted(by - have)}: no such label"
    # The dashboard covers the families that matter, not a token few.
    for must in ("wsgate_connections_active", "wsgate_handshakes_total",
                 "wsgate_handshake_duration_seconds_bucket", "wsgate_frames_total",
                 "wsgate_bytes_total", "wsgate_closes_total", "wsgate_backend_up",
                 "wsgate_backend_state", "wsgate_backend_active_connections"):
        assert must in seen, must


def test_the_checker_catches_a_made_up_metric(exported):
    sels, _ = metrics_in(clean('sum by (pool) (rate(wsgate_made_up_total{pool="a"}[5m]))'))
    assert [n for n, _ in sels] == ["wsgate_made_up_total"]
    assert "wsgate_made_up_total" not in exported
    sels, _ = metrics_in(clean("up == 1"))
    assert [n for n, _ in sels] == ["up"] and "up" not in exported


def test_panels_are_laid_out_without_overlap():
    d, _ = expressions()
    cells = set()
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))
    assert d["uid"] == "wsgate" and d["title"]
