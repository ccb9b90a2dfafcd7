"""Kubernetes manifests, Grafana dashboard and alert rules, checked offline.

Core manifests validate against the Kubernetes OpenAPI schemas that
kubernetes-validate ships.  It ships no schemas for Kustomization or the
Prometheus Operator CRDs (ServiceMonitor, PodMonitor, PrometheusRule), so those
are checked against small hand-written JSON schemas of the fields we use, with
unknown fields refused, plus cross-references (selectors, ports, names).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from signproxy import options
from signproxy.commands import run as run_command
from signproxy.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
GRAFANA = ROOT / "grafana"
RULES = GRAFANA / "alerts" / "signproxy.rules.yaml"
RULES_TEST = GRAFANA / "alerts" / "signproxy.rules.test.yaml"
DASHBOARD = GRAFANA / "dashboards" / "signproxy.json"

# The oldest version with native sidecars on by default and GA (1.33), and the
# newest kubernetes-validate knows.
K8S_VERSIONS = ("1.33.0", kubernetes_validate.latest_version())
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
UID = 10001  # the Dockerfile's USER


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in manifest_files():
        for doc in load_all(path):
            yield path, doc


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in by_kind(kind) if d["metadata"]["name"] == name]
    return doc


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for path, doc in manifests():
        if doc["kind"] in ("Deployment", "Job"):
            yield f"{path.relative_to(DEPLOY)}", doc["spec"]["template"]["spec"]


def all_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def signproxy_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for where, pod in pod_specs():
        for container in all_containers(pod):
            if container["image"] == "signproxy":
                yield where, container


def ids(items: list[tuple[str, Any]]) -> list[str]:
    return [where for where, _ in items]


POD_SPECS = list(pod_specs())
SIGNPROXY_CONTAINERS = list(signproxy_containers())


# -- schemas -------------------------------------------------------------------


def core_manifests() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p, d in manifests() if d["kind"] not in CRD_KINDS]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    ("path", "doc"),
    core_manifests(),
    ids=[f"{p.relative_to(DEPLOY)}:{d['kind']}" for p, d in core_manifests()],
)
def test_core_manifest_validates(path: Path, doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_validation_would_catch_a_misspelt_field() -> None:
    doc = one("Deployment", "signproxy-gateway")
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)


_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "labels": {"type": "object"}},
    "additionalProperties": False,
}
_SELECTOR = {
    "type": "object",
    "required": ["matchLabels"],
    "properties": {
        "matchLabels": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {"type": "string"},
        }
    },
    "additionalProperties": False,
}
_ENDPOINT = {
    "type": "object",
    "required": ["port", "path"],
    "properties": {
        "port": {"type": "string"},
        "path": {"type": "string"},
        "interval": {"type": "string", "pattern": r"^\d+[smh]$"},
        "scrapeTimeout": {"type": "string", "pattern": r"^\d+[smh]$"},
    },
    "additionalProperties": False,
}


def _crd(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
        "additionalProperties": False,
    }


CRD_SCHEMAS = {
    "ServiceMonitor": _crd(
        "ServiceMonitor",
        {
            "type": "object",
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": _SELECTOR,
                "endpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT},
            },
            "additionalProperties": False,
        },
    ),
    "PodMonitor": _crd(
        "PodMonitor",
        {
            "type": "object",
            "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "selector": _SELECTOR,
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": _ENDPOINT,
                },
            },
            "additionalProperties": False,
        },
    ),
    "PrometheusRule": _crd(
        "PrometheusRule",
        {
            "type": "object",
            "required": ["groups"],
            "properties": {"groups": {"type": "array", "minItems": 1}},
            "additionalProperties": False,
        },
    ),
}


@pytest.mark.parametrize("kind", sorted(CRD_KINDS))
def test_prometheus_operator_objects_have_known_fields_only(kind: str) -> None:
    docs = by_kind(kind)
    assert docs, f"no {kind} in deploy/"
    for doc in docs:
        jsonschema.validate(doc, CRD_SCHEMAS[kind])

    broken = json.loads(json.dumps(docs[0]))
    broken["spec"]["selectr"] = {}
    with pytest.raises(jsonschema.ValidationError, match="selectr"):
        jsonschema.validate(broken, CRD_SCHEMAS[kind])


def test_prometheusrule_carries_exactly_the_promtool_checked_rules() -> None:
    [rule] = by_kind("PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


# -- kustomize layout ----------------------------------------------------------

KUSTOMIZATION_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "resources"],
    "properties": {
        "apiVersion": {"const": "kustomize.config.k8s.io/v1beta1"},
        "kind": {"const": "Kustomization"},
        "resources": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "images": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "newName": {"type": "string"},
                    "newTag": {"type": "string"},
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}


def kustomizations() -> list[Path]:
    return sorted(DEPLOY.rglob("kustomization.yaml"))


def test_every_directory_is_a_kustomization() -> None:
    directories = {p.parent for p in DEPLOY.rglob("*.yaml")}
    assert directories == {k.parent for k in kustomizations()}


@pytest.mark.parametrize(
    "path", kustomizations(), ids=lambda p: str(p.parent.relative_to(ROOT))
)
def test_kustomization_lists_every_file_in_its_directory(path: Path) -> None:
    kustomization = yaml.safe_load(path.read_text())
    jsonschema.validate(kustomization, KUSTOMIZATION_SCHEMA)

    listed = kustomization["resources"]
    for entry in listed:
        target = (path.parent / entry).resolve()
        assert target.exists(), f"{path}: {entry} does not exist"
        if target.is_dir():
            assert (target / "kustomization.yaml").exists(), entry
    local_files = {
        p.name for p in path.parent.glob("*.yaml") if p.name != "kustomization.yaml"
    }
    assert local_files == {e for e in listed if "/" not in e and e.endswith(".yaml")}


def test_root_kustomization_reaches_the_gateway_and_monitoring() -> None:
    reached: set[Path] = set()

    def walk(directory: Path) -> None:
        reached.add(directory)
        resources = yaml.safe_load((directory / "kustomization.yaml").read_text())
        for entry in resources["resources"]:
            target = (directory / entry).resolve()
            if target.is_dir():
                walk(target)

    walk(DEPLOY)
    assert {DEPLOY / "gateway", DEPLOY / "monitoring", DEPLOY / "base"} <= reached


@pytest.mark.parametrize(
    "path", kustomizations(), ids=lambda p: str(p.parent.relative_to(ROOT))
)
def test_images_named_in_pods_are_set_by_the_kustomization(path: Path) -> None:
    kustomization = yaml.safe_load(path.read_text())
    images = {image["name"] for image in kustomization.get("images", [])}
    for manifest in path.parent.glob("*.yaml"):
        for doc in load_all(manifest):
            if doc.get("kind") in ("Deployment", "Job"):
                pod = doc["spec"]["template"]["spec"]
                for container in all_containers(pod):
                    if "/" not in container["image"] and ":" not in container["image"]:
                        assert container["image"] in images, manifest


# -- signproxy's own arguments -------------------------------------------------


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signproxy")
    run_command.add_parser(parser.add_subparsers(dest="command"))
    return parser


def container_environ(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as Kubernetes would build it."""
    environ: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        environ.update(one("ConfigMap", name)["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            environ[variable["name"]] = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            environ[variable["name"]] = one("Secret", ref["name"])["stringData"][
                ref["key"]
            ]
    return environ


def container_ports(container: dict[str, Any]) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container["ports"]}


def mount_secrets(where: str, container: dict[str, Any], root: Path) -> list[str]:
    """Write the container's mounted Secrets under `root` as Kubernetes would
    mount them, and return its args with the mount paths moved there."""
    [pod] = [pod for name, pod in POD_SPECS if name == where]
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    args = list(container["args"])
    for mount in container.get("volumeMounts", []):
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True)
        for key, value in one("Secret", secret["secretName"])["stringData"].items():
            (target / key).write_text(value)
        args = [arg.replace(mount["mountPath"], str(target)) for arg in args]
    return args


@pytest.mark.parametrize(
    ("where", "container"), SIGNPROXY_CONTAINERS, ids=ids(SIGNPROXY_CONTAINERS)
)
def test_signproxy_args_parse_with_run_own_options(
    where: str, container: dict[str, Any], tmp_path: Path
) -> None:
    args = run_parser().parse_args(["run", *mount_secrets(where, container, tmp_path)])
    environ = container_environ(container)

    config = options.resolve(
        {option.name: getattr(args, option.name) for option in options.OPTIONS},
        environ=environ,
    )
    settings = config.signer_settings(environ)
    settings.check()

    ports = container_ports(container)
    assert config.metrics_listen == ("0.0.0.0", ports["metrics"])
    assert config.log_format == "json"
    assert config.upstream is not None
    assert settings.scp_credentials is not None
    if where.startswith("gateway/"):
        assert config.listen == ("0.0.0.0", ports["s3"])
        # Listening beyond the pod, it lends its credentials to key holders only.
        client_keys = config.client_keys(environ)
        assert client_keys is not None
        assert client_keys.secret("REPLACE_ME") == "REPLACE_ME"
    else:
        # A sidecar serves its own pod only.
        assert config.listen == ("127.0.0.1", 8080)


def test_a_misspelt_flag_would_be_caught() -> None:
    with pytest.raises(SystemExit, match="2"):
        run_parser().parse_args(["run", "--metric-listen", "0.0.0.0:9090"])


def test_configmap_keys_are_signproxy_options() -> None:
    known = {option.env for option in options.OPTIONS}
    [configmap] = by_kind("ConfigMap")
    assert set(configmap["data"]) <= known, set(configmap["data"]) - known
    for value in configmap["data"].values():
        assert isinstance(value, str)


def test_secrets_are_templates_without_real_keys() -> None:
    assert one("Secret", "signproxy-scp")["stringData"] == {
        "access-key": "REPLACE_ME",
        "secret-key": "REPLACE_ME",
    }
    client_keys = one("Secret", "signproxy-client-keys")["stringData"]["keys.toml"]
    assert tomllib.loads(client_keys) == {"client_keys": {"REPLACE_ME": "REPLACE_ME"}}
    # Keys reach the proxy through the environment or a mounted file, never argv.
    for _, container in SIGNPROXY_CONTAINERS:
        assert not any("REPLACE_ME" in arg for arg in container["args"])
        names = {v["name"] for v in container["env"] if "valueFrom" in v}
        assert names == {"SCP_ACCESS_KEY", "SCP_SECRET_KEY"}


# -- pods: sidecars, probes, hardening -----------------------------------------


def test_sidecar_job_uses_a_native_sidecar() -> None:
    [job] = by_kind("Job")
    pod = job["spec"]["template"]["spec"]
    [sidecar] = [c for c in pod["initContainers"] if c["image"] == "signproxy"]

    assert sidecar["restartPolicy"] == "Always"
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    assert all(c["image"] != "signproxy" for c in pod["containers"])
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/readyz"
    app = pod["containers"][0]
    assert "http://127.0.0.1:8080" in app["args"]


def test_legacy_variant_runs_a_plain_container() -> None:
    deployment = one("Deployment", "signproxy-sidecar-legacy-example")
    pod = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert [c["name"] for c in pod["containers"]] == ["app", "signproxy"]


@pytest.mark.parametrize(
    ("where", "container"), SIGNPROXY_CONTAINERS, ids=ids(SIGNPROXY_CONTAINERS)
)
def test_probes_use_the_management_port(where: str, container: dict[str, Any]) -> None:
    assert container["livenessProbe"]["httpGet"] == {
        "path": "/healthz",
        "port": "metrics",
    }
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "metrics",
    }
    assert "metrics" in container_ports(container)


@pytest.mark.parametrize(("where", "pod"), POD_SPECS, ids=ids(POD_SPECS))
def test_every_container_is_hardened_and_bounded(
    where: str, pod: dict[str, Any]
) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    mounted_volumes = {v["name"] for v in pod["volumes"]}
    for container in all_containers(pod):
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == UID
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory"}
        # A read-only root needs a writable /tmp (mitmproxy's confdir, HOME).
        [tmp] = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert tmp["name"] in mounted_volumes


def test_dockerfile_user_matches_the_manifests() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^USER {UID}:{UID}$", dockerfile, re.MULTILINE)


# -- the gateway's parts fit together ------------------------------------------


def test_gateway_objects_select_the_gateway_pods() -> None:
    deployment = one("Deployment", "signproxy-gateway")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()

    service = one("Service", "signproxy")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    pdb = one("PodDisruptionBudget", "signproxy-gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    policy = one("NetworkPolicy", "signproxy-gateway")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()

    hpa = one("HorizontalPodAutoscaler", "signproxy-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "signproxy-gateway",
    }
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]

    [container] = deployment["spec"]["template"]["spec"]["containers"]
    ports = container_ports(container)
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    policy_ports = {
        p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]
    }
    assert policy_ports == set(ports)


def test_monitors_select_what_exists() -> None:
    service = one("Service", "signproxy")
    monitor = one("ServiceMonitor", "signproxy-gateway")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= service_ports

    pod_monitor = one("PodMonitor", "signproxy-sidecars")
    wanted = pod_monitor["spec"]["selector"]["matchLabels"].items()
    sidecar_pods = [
        doc["spec"]["template"]
        for _, doc in manifests()
        if doc["kind"] in ("Job", "Deployment")
        and wanted <= doc["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert len(sidecar_pods) == 2
    for template in sidecar_pods:
        [container] = [
            c for c in all_containers(template["spec"]) if c["image"] == "signproxy"
        ]
        assert "metrics" in container_ports(container)


# -- Grafana and alert rules ---------------------------------------------------


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    return [
        target["expr"]
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def alert_exprs() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def exported_sample_names() -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    text = Metrics().exposition().decode()
    return {
        sample.name
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_dashboard_takes_its_datasource_from_a_variable() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    wanted = {"type": "prometheus", "uid": "${datasource}"}
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == wanted, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == wanted
    assert "${datasource}" in json.dumps(variables["job"]["datasource"])


def test_dashboard_ids_and_layout() -> None:
    board = dashboard()
    panel_ids = [panel["id"] for panel in board["panels"]]
    assert len(panel_ids) == len(set(panel_ids))
    assert board["uid"] == "signproxy-overview"
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_dashboard_covers_what_operators_need() -> None:
    text = "\n".join(dashboard_exprs())
    for needed in (
        "signproxy_requests_total",
        "histogram_quantile(0.99, sum by (le) (rate(signproxy_request_duration_",
        "signproxy_upstream_duration_seconds_bucket",
        "signproxy_signing_duration_seconds_bucket",
        "signproxy_sts_requests_total",
        "signproxy_sts_request_duration_seconds_bucket",
        'signproxy_auth_cache_lookups_total{job=~"$job", result="hit"}',
        "signproxy_credentials_expiry_timestamp_seconds",
        "signproxy_payload_bytes_total",
    ):
        assert needed in text, needed


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_metric_queried_is_exported(source: str) -> None:
    exprs = dashboard_exprs() if source == "dashboard" else alert_exprs()
    referenced = {
        name for expr in exprs for name in re.findall(r"\bsignproxy_[a-z_]+", expr)
    }
    assert referenced
    assert referenced <= exported_sample_names(), referenced - exported_sample_names()


def test_grafana_provisioning_files() -> None:
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "signproxy.yaml").read_text()
    )
    assert provider["apiVersion"] == 1
    [entry] = provider["providers"]
    assert entry["type"] == "file"
    assert entry["options"]["path"].startswith("/")

    sources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    [source] = sources["datasources"]
    assert source["type"] == "prometheus"


def promtool() -> str:
    found = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if found is None:
        pytest.skip("promtool not installed (Debian package prometheus; .ci/run)")
    return found


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_exprs())} rules found" in result.stdout


def test_promtool_unit_tests_fire_the_alerts() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", str(RULES_TEST)],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULES_TEST.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests_cover_every_alert() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load(RULES_TEST.read_text())
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert fired == alerts
