"""SPEC §1: the command line and its exit statuses (0 ok, 1 configuration
error, 2 usage error, 3 start-up failure)."""

import json
import re
import socket
import subprocess

from conftest import (WSGATE_BIN, Proc, can_connect, free_port, make_config, pool, run,
                      wait_for, wsc)


def wsgate(*args, cwd=None, timeout=20):
    return subprocess.run([WSGATE_BIN, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)


def write(path, obj):
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj, indent=2))
    return path


def good_config(port=18080):
    return make_config(port, {"default": pool(["127.0.0.1:19001", "127.0.0.1:19002"])})


# ---- -t ------------------------------------------------------------------

def test_check_ok_prints_file_configuration_ok(tmp_path):
    f = write(tmp_path / "good.json", good_config())
    r = wsgate("-t", "-c", f)
    assert r.returncode == 0, r.stderr
    assert f"{f}: configuration OK" in r.stdout + r.stderr


def test_check_reports_every_error_with_its_json_path_and_exits_1(tmp_path):
    cfg = good_config()
    cfg["pools"]["default"]["backends"].append({"address": "10.0.0.1"})  # no port
    cfg["pools"]["default"]["bogus_key"] = 1                            # unknown key
    f = write(tmp_path / "bad.json", cfg)
    r = wsgate("-t", "-c", f)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "pools.default.backends[2].address" in out, out
    assert "10.0.0.1" in out, out
    assert "bogus_key" in out, out
    assert "configuration OK" not in out


def test_check_syntax_error_names_line_and_column(tmp_path):
    f = write(tmp_path / "syntax.json", '{\n  "workers": 1,\n  "listeners": [ }\n}\n')
    r = wsgate("-t", "-c", f)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert re.search(r"(line\s*3|:3:)", out, re.I), out
    assert re.search(r"(column|col|:3:\d+)", out, re.I), out


def test_check_missing_file_is_a_configuration_error(tmp_path):
    r = wsgate("-t", "-c", tmp_path / "nope.json")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "nope.json" in r.stdout + r.stderr


def test_run_with_invalid_config_exits_1_without_listening(tmp_path):
    cfg = good_config()
    cfg["limits"] = {"max_frame_bytes": "big"}
    f = write(tmp_path / "bad.json", cfg)
    r = wsgate("-c", f)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "limits.max_frame_bytes" in r.stdout + r.stderr


# ---- default configuration path -------------------------------------------

def _runs_with_default(stack, tmp_path, rel):
    """wsgate started with no -c from a directory holding only <rel>."""
    echo = stack.echo("default-path")
    port = free_port()
    d = tmp_path / "cwd"
    (d / rel).parent.mkdir(parents=True, exist_ok=True)
    write(d / rel, make_config(port, {"p": pool([echo.address])}))
    p = Proc([WSGATE_BIN], tmp_path / "default.log", cwd=d)
    stack.procs.append(p)
    wait_for(lambda: can_connect(port) or not p.alive, 10, what="wsgate listening")
    assert p.alive, p.log()

    async def body():
        async with wsc(port, "/?user=a") as ws:
            await ws.send("whoami")
            assert await ws.recv() == "default-path"
    run(body())
    assert p.stop() == 0, p.log()


def test_default_config_is_wsgate_json_in_cwd(stack, tmp_path):
    _runs_with_default(stack, tmp_path, "wsgate.json")


def test_default_config_falls_back_to_config_wsgate_json(stack, tmp_path):
    _runs_with_default(stack, tmp_path, "config/wsgate.json")


# ---- -V, -h, usage errors -------------------------------------------------

def test_version_prints_wsgate_and_library_versions():
    for flag in ("-V", "--version"):
        r = wsgate(flag)
        assert r.returncode == 0, r.stderr
        out = r.stdout
        assert re.match(r"wsgate \d+\.\d+\.\d+", out), out
        for lib in ("libuv", "OpenSSL", "llhttp", "jansson"):
            assert re.search(lib + r"\D*\d+\.\d+", out, re.I), f"{lib} missing in {out!r}"


def test_version_matches_linked_libuv():
    try:
        uv = subprocess.run(["pkg-config", "--modversion", "libuv"], capture_output=True,
                            text=True, timeout=10).stdout.strip()
    except FileNotFoundError:
        uv = ""
    out = wsgate("-V").stdout
    if uv:
        assert uv in out, (uv, out)


def test_help_prints_usage_and_exits_0():
    for flag in ("-h", "--help"):
        r = wsgate(flag)
        assert r.returncode == 0, r.stderr
        out = r.stdout + r.stderr
        assert "usage" in out.lower(), out
        for opt in ("-c", "-t", "--which", "-V", "-p"):
            assert opt in out, f"{opt} not in help: {out}"


def test_usage_errors_exit_2(tmp_path):
    f = write(tmp_path / "good.json", good_config())
    for args in (["--bogus"], ["-c"], ["--which"], ["-x", "-c", f], ["extra-arg", "-c", f]):
        r = wsgate(*args)
        assert r.returncode == 2, (args, r.returncode, r.stdout, r.stderr)
        assert r.stderr.strip(), args


# ---- --which --------------------------------------------------------------

def which(cfg_path, key, pool_name=None):
    args = ["--which", key, "-c", cfg_path] + (["-p", pool_name] if pool_name else [])
    r = wsgate(*args)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return r.stdout


def test_which_names_the_backend_the_proxy_uses(stack, tmp_path):
    echos = [stack.echo(f"w{i}") for i in range(3)]
    by_addr = {e.address: e.name for e in echos}
    port = free_port()
    cfg = make_config(port, {"p": pool([e.address for e in echos])})
    g = stack.gate(cfg)
    placed = {}
    for k in (f"user{i}" for i in range(40)):
        out = which(g.cfg_path, k)
        hits = [a for a in by_addr if a in out]
        assert len(hits) == 1, out
        placed[k] = by_addr[hits[0]]
    # Four keys per backend, so agreement is tested on every backend
    # whatever the random ports did to the ring.
    keys = [k for e in echos for k in [k for k in placed if placed[k] == e.name][:4]]
    predicted = {k: placed[k] for k in keys}
    assert len(set(predicted.values())) == 3, f"40 keys did not reach all 3 backends: {placed}"

    async def body():
        actual = {}
        for k in keys:
            async with wsc(port, f"/?user={k}") as ws:
                await ws.send("whoami")
                actual[k] = await ws.recv()
        return actual
    assert run(body()) == predicted


def test_which_uses_first_route_pool_unless_p(tmp_path):
    cfg = make_config(18081, {
        "a": pool(["127.0.0.1:19101", "127.0.0.1:19102"]),
        "b": pool(["127.0.0.1:19201", "127.0.0.1:19202"]),
    }, routes=[{"path_prefix": "/b", "pool": "b"}, {"path_prefix": "/", "pool": "a"}])
    f = write(tmp_path / "two.json", cfg)
    out = which(f, "k1")
    assert "127.0.0.1:192" in out and "127.0.0.1:191" not in out, out
    out = which(f, "k1", "a")
    assert "127.0.0.1:191" in out and "127.0.0.1:192" not in out, out


def test_which_is_deterministic_across_processes(tmp_path):
    f = write(tmp_path / "good.json", good_config())
    assert [which(f, f"k{i}") for i in range(5)] == [which(f, f"k{i}") for i in range(5)]


def test_which_with_unknown_pool_fails(tmp_path):
    f = write(tmp_path / "good.json", good_config())
    r = wsgate("--which", "k", "-p", "nosuchpool", "-c", f)
    assert r.returncode != 0
    assert "nosuchpool" in r.stdout + r.stderr


# ---- start-up failure ------------------------------------------------------

def test_bind_failure_exits_3_naming_the_address(tmp_path):
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        f = write(tmp_path / "busy.json",
                  make_config(port, {"p": pool(["127.0.0.1:19001"])}))
        r = wsgate("-c", f)
        out = r.stdout + r.stderr
        assert r.returncode == 3, out
        assert f"127.0.0.1:{port}" in out, out
        assert re.search(r"in use", out, re.I), out
    finally:
        blocker.close()
