"""The Helm chart, rendered by the real Helm engine (helm-python-sdk) and checked against Kubernetes'
schemas (kubernetes-validate) and against the server itself: probes, ports and RMSERVE_* settings
come from service/, so the chart and the server cannot drift apart. Offline, a second or two."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

try:  # in the test extra: missing means a broken setup, which must fail, not skip
    import helm_python as helm
    import kubernetes_validate
except ImportError as exc:
    raise ImportError(
        f"{exc.name} is missing: the chart tests need the test extra (pip install -e '.[test]')"
    ) from exc

from service.api.http.routes import router
from service.app import open_paths
from service.metrics import Metrics
from service.settings import Settings

CHART = Path(__file__).parents[2] / "helm" / "rmserve"
RELEASE = "rm"
NAMESPACE = "ml"
# Kubernetes versions to validate against: the oldest the chart accepts (Chart.yaml's kubeVersion) and
# the newest kubernetes-validate bundles.
_OLDEST = re.search(r">=\s*(\d+\.\d+)", yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"])
KUBE_VERSIONS = (_OLDEST.group(1) if _OLDEST else "missing", kubernetes_validate.latest_version())
# Custom resources have no schema in kubernetes-validate: test_service_monitor_scrapes_the_metrics_endpoint
# checks this one by hand.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

# Settings the chart sets itself, from values that other parts of it depend on (ports, volume, drain,
# Secret); values.schema.json refuses them under `config`.
CHART_MANAGED = {"host", "port", "grpc_port", "store", "model", "shutdown_grace_s", "api_keys"}
# Settings the chart refuses: with protected health endpoints every probe would get 401.
REFUSED = {"protect_health"}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "gpu-values": helm.values_from_yaml((CHART / "ci" / "gpu-values.yaml").read_text()),
    # The other model-store source, a chart-made Secret, CPU autoscaling; and GPU-utilisation scaling.
    "init-container": {
        "modelStore": {"source": "initContainer"}, "apiKeys": {"keys": ["k1", "k2"]},
        "autoscaling": {"enabled": True}, "service": {"headless": True}, "models": ["demo-minilm-rm"],
        "config": {"RMSERVE_TRUST_REMOTE_CODE": ["demo-minilm-rm"], "RMSERVE_MAX_BODY_BYTES": 8388608},
    },
    "gpu-utilisation": {"gpu": {"enabled": True}, "autoscaling": {"enabled": True, "mode": "gpu"}},
}


def env_name(field: str) -> str:
    return Settings.model_config["env_prefix"] + field.upper()


def chart_values(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The chart's defaults merged with `values`, as an install would use them."""
    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(values or {})


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every manifest `helm template` would print for these values."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return [
        doc
        for name, text in sorted(rendered.items()) if not name.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text) if doc
    ]


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def case(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(VALUE_SETS[request.param])


def only(manifests: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and name in (None, m["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def containers(deployment: dict[str, Any]) -> Iterator[dict[str, Any]]:
    pod = deployment["spec"]["template"]["spec"]
    yield from pod.get("initContainers", [])
    yield from pod["containers"]


def server_env(manifests: list[dict[str, Any]]) -> dict[str, str]:
    """The server container's environment: the ConfigMap it takes with envFrom, then its env (Secret
    references as a placeholder)."""
    container = only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        env |= only(manifests, "ConfigMap", source["configMapRef"]["name"])["data"]
    for var in container.get("env", []):
        env[var["name"]] = var.get("value", "from-secret")
    return env


def settings_from(env: dict[str, str]) -> Settings:
    """The server's settings in that environment, read the way `rmserve serve` reads them."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("RMSERVE_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        return Settings()


def get_routes() -> set[str]:
    return {route.path for route in router.routes if "GET" in route.methods}


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_chart_lints_strict(values: str) -> None:
    report = helm.lint(CHART, VALUE_SETS[values], strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert not problems and not report["errors"], problems or report["errors"]


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_manifest_validates_against_kubernetes(case: tuple[str, list[dict[str, Any]]],
                                                     kube_version: str) -> None:
    _, manifests = case
    checked = 0
    for manifest in manifests:
        if (manifest["apiVersion"], manifest["kind"]) in CUSTOM_KINDS:
            continue
        try:  # strict: unknown fields are errors too
            kubernetes_validate.validate(manifest, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{manifest['kind']} {manifest['metadata']['name']}: {path}: {exc.message}")
        checked += 1
    assert checked >= 5  # ConfigMap, Deployment, Service, ServiceAccount, PodDisruptionBudget at least


def test_the_gpu_values_render_every_feature() -> None:
    kinds = sorted(m["kind"] for m in render(VALUE_SETS["gpu-values"]))
    assert kinds == sorted([
        "ConfigMap", "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget",
        "Service", "Service", "ServiceAccount", "ServiceMonitor",
    ])


def test_probes_and_ports_are_the_servers(case: tuple[str, list[dict[str, Any]]]) -> None:
    _, manifests = case
    env = server_env(manifests)
    container = only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(env["RMSERVE_PORT"]), "grpc": int(env["RMSERVE_GRPC_PORT"])}
    probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness", "readiness")}
    assert {kind: probe["path"] for kind, probe in probes.items()} == {
        "startup": "/healthz", "liveness": "/healthz", "readiness": "/readyz"
    }
    assert {probe["path"] for probe in probes.values()} <= get_routes()
    assert {probe["port"] for probe in probes.values()} == {"http"}
    # Probes (and Prometheus) send no API key: the server must leave those paths open.
    settings = settings_from(env)
    assert {"/healthz", "/readyz"} <= open_paths(settings)
    assert settings.protect_metrics or "/metrics" in open_paths(settings)
    service = only(manifests, "Service", f"{RELEASE}-rmserve")
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {
        "http": "http", "grpc": "grpc", "metrics": "http"  # /metrics is on the HTTP port
    }
    assert "/metrics" in get_routes()


def test_default_ports_are_the_servers_defaults() -> None:
    env = server_env(render({}))
    assert int(env["RMSERVE_PORT"]) == Settings.model_fields["port"].default
    assert int(env["RMSERVE_GRPC_PORT"]) == Settings.model_fields["grpc_port"].default


def test_every_env_name_is_a_server_setting(case: tuple[str, list[dict[str, Any]]]) -> None:
    values, manifests = case
    known = {env_name(field) for field in Settings.model_fields}
    deployment = only(manifests, "Deployment")
    names = {var["name"] for c in containers(deployment) for var in c.get("env", [])}
    names |= {key for m in manifests if m["kind"] == "ConfigMap" and "data" in m for key in m["data"]
              if not m["metadata"]["name"].endswith("-dashboard")}
    unknown = {n for n in names if n.startswith("RMSERVE_")} - known
    assert not unknown, f"not settings of the server: {sorted(unknown)}"
    # And the server accepts every value the chart gives it (JSON lists, booleans, numbers).
    settings = settings_from(server_env(manifests))
    merged = chart_values(VALUE_SETS[values])
    assert settings.host == "0.0.0.0"
    assert str(settings.store) == merged["modelStore"]["mountPath"]
    assert settings.model == merged["models"]
    assert settings.shutdown_grace_s == merged["shutdown"]["graceSeconds"]
    assert bool(settings.api_keys) == bool(merged["apiKeys"]["keys"] or merged["apiKeys"]["existingSecret"])


def test_termination_grace_covers_prestop_and_drain(case: tuple[str, list[dict[str, Any]]]) -> None:
    _, manifests = case
    pod = only(manifests, "Deployment")["spec"]["template"]["spec"]
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain_s = settings_from(server_env(manifests)).shutdown_grace_s
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain_s


def test_resource_requests_fit_limits(case: tuple[str, list[dict[str, Any]]]) -> None:
    _, manifests = case
    for container in containers(only(manifests, "Deployment")):
        resources = container.get("resources", {})
        limits, requests = resources.get("limits", {}), resources.get("requests", {})
        for resource in set(limits) & set(requests):
            assert quantity(requests[resource]) <= quantity(limits[resource]), (container["name"], resource)


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number (the suffixes a chart uses: m, Ki..Ti, k..T)."""
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
                "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    number, suffix = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()  # type: ignore[union-attr]
    return float(number) * suffixes.get(suffix, 1)


def test_config_schema_agrees_with_the_settings() -> None:
    """values.schema.json's `config` has every server setting the chart does not set itself, with
    the server's own types, choices and bounds, so a typo or a bad value fails at install time."""
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]
    server = Settings.model_json_schema()["properties"]
    allowed = {env_name(field) for field in server} - {env_name(f) for f in CHART_MANAGED | REFUSED}
    assert set(schema["properties"]) == allowed, (
        "a server setting is neither in values.schema.json's config nor in CHART_MANAGED/REFUSED"
    )
    assert schema["additionalProperties"] is False
    for field, spec in server.items():
        if env_name(field) not in allowed:
            continue
        spec = next((s for s in spec.get("anyOf", []) if s.get("type") != "null"), spec)
        constraints = {"type", "enum", "minimum", "maximum", "exclusiveMinimum", "items"}
        chart_spec = schema["properties"][env_name(field)]
        assert {k: v for k, v in chart_spec.items() if k in constraints} == {
            k: v for k, v in spec.items() if k in constraints
        }, field


@pytest.mark.parametrize(("config", "reason"), [
    ({"RMSERVE_MODLE": "typo"}, r"at '/config': additional properties 'RMSERVE_MODLE' not allowed"),
    ({"RMSERVE_PORT": 9000}, r"at '/config': additional properties 'RMSERVE_PORT' not allowed"),
    ({"RMSERVE_PROTECT_HEALTH": True},
     r"at '/config': additional properties 'RMSERVE_PROTECT_HEALTH' not allowed"),
    ({"RMSERVE_TOO_LONG": "cut"},
     r"at '/config/RMSERVE_TOO_LONG': value must be one of 'truncate', 'reject'"),
    ({"RMSERVE_MAX_QUEUE_ITEMS": 0}, r"at '/config/RMSERVE_MAX_QUEUE_ITEMS': minimum: got 0, want 1"),
])
def test_the_schema_refuses_bad_settings(config: dict[str, Any], reason: str) -> None:
    """Each bad value is refused by values.schema.json for its own reason, naming the key."""
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError, match=reason):
        chart.render({"config": config}, name=RELEASE)


def test_queue_depth_autoscaling_uses_an_exported_metric() -> None:
    exported = {metric.name for metric in Metrics().registry.collect()}
    metric = chart_values()["autoscaling"]["queueDepth"]["metricName"]
    assert metric in exported
    manifests = render(VALUE_SETS["gpu-values"])
    hpa = only(manifests, "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == metric
    assert hpa["spec"]["scaleTargetRef"]["name"] == only(manifests, "Deployment")["metadata"]["name"]


def test_service_monitor_scrapes_the_metrics_endpoint() -> None:
    """Checked by hand, as kubernetes-validate has no schema for the Prometheus Operator's CRDs."""
    manifests = render(VALUE_SETS["gpu-values"])
    monitor, service = only(manifests, "ServiceMonitor"), only(manifests, "Service", f"{RELEASE}-rmserve")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"].items()
    # One Service only: the headless one has the same pods, which would be scraped twice.
    services = [m for m in manifests if m["kind"] == "Service"]
    assert [s for s in services if selector <= s["metadata"]["labels"].items()] == [service]
    assert set(monitor["spec"]) <= {"selector", "endpoints"}
    (endpoint,) = monitor["spec"]["endpoints"]
    fields = {"port", "path", "interval", "scrapeTimeout", "authorization", "metricRelabelings"}
    assert set(endpoint) <= fields
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] in get_routes() and endpoint["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    # Protected metrics need credentials in the ServiceMonitor.
    assert not settings_from(server_env(manifests)).protect_metrics or "authorization" in endpoint


def test_the_dashboard_configmap_carries_the_dashboard() -> None:
    dashboard = only(render(VALUE_SETS["gpu-values"]), "ConfigMap", f"{RELEASE}-rmserve-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "rmserve.json").read_text())
    assert json.loads(dashboard["data"]["rmserve.json"]) == shipped


def test_every_value_is_documented() -> None:
    """Each key in values.yaml has a comment above it, or sits under a key whose comment starts with
    `# --` (helm-docs' convention: such a comment covers the whole value)."""
    undocumented = []
    covered_by: list[int] = []  # indents of the enclosing keys documented with `# --`
    comment: list[str] = []  # the comment lines right above the current line
    for number, line in enumerate((CHART / "values.yaml").read_text().splitlines(), 1):
        if line.lstrip().startswith("#"):
            comment.append(line.strip())
            continue
        if key := re.match(r"^( *)[A-Za-z][\w.-]*:", line):
            indent = len(key.group(1))
            covered_by = [i for i in covered_by if i < indent]
            if not covered_by and not comment:
                undocumented.append(f"{number}: {line.strip()}")
            if comment and comment[0].startswith("# --"):
                covered_by.append(indent)
        comment = []
    assert not undocumented, undocumented
