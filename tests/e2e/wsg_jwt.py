"""JWTs for the edge-security tests, with keys made at test time by the
`openssl` CLI (nothing committed): an HMAC secret (`openssl rand`) signed
here with hmac, and an RSA key pair whose RS256 signatures come from
`openssl dgst -sign`."""

import base64
import hashlib
import hmac
import json
import subprocess
import time
from pathlib import Path


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def claims(sub="alice", ttl_s=3600, **extra):
    now = int(time.time())
    c = {"sub": sub, "iss": "https://id.test", "aud": "chat", "iat": now, "exp": now + ttl_s}
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


class Keys:
    def __init__(self, directory):
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.secret_path = d / "secret"
        out = subprocess.run(["openssl", "rand", "-base64", "48"], check=True,
                             capture_output=True).stdout
        self.secret_path.write_bytes(out)
        self.secret = out.rstrip(b"\n")  # one trailing newline is not part of it
        self.rsa_key = d / "rsa.pem"
        self.rsa_pub = d / "rsa.pub.pem"
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", str(self.rsa_key)], check=True,
                       capture_output=True)
        subprocess.run(["openssl", "pkey", "-in", str(self.rsa_key), "-pubout", "-out",
                        str(self.rsa_pub)], check=True, capture_output=True)

    def hs256(self, payload, secret=None):
        head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = b64url(json.dumps(payload).encode())
        sig = hmac.new(secret or self.secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{b64url(sig)}"

    def rs256(self, payload):
        head = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
        body = b64url(json.dumps(payload).encode())
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.rsa_key)],
                             input=f"{head}.{body}".encode(), check=True,
                             capture_output=True).stdout
        return f"{head}.{body}.{b64url(sig)}"

    @staticmethod
    def unsigned(payload):
        head = b64url(json.dumps({"alg": "none"}).encode())
        return f"{head}.{b64url(json.dumps(payload).encode())}."
