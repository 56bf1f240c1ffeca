"""docker/compose.yaml and the image it builds, checked without a docker
engine: the YAML's structure (two wsgate instances on the same config and
different ports, three echo backends, Prometheus scraping both instances),
every file it mounts exists, the configurations it uses are valid and agree
with it, and the Dockerfile ships a default configuration and a HEALTHCHECK
on /healthz. Where `docker compose` exists, it checks the file too."""

import json
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT, wsgate

DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def by_role(compose):
    svcs = compose["services"]
    gates = {n: s for n, s in svcs.items() if s.get("build") and "entrypoint" not in s}
    echoes = {n: s for n, s in svcs.items()
              if any("echo-backend" in a for a in s.get("entrypoint", []))}
    proms = {n: s for n, s in svcs.items() if str(s.get("image", "")).startswith("prom/prometheus")}
    return gates, echoes, proms


def host_port(mapping):
    host, _, container = mapping.rpartition(":")
    return int(host.rsplit(":", 1)[-1]), int(container)


def mounts(svc):
    """(host path, container path) of each bind mount, host paths resolved."""
    for v in svc.get("volumes", []):
        src, dst = v.split(":")[:2]
        yield (COMPOSE.parent / src).resolve(), dst


def config_of(svc):
    cmd = svc["command"]
    path = cmd[cmd.index("-c") + 1]
    for src, dst in mounts(svc):
        if dst == path:
            return src
    raise AssertionError(f"{path} is not mounted")


def test_two_wsgate_instances_same_config_different_ports(compose):
    gates, _, _ = by_role(compose)
    assert len(gates) == 2
    configs = {config_of(s) for s in gates.values()}
    assert len(configs) == 1, "the instances use different configurations"
    ports = [host_port(p)[0] for s in gates.values() for p in s["ports"]]
    assert len(ports) == len(set(ports)), f"host ports collide: {ports}"
    for s in gates.values():
        assert (COMPOSE.parent / s["build"]["context"] / s["build"]["dockerfile"]).is_file()


def test_every_mounted_file_exists(compose):
    n = 0
    for name, svc in compose["services"].items():
        for src, _ in mounts(svc):
            assert src.exists(), f"{name} mounts {src}, which does not exist"
            n += 1
    assert n >= 5


def test_the_config_names_the_echo_services(compose):
    gates, echoes, _ = by_role(compose)
    assert len(echoes) == 3
    cfg_file = config_of(next(iter(gates.values())))
    # --which loads the file without resolving names (compose's DNS is not here).
    r = wsgate("--which", "alice", "-c", str(cfg_file))
    assert r.returncode == 0, r.stderr
    cfg = json.loads(cfg_file.read_text())
    addrs = {b["address"] for p in cfg["pools"].values() for b in p["backends"]}
    for name, svc in echoes.items():
        ep = svc["entrypoint"]
        assert f"{name}:{ep[ep.index('--port') + 1]}" in addrs
        assert ep[ep.index("--host") + 1] == "0.0.0.0"
    assert len(addrs) == 3
    # The admin endpoint is reachable from the other containers.
    assert cfg["admin"]["bind"].startswith("0.0.0.0:")


def test_prometheus_scrapes_both_instances(compose):
    gates, _, proms = by_role(compose)
    assert len(proms) == 1
    prom = next(iter(proms.values()))
    conf = next(src for src, dst in mounts(prom) if dst.endswith("prometheus.yml"))
    scrape = yaml.safe_load(conf.read_text())["scrape_configs"]
    cfg = json.loads(config_of(next(iter(gates.values()))).read_text())
    admin_port = cfg["admin"]["bind"].rsplit(":", 1)[1]
    targets = {t for job in scrape for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{n}:{admin_port}" for n in gates}
    job = next(j for j in scrape if j["metrics_path"] == "/metrics")
    assert job["authorization"]["credentials"] == cfg["admin"]["token"]


def test_grafana_gets_the_dashboard(compose):
    g = compose["services"]["grafana"]
    dst = dict((d, s) for s, d in mounts(g))
    assert dst["/var/lib/grafana/dashboards/wsgate.json"] == ROOT / "deploy" / "grafana" / "wsgate.json"


def test_dockerfile_default_config_and_healthcheck():
    df = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^COPY docker/wsgate\.json /etc/wsgate/wsgate\.json$", df, re.M)
    assert re.search(r'^CMD \["-c", "/etc/wsgate/wsgate\.json"\]$', df, re.M)
    m = re.search(r"^HEALTHCHECK .*\n?.*http://127\.0\.0\.1:(\d+)/healthz", df, re.M)
    assert m, "no HEALTHCHECK on /healthz"
    default = DOCKER / "wsgate.json"
    cfg = json.loads(default.read_text())
    bind = cfg["admin"]["bind"]
    assert bind.rsplit(":", 1)[1] == m.group(1)
    assert bind.rsplit(":", 1)[0] in ("127.0.0.1", "0.0.0.0")
    r = wsgate("-t", "-c", str(default))
    assert r.returncode == 0, r.stderr
    # The compose config must pass the same check.
    compose_cfg = json.loads((DOCKER / "compose" / "wsgate.json").read_text())
    assert compose_cfg["admin"]["bind"].rsplit(":", 1)[1] == m.group(1)


def test_docker_compose_config_accepts_it():
    if shutil.which("docker") is None or subprocess.run(
            ["docker", "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose is not installed; the structure is checked above")
    r = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
