"""deploy/kubernetes/, checked without a cluster: the manifests parse, each
piece docs/operations.md promises is there and wired to the others (labels,
ports, the mounted ConfigMap, probes on the admin endpoint), the ConfigMap's
JSON is a valid wsgate configuration whose backends are the StatefulSet's
pods, the shutdown numbers add up (preStop + drain_ms fit in
terminationGracePeriodSeconds), and the docs quote the same numbers."""

import json
import re

import pytest
import yaml

from conftest import ROOT, wsgate

K8S = ROOT / "deploy" / "kubernetes"
OPS = ROOT / "docs" / "operations.md"


@pytest.fixture(scope="module")
def docs():
    out = {}
    for f in sorted(K8S.glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        for d in yaml.safe_load_all(f.read_text()):
            assert d and "kind" in d, f
            key = (d["kind"], d["metadata"]["name"])
            assert key not in out, f"{key} twice"
            out[key] = d
    return out


def one(docs, kind, pred=lambda d: True):
    found = [d for (k, _), d in docs.items() if k == kind and pred(d)]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(scope="module")
def parts(docs):
    dep = one(docs, "Deployment")
    sts = one(docs, "StatefulSet")
    cm = one(docs, "ConfigMap")
    lb = one(docs, "Service", lambda d: d["spec"].get("type") == "LoadBalancer")
    headless = one(docs, "Service", lambda d: d["spec"].get("clusterIP") == "None")
    pdb = one(docs, "PodDisruptionBudget")
    return dep, sts, cm, lb, headless, pdb


@pytest.fixture(scope="module")
def config(parts, tmp_path_factory):
    cm = parts[2]
    (key, text), = cm["data"].items()
    path = tmp_path_factory.mktemp("k8s") / key
    path.write_text(text)
    return key, json.loads(text), path


def container(dep):
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def port_of(c, name):
    return next(p["containerPort"] for p in c["ports"] if p["name"] == name)


def test_kustomization_lists_every_manifest():
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(k["resources"]) == sorted(
        f.name for f in K8S.glob("*.yaml") if f.name != "kustomization.yaml")


def test_the_pieces_are_wired_together(parts, config):
    dep, sts, cm, lb, headless, pdb = parts
    key, cfg, _ = config
    pod = dep["spec"]["template"]
    assert dep["spec"]["replicas"] >= 2
    assert selects(dep["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    assert selects(lb["spec"]["selector"], pod["metadata"]["labels"])
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    assert 1 <= pdb["spec"]["minAvailable"] < dep["spec"]["replicas"]
    c = container(dep)
    # The public listener is what the LoadBalancer forwards to.
    listen = int(cfg["listeners"][0]["bind"].rsplit(":", 1)[1])
    (svc_port,) = lb["spec"]["ports"]
    assert port_of(c, svc_port["targetPort"]) == listen
    # The ConfigMap is mounted where -c looks.
    (vol,) = pod["spec"]["volumes"]
    assert vol["configMap"]["name"] == cm["metadata"]["name"]
    (mnt,) = c["volumeMounts"]
    assert mnt["name"] == vol["name"]
    assert c["args"] == ["-c", f"{mnt['mountPath']}/{key}"]


def test_readiness_is_healthz_on_the_admin_endpoint(parts, config):
    dep = parts[0]
    _, cfg, _ = config
    c = container(dep)
    host, aport = cfg["admin"]["bind"].rsplit(":", 1)
    assert host == "0.0.0.0", "the kubelet probes the pod's address"
    probe = c["readinessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert port_of(c, probe["port"]) == int(aport)
    # Liveness must survive the 503 of a shutdown.
    assert "httpGet" not in c["livenessProbe"]


def test_backends_are_the_headless_service_resolved(parts, config):
    _, sts, _, _, headless, _ = parts
    _, cfg, _ = config
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
    assert selects(headless["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"])
    (port,) = headless["spec"]["ports"]
    (pool,) = cfg["pools"].values()
    # DNS discovery (SPEC §12): the Service's name stands for every ready
    # pod; the short name, which the pod's resolv.conf search list
    # completes in whatever namespace the manifests are applied to.
    (b,) = pool["backends"]
    assert b == {"address": f"{headless['metadata']['name']}:{port['port']}", "resolve": True}
    assert pool["resolve_ms"] > 0


def test_the_configmap_json_is_a_valid_configuration(config, tmp_path):
    _, cfg, path = config
    # `wsgate -t` checks it whole: a name with "resolve" is looked up at
    # run time (it exists only in the cluster), so it is no error here.
    r = wsgate("-t", "-c", str(path))
    assert r.returncode == 0, r.stderr


def test_shutdown_fits_in_the_grace_period_and_the_docs_agree(parts, config):
    dep = parts[0]
    _, cfg, _ = config
    spec = dep["spec"]["template"]["spec"]
    grace = spec["terminationGracePeriodSeconds"]
    pre = container(dep)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre[0] == "sleep"
    sleep = int(pre[1])
    drain_s = cfg["timeouts"]["drain_ms"] / 1000
    # preStop runs first, then SIGTERM: 1001 to every client, up to drain_ms.
    assert sleep + drain_s < grace, (sleep, drain_s, grace)
    text = OPS.read_text()
    sec = text[text.index("## Kubernetes"):]
    sec = sec[:sec.index("\n## ", 1)]
    for needle in (f"terminationGracePeriodSeconds: {grace}", f"sleep {sleep}",
                   f'"drain_ms": {cfg["timeouts"]["drain_ms"]}',
                   f"replicas: {dep['spec']['replicas']}",
                   f"minAvailable: {parts[5]['spec']['minAvailable']}"):
        assert needle in sec, f"docs/operations.md, Kubernetes: no {needle!r}"
    for f in ("backends.yaml", "configmap.yaml", "wsgate.yaml", "kustomization.yaml"):
        assert f in sec, f
    assert re.search(r"kubectl apply -k deploy/kubernetes", sec)
