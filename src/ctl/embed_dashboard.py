#!/usr/bin/env python3
"""Turns src/ctl/dashboard.html into a C header at build time (meson
custom_target; meson itself runs on Python, so nothing new is needed).

The header holds the page split at its data marker, as two byte arrays (an
initializer list, not a string literal: C11 only promises string literals of
4095 bytes), and WSG_DASHBOARD_CSP, a Content-Security-Policy that allows the
page's one inline <style> and one inline <script> by their SHA-256 hashes
(CSP Level 3 hash-source) and nothing else: no other script, style, image,
frame or form target, and requests only to the admin endpoint itself.

usage: embed_dashboard.py dashboard.html dashboard_html.h
"""

import base64
import hashlib
import re
import sys

MARKER = "<!--wsg:data-->"


def one_block(html, tag):
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
    if len(found) != 1 or len(re.findall(rf"<{tag}\b", html)) != 1:
        sys.exit(f"embed_dashboard: expected exactly one <{tag}> without attributes")
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
        sys.exit(f"embed_dashboard: expected exactly one {MARKER} in {src}")
    if re.search(r"\sstyle=|\son[a-z]+=", html):
        sys.exit("embed_dashboard: style= and on*= attributes would be blocked by the CSP")
    csp = ("default-src 'none'; "
           f"script-src 'sha256-{sha256(one_block(html, 'script'))}'; "
           f"style-src 'sha256-{sha256(one_block(html, 'style'))}'; "
           "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
           "frame-ancestors 'none'")
    head, tail = html.split(MARKER)
    with open(out, "w", encoding="ascii") as f:
        f.write("/* Generated from src/ctl/dashboard.html by src/ctl/embed_dashboard.py;"
                " do not edit. */\n")
        f.write("#ifndef WSGATE_DASHBOARD_HTML_H\n#define WSGATE_DASHBOARD_HTML_H\n\n")
        f.write(f'#define WSG_DASHBOARD_CSP "{csp}"\n\n')
        f.write(c_array("dashboard_head", head.encode("utf-8")) + "\n\n")
        f.write(c_array("dashboard_tail", tail.encode("utf-8")) + "\n\n")
        f.write("#endif\n")


if __name__ == "__main__":
    main()
