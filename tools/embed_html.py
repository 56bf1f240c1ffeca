#!/usr/bin/env python3
"""Turns an HTML page into a C header at build time (meson custom_target;
meson itself runs on Python, so nothing new is needed). Used for the admin
dashboard (src/ctl/dashboard.html) and the demo page (bench/demo_page.html).

The header holds the page split at its one marker comment, as two byte arrays
PREFIX_head and PREFIX_tail (initializer lists, not string literals: C11 only
promises string literals of 4095 bytes), and PREFIX_CSP (upper case), a
Content-Security-Policy that allows the page's one inline <style> and one
inline <script> by their SHA-256 hashes (CSP Level 3 hash-source) and nothing
else: no other script, style, frame or form target, and requests only to the
page's own origin (images too with --img-self).

usage: embed_html.py [--img-self] [--self-contained] IN.html OUT.h MARKER PREFIX
  --self-contained  also refuse src=, <link> and absolute URLs (no external assets)
"""

import base64
import hashlib
import os
import re
import sys


def fail(msg):
    sys.exit(f"embed_html: {msg}")


def one_block(html, tag):
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
    if len(found) != 1 or len(re.findall(rf"<{tag}\b", html)) != 1:
        fail(f"expected exactly one <{tag}> without attributes")
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
    args = sys.argv[1:]
    img_self = "--img-self" in args
    self_contained = "--self-contained" in args
    args = [a for a in args if not a.startswith("--")]
    if len(args) != 4:
        fail("usage: embed_html.py [--img-self] [--self-contained] IN.html OUT.h MARKER PREFIX")
    src, out, marker, prefix = args
    with open(src, encoding="utf-8") as f:
        html = f.read()
    if html.count(marker) != 1:
        fail(f"expected exactly one {marker} in {src}")
    if re.search(r"\sstyle=|\son[a-z]+=", html):
        fail("style= and on*= attributes would be blocked by the CSP")
    if self_contained and re.search(r"\ssrc=|<link|https?://", html):
        fail("the page must be self-contained (no src=, <link> or absolute URL)")
    csp = ("default-src 'none'; "
           f"script-src 'sha256-{sha256(one_block(html, 'script'))}'; "
           f"style-src 'sha256-{sha256(one_block(html, 'style'))}'; "
           "connect-src 'self'; " + ("img-src 'self'; " if img_self else "") +
           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    head, tail = html.split(marker)
    guard = f"WSGATE_GENERATED_{prefix.upper()}_H"
    with open(out, "w", encoding="ascii") as f:
        f.write(f"/* Generated from {os.path.basename(src)} by tools/embed_html.py;"
                " do not edit. */\n")
        f.write(f"#ifndef {guard}\n#define {guard}\n\n")
        f.write(f'#define {prefix.upper()}_CSP "{csp}"\n\n')
        f.write(c_array(f"{prefix}_head", head.encode("utf-8")) + "\n\n")
        f.write(c_array(f"{prefix}_tail", tail.encode("utf-8")) + "\n\n")
        f.write("#endif\n")


if __name__ == "__main__":
    main()
