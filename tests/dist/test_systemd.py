"""deploy/systemd/wsgate.service: `systemd-analyze verify` accepts it without
a single complaint (with the binary and the man pages it names in place),
and it says what issue 14 asks of it: Type=exec, reload by SIGHUP, SIGTERM
with a stop timeout above the default drain_ms, and the sandboxing."""

import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import ROOT, WSGATE_BIN, wsgate

UNIT = ROOT / "deploy" / "systemd" / "wsgate.service"


def directives():
    out = {}
    for line in UNIT.read_text().splitlines():
        m = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


def test_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    # The unit names /usr/local/bin/wsgate (meson's default prefix) and its
    # man pages; verify checks both exist, so point it at the build's.
    unit_dir = tmp_path / "unit"
    unit_dir.mkdir()
    text = UNIT.read_text().replace("/usr/local/bin/wsgate", os.path.abspath(WSGATE_BIN))
    (unit_dir / "wsgate.service").write_text(text)
    for page in ("wsgate.1", "wsgate.json.5"):
        d = tmp_path / "man" / ("man" + page.rsplit(".", 1)[1])
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "man" / page, d / page)
    env = dict(os.environ, MANPATH=str(tmp_path / "man"), SYSTEMD_LOG_LEVEL="notice")
    r = subprocess.run(["systemd-analyze", "verify", str(unit_dir / "wsgate.service")],
                       capture_output=True, text=True, env=env, timeout=120)
    # verify exits 0 even for a directive it ignores; any line it prints is
    # a problem with the unit.
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_unit_has_what_the_issue_asks():
    d = directives()
    assert d["Type"] == ["exec"]
    assert re.fullmatch(r"/bin/kill -HUP \$MAINPID", d["ExecReload"][0])
    assert d["KillSignal"] == ["SIGTERM"]
    for k, v in {"DynamicUser": "yes", "ProtectSystem": "strict", "NoNewPrivileges": "yes",
                 "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE"}.items():
        assert d.get(k) == [v], k
    assert int(d["LimitNOFILE"][0]) >= 65536
    # The stop timeout must leave the drain its time.
    schema = json.loads(wsgate("--schema").stdout)
    drain_ms = schema["properties"]["timeouts"]["properties"]["drain_ms"]["default"]
    m = re.fullmatch(r"(\d+)s", d["TimeoutStopSec"][0])
    assert m and int(m.group(1)) * 1000 > drain_ms
    # Starting runs the check first, and runs the same file.
    assert d["ExecStartPre"][0].endswith("wsgate -t -c /etc/wsgate/wsgate.json")
    assert d["ExecStart"][0].endswith("wsgate -c /etc/wsgate/wsgate.json")
