"""The "io" setting (docs/io.md): each method is the one /status names and
the start-up log line says, and relays both ways; a large message crosses
whole on either. The rest of the suite runs on both through e2e-uring."""
import os

import pytest

from conftest import free_port, make_config, pool, wait_for
from opshelpers import status
from wsg_raw import OP_BINARY, OP_TEXT, ws_connect


def uring_usable():
    """What wsgate's probe will say, as far as a test can see it: the sysctl.
    A seccomp refusal shows in the log instead (checked below)."""
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            return f.read().strip() == "0"
    except OSError:
        return True


@pytest.mark.parametrize("io", ["epoll", "uring", "auto"])
def test_io_is_reported_and_relays(stack, io):
    echo = stack.echo(f"io-{io}")
    port, aport = free_port(), free_port()
    cfg = make_config(port, {"p": pool([echo.address])}, io=io,
                      admin={"bind": f"127.0.0.1:{aport}"}, heartbeat={"interval_ms": 0})
    g = stack.gate(cfg)
    log = g.log()
    if io == "uring" and '"io": "uring" is unavailable' in log:
        assert "io: epoll" in log
        expect = "epoll"
    else:
        expect = "uring" if io == "uring" else "epoll"
        assert f"io: {expect} (" in log, log
    if io == "uring" and uring_usable():
        assert expect == "uring", log
    assert status(aport)["io"] == expect
    c, _ = ws_connect(port, "/?user=io")
    try:
        for i in range(20):
            c.send_frame(OP_TEXT, f"m{i}")
            assert c.read_message() == (OP_TEXT, f"m{i}".encode())
        big = os.urandom(3 << 20)  # several buffers of the ring, several sends
        c.send_frame(OP_BINARY, big)
        assert c.read_message() == (OP_BINARY, big)
    finally:
        c.close()
    wait_for(lambda: status(aport)["connections"]["active"] == 0, 5,
             what="the connection gone from /status")
