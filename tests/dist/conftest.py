"""Shared helpers of the tests of what ships besides the binary: the JSON
Schema, the man pages, the systemd unit, the compose file and the Grafana
dashboard. WSGATE_BIN names the binary (default build/wsgate)."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WSGATE_BIN = os.environ.get("WSGATE_BIN") or str(ROOT / "build" / "wsgate")


def wsgate(*args, **kw):
    """Runs wsgate with <args>; returns the CompletedProcess (text mode)."""
    return subprocess.run([WSGATE_BIN, *args], capture_output=True, text=True, timeout=30, **kw)


@pytest.fixture(scope="session", autouse=True)
def binary_exists():
    assert os.access(WSGATE_BIN, os.X_OK), f"no wsgate binary at {WSGATE_BIN}"
