"""SPEC §11 "Origin": routes[].origins refuses WebSocket upgrades from pages of
other sites (cross-site WebSocket hijacking, RFC 6455 §10.2) with 403 before
any backend is contacted; allow_no_origin lets non-browser clients (no
Origin) through; plain HTTP is not checked.
"""

import pytest

from conftest import free_port, make_config, pool
from wsg_raw import connect, http_exchange, upgrade_request


@pytest.fixture(scope="module")
def env(mstack):
    fake = mstack.fake("origin-fake")
    http = mstack.http("origin-http")
    port = free_port()
    routes = [
        {"path_prefix": "/strict", "pool": "ws",
         "origins": ["https://Chat.Example.com:443", "http://localhost:8080"]},
        {"path_prefix": "/tools", "pool": "ws", "origins": ["https://chat.example.com"],
         "allow_no_origin": True},
        {"path_prefix": "/page", "pool": "web", "origins": ["https://chat.example.com"]},
        {"path_prefix": "/", "pool": "ws"},
    ]
    gate = mstack.gate(make_config(port, {"ws": pool([fake.address]), "web": pool([http.address])},
                                   routes=routes, heartbeat={"interval_ms": 0}))
    return {"port": port, "fake": fake, "http": http, "gate": gate}


def upgrade(env, path, origin=None, extra=()):
    headers = list(extra) + ([("Origin", origin)] if origin is not None else [])
    req, _ = upgrade_request(path, "chat.example.com", headers=headers)
    status, _, _, _ = http_exchange(env["port"], req)
    return status


@pytest.mark.parametrize("origin", ["https://chat.example.com", "https://CHAT.example.com",
                                    "https://chat.example.com:443", "http://localhost:8080"])
def test_listed_origins_get_101(env, origin):
    assert upgrade(env, "/strict", origin) == 101


@pytest.mark.parametrize("origin", ["https://evil.example.com", "http://chat.example.com",
                                    "https://chat.example.com:8443", "null",
                                    "https://chat.example.com.evil.net", "not an origin",
                                    "https://chat.example.com/"])
def test_other_origins_get_403_and_no_backend_hears_of_them(env, origin):
    before = len(env["fake"].records)
    assert upgrade(env, "/strict", origin) == 403
    assert len(env["fake"].records) == before


def test_missing_origin_is_refused_unless_allowed(env):
    assert upgrade(env, "/strict") == 403
    assert upgrade(env, "/tools") == 101
    assert upgrade(env, "/tools", "https://evil.example.com") == 403


def test_two_origin_headers_are_refused(env):
    assert upgrade(env, "/strict", "https://chat.example.com",
                   extra=[("Origin", "https://chat.example.com")]) == 403


def test_routes_without_a_list_do_not_check(env):
    assert upgrade(env, "/other", "https://anything.example") == 101


def test_plain_http_is_not_checked(env):
    c = connect(env["port"])
    try:
        c.send(b"GET /page HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example.com\r\n"
               b"Connection: close\r\n\r\n")
        assert c.read_response()[0] == 200
    finally:
        c.close()
