"""The man pages wsgate(1) and wsgate.json(5): they render without a single
warning from man(1) and groff, wsgate(1) documents every option that
`wsgate -h` lists, and `meson install` puts both where man finds them."""

import os
import re
import shutil
import subprocess

import pytest

from conftest import ROOT, wsgate

PAGES = [ROOT / "man" / "wsgate.1", ROOT / "man" / "wsgate.json.5"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_man_renders_without_warnings(page):
    if shutil.which("man") is None:
        pytest.skip("man is not installed (Debian package man-db)")
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MANPAGER="cat", PAGER="cat")
    r = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0
    assert r.stderr == "", r.stderr
    assert "NAME" in r.stdout and "wsgate" in r.stdout
    # A page whose lines all fit shows no roff escapes or macro names.
    assert not re.search(r"^\.[A-Z][a-z] ", r.stdout, re.M), "an unknown macro leaked"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_groff_finds_nothing_to_warn_about(page):
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed (Debian package groff-base)")
    r = subprocess.run(["groff", "-mandoc", "-ww", "-z", str(page)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_wsgate_1_documents_every_option_of_the_usage():
    usage = wsgate("-h").stdout
    opts = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", usage))
    assert {"-c", "-t", "--which", "-p", "--schema", "-V", "--version", "-h", "--help"} <= opts
    page = (ROOT / "man" / "wsgate.1").read_text()
    documented = set()
    for line in page.splitlines():
        for m in re.finditer(r"\bFl (-?[\w-]+)", line):
            documented.add("-" + m.group(1))
    assert opts <= documented, f"not in wsgate(1): {sorted(opts - documented)}"


def test_meson_install_installs_both_pages(tmp_path):
    build = os.environ.get("WSGATE_BUILD_DIR")
    if not build or shutil.which("meson") is None:
        pytest.skip("needs WSGATE_BUILD_DIR (set by meson test) and meson")
    r = subprocess.run(["meson", "install", "-C", build, "--no-rebuild", "--quiet",
                        "--destdir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    found = {p.name: p for p in tmp_path.rglob("*") if p.is_file()}
    assert "wsgate" in found
    for page in PAGES:
        installed = found.get(page.name)
        assert installed is not None, f"{page.name} not installed"
        section = page.suffix[1:]
        assert installed.parent.name == "man" + section
        assert installed.read_bytes() == page.read_bytes()
