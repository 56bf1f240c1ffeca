#!/usr/bin/env python3
"""Turns bench/demo_page.html into bench's demo_page.h at build time (meson
custom_target, as src/ctl/embed_dashboard.py does for the dashboard).

The header holds the page split at its backend-name marker as two byte
arrays (demo_page_head, demo_page_tail; initializer lists, not string
literals, which C11 only promises up to 4095 bytes) and DEMO_PAGE_CSP, a
Content-Security-Policy allowing the page's one inline <style> and one inline
<script> by their SHA-256 hashes, and requests only to its own origin.

usage: embed_page.py demo_page.html demo_page.h
"""

import base64
import hashlib
import re
import sys

MARKER = "<!--demo:backend-->"


def one_block(html, tag):
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
    if len(found) != 1 or len(re.findall(rf"<{tag}\b", html)) != 1:
        sys.exit(f"embed_page: expected exactly one <{tag}> without attributes")
    return found[0]


def sha256(text):
    return base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def c_array(name, data):
    lines = [f"static const unsigned char {name}[] = {{"]
    for i in range(0, len(data), 16):
        lines.append("    " + ", ".join(f"0x{b:02x}" for b in data[i:i + 16]) + ",")
    lines.append("};")
    return "\n".join(lines)


def main():
    src, out = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        html = f.read()
    if html.count(MARKER) != 1:
        sys.exit(f"embed_page: expected exactly one {MARKER} in {src}")
    if re.search(r"\sstyle=|\son[a-z]+=|\ssrc=|<link|https?://", html):
        sys.exit("embed_page: the page must be self-contained (no style=, on*=, src=, "
                 "<link> or absolute URL)")
    csp = ("default-src 'none'; "
           f"script-src 'sha256-{sha256(one_block(html, 'script'))}'; "
           f"style-src 'sha256-{sha256(one_block(html, 'style'))}'; "
           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    head, tail = html.split(MARKER)
    with open(out, "w", encoding="ascii") as f:
        f.write("/* Generated from bench/demo_page.html by bench/embed_page.py; do not edit. */\n")
        f.write("#ifndef ECHO_DEMO_PAGE_H\n#define ECHO_DEMO_PAGE_H\n\n")
        f.write(f'#define DEMO_PAGE_CSP "{csp}"\n\n')
        f.write(c_array("demo_page_head", head.encode("utf-8")) + "\n\n")
        f.write(c_array("demo_page_tail", tail.encode("utf-8")) + "\n\n")
        f.write("#endif\n")


if __name__ == "__main__":
    main()
