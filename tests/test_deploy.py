"""deploy/: the Kubernetes manifests validate offline against the Kubernetes schemas
(kubernetes-validate, which bundles them), kustomization.yaml names only files that exist,
and what the roles need is wired (probes, the GPU, the shared volume, the scrape
annotations); the compose file starts every role healthy; the Dockerfile runs as a user."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
import yaml

from tests.helpers import ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.30.0"
ROLES = {"api": 9100, "consumer": 9101, "trainer": 9102, "indexer": 9103}


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def generated_config_maps(kust: dict) -> list[dict]:
    """The configMapGenerator's ConfigMaps, as kustomize makes them from their env files."""
    out = []
    for gen in kust.get("configMapGenerator", []):
        data = {}
        for env in gen.get("envs", []):
            for line in (K8S / env).read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    key, _, value = line.partition("=")
                    data[key] = value
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    return out


def resources() -> list[dict]:
    kust = kustomization()
    docs = [d for f in kust["resources"] for d in yaml.safe_load_all((K8S / f).read_text()) if d]
    return docs + generated_config_maps(kust)


def by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in resources() if d["kind"] == kind}


def test_kustomization_lists_every_manifest_and_only_existing_files():
    kust = kustomization()
    listed = set(kust["resources"])
    assert all((K8S / f).is_file() for f in listed)
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}  # none forgotten
    assert all((K8S / env).is_file() for gen in kust["configMapGenerator"] for env in gen["envs"])


@pytest.mark.parametrize("doc", resources(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_validates_against_the_kubernetes_schema(doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises ValidationError naming the field


def test_a_broken_manifest_is_refused():
    bad = by_kind("Deployment")["modx-api"]
    bad["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    typo = by_kind("Deployment")["modx-api"]
    typo["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):  # strict: an unknown field is an error
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)


def test_the_roles_are_wired():
    deployments, claims = by_kind("Deployment"), by_kind("PersistentVolumeClaim")
    assert set(deployments) == {f"modx-{role}" for role in ROLES}
    assert claims["modx-data"]["spec"]["accessModes"] == ["ReadWriteMany"]
    config = by_kind("ConfigMap")
    for role, port in ROLES.items():
        spec = deployments[f"modx-{role}"]["spec"]
        template = spec["template"]
        assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        notes = template["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/port"] == str(port)
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        assert container["args"][:2] == ["modx", role]
        assert {"name": "metrics", "containerPort": port} in container["ports"]
        assert "livenessProbe" in container
        assert all(ref["configMapRef"]["name"] in config for ref in container["envFrom"])
        claim = {v["name"]: v for v in pod["volumes"]}["data"]["persistentVolumeClaim"]["claimName"]
        assert claim in claims and {"name": "data", "mountPath": "/srv/modx"} in container["volumeMounts"]
    api = deployments["modx-api"]["spec"]
    assert api["replicas"] >= 2
    probes = api["template"]["spec"]["containers"][0]
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz" and "startupProbe" in probes
    trainer = deployments["modx-trainer"]["spec"]["template"]["spec"]["containers"][0]
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == 1 and trainer["image"] == "modx-gpu"
    sets = by_kind("StatefulSet")
    assert set(sets) == {"kafka", "redis"}
    kafka = {e["name"]: e["value"] for e in sets["kafka"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert len(kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == sets["kafka"]["spec"]["replicas"]
    services = by_kind("Service")
    bootstrap = config["modx-settings"]["data"]["MODX_KAFKA_BOOTSTRAP"]
    assert bootstrap.split(":")[0].split(".")[-1] in services and "redis" in services


def test_compose_starts_every_role_after_what_it_needs_is_healthy():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    for name, service in services.items():
        assert "healthcheck" in service, name
        for needed, condition in (service.get("depends_on") or {}).items():
            assert condition == {"condition": "service_healthy"} and needed in services, name
    for role, port in ROLES.items():
        assert set(services[role]["depends_on"]) == {"kafka", "redis"}
        if role != "api":
            assert f":{port}/metrics" in " ".join(services[role]["healthcheck"]["test"])
    assert services["trainer"]["build"]["target"] == "gpu" and services["api"]["build"]["target"] == "cpu"
    assert services["prometheus"]["profiles"] == ["monitoring"] and services["grafana"]["profiles"] == ["monitoring"]
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert targets == {f"{role}:{port}" for role, port in ROLES.items()}


def test_dockerfile_runs_as_a_user_with_a_healthcheck_and_faiss_gpu_only_in_the_gpu_image():
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    named = {s.split()[2]: s for s in stages}
    assert set(named) == {"base", "gpu", "cpu"} and stages[-1].startswith("base AS cpu")  # cpu is the default
    assert "faiss-gpu" in named["gpu"] and "faiss-gpu" not in named["base"] + named["cpu"]
    assert all(re.search(r"^USER modx$", named[s], re.M) for s in ("gpu", "cpu"))
    assert "HEALTHCHECK" in named["base"]
