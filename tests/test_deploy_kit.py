"""The deployment kit (deploy/) checked as far as tools on PyPI and Debian
allow: every file parses (PyPI's PyYAML, json); the dashboard and the rules
name only metrics the exporter exports, and cover the panels and alerts the
kit promises; every alert has a promtool unit test; promtool checks the rules
and scrape configurations and runs the unit tests; the Kubernetes and compose
files are consistent (selectors, named ports, the metrics port, environment
names that are settings of the settings table). kubeconform and kubeval are
on neither PyPI nor Debian: their schema check is left out; `docker compose
config` runs when the compose plugin is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gunicorn_prometheus_exporter import _native
from gunicorn_prometheus_exporter.metrics import create, create_worker_gauges

# Of servers and binaries, not of the interpreter: once, on the main run's CPython (see pyproject.toml).
pytestmark = pytest.mark.interpreter_independent

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "gunicorn-dashboard.json"
RULES = DEPLOY / "prometheus" / "rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "rules_test.yml"
SCRAPE_CONFIGS = [
    DEPLOY / "prometheus" / "scrape-direct.yml",
    DEPLOY / "prometheus" / "scrape-sidecar.yml",
]
COMPOSE = DEPLOY / "docker" / "compose.yml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
METRICS_PORT = 9091  # PROMETHEUS_METRICS_PORT's default
# Series Prometheus makes itself for each target.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

# What the kit promises (issue 11): metrics some panel shows, alerts the rules have.
PANEL_METRICS = {
    "gunicorn_worker_requests_total",
    "gunicorn_worker_failed_requests_total",
    "gunicorn_worker_request_duration_seconds_bucket",
    "gunicorn_worker_requests_in_flight",
    "gunicorn_workers_busy",
    "gunicorn_master_listen_backlog",
    "gunicorn_master_worker_restart_total",
    "gunicorn_worker_memory_bytes",
    "gunicorn_worker_cpu_seconds_total",
    "gunicorn_worker_open_fds",
    "up",
    "scrape_duration_seconds",
}
ALERTS = {
    "GunicornTargetDown",
    "GunicornHighErrorRatio",
    "GunicornHighLatencyP99",
    "GunicornAllWorkersBusy",
    "GunicornListenBacklogGrowing",
    "GunicornWorkerCrashed",
    "GunicornWorkerTimeout",
    "GunicornMetricsStorageErrors",
}


def exported_series() -> set[str]:
    """Every series name the exporter's own metrics can have."""
    metrics = create()
    create_worker_gauges(metrics.registry)
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    return {
        family.name + suffix
        for family in metrics.registry.collect()
        for suffix in suffixes[family.type]
    }


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panel_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


def rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def series_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression (our prefix, recorded rules, Prometheus' own)."""
    names = set(re.findall(r"\b(gunicorn_[a-z_]+|up|scrape_[a-z_]+)\b(?=\s*[{\[)])", expr))
    return names | set(re.findall(r"\b(instance:[a-z_:0-9]+)", expr))


def settings_variables() -> set[str]:
    return {s["variable"] for s in _native.settings() if s["variable"]}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.skip(
            "promtool not installed (Debian's prometheus package; scripts/setup.sh installs it)"
        )
    return subprocess.run(
        ["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


# ------------------------------------------------------------- dashboard ----


def test_the_dashboard_has_a_variable_per_instance_and_every_panel_uses_it() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["instance"]["type"] == "query"
    assert "label_values(" in variables["instance"]["definition"]
    assert variables["instance"]["includeAll"] and variables["instance"]["multi"]
    for panel in dashboard()["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'instance=~"$instance"' in target["expr"], (panel["title"], target["expr"])
            assert target["datasource"]["uid"] == "${datasource}"


def test_dashboard_panels_do_not_overlap_and_have_unique_ids() -> None:
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & area, p["title"]
        assert g["x"] + g["w"] <= 24
        cells |= area


def test_the_dashboard_shows_what_the_kit_promises_and_only_exported_metrics() -> None:
    used = set().union(*(series_in(e) for e in panel_exprs()))
    assert used >= PANEL_METRICS, PANEL_METRICS - used
    unknown = used - exported_series() - PROMETHEUS_OWN
    assert not unknown, f"the dashboard names metrics the exporter does not export: {unknown}"


# ----------------------------------------------------------------- rules ----


def test_rules_name_only_exported_metrics_and_recorded_series() -> None:
    recorded = {r["record"] for r in rules() if "record" in r}
    for rule in rules():
        unknown = series_in(rule["expr"]) - exported_series() - PROMETHEUS_OWN - recorded
        assert not unknown, (rule.get("alert") or rule.get("record"), unknown)


def test_every_alert_is_there_and_has_a_unit_test_that_fires_and_one_that_does_not() -> None:
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    assert set(alerts) == ALERTS
    for alert in alerts.values():
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
    tested: dict[str, list[bool]] = {}
    for case in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            tested.setdefault(check["alertname"], []).append(bool(check["exp_alerts"]))
    for name in ALERTS:
        assert True in tested.get(name, []), f"{name}: no unit test where it fires"
        assert False in tested.get(name, []), f"{name}: no unit test where it does not"


def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout
    tested = promtool("test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_promtool_fails_a_broken_alert_test(tmp_path: Path) -> None:
    """The unit tests can fail: the same tests against rules whose threshold
    moved no longer pass."""
    broken = RULES.read_text().replace("ratio_rate5m > 0.05", "ratio_rate5m > 0.5")
    assert broken != RULES.read_text()
    (tmp_path / "rules.yml").write_text(broken)
    shutil.copy(RULES_TEST, tmp_path / "rules_test.yml")
    result = promtool("test", "rules", "rules_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "GunicornHighErrorRatio" in result.stdout + result.stderr


@pytest.mark.parametrize("path", SCRAPE_CONFIGS, ids=lambda p: p.name)
def test_scrape_configs(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    assert config["rule_files"] == ["rules.yml"]
    for job in config["scrape_configs"]:
        assert re.fullmatch("gunicorn.*", job["job_name"])  # what GunicornTargetDown selects
        for static in job["static_configs"]:
            for target in static["targets"]:
                assert target.endswith(f":{METRICS_PORT}")
    checked = promtool("check", "config", path.name, cwd=path.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# ------------------------------------------------------------ kubernetes ----


def k8s_documents() -> list[dict[str, Any]]:
    return [doc for path in K8S for doc in yaml.safe_load_all(path.read_text()) if doc]


def _containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return deployment["spec"]["template"]["spec"]["containers"]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_kubernetes_documents_have_their_required_fields() -> None:
    required = {
        ("apps/v1", "Deployment"): ["spec.selector.matchLabels", "spec.template.spec.containers"],
        ("v1", "Service"): ["spec.selector", "spec.ports"],
        ("monitoring.coreos.com/v1", "PodMonitor"): ["spec.selector", "spec.podMetricsEndpoints"],
        ("monitoring.coreos.com/v1", "ServiceMonitor"): ["spec.selector", "spec.endpoints"],
    }
    kinds = set()
    for doc in k8s_documents():
        key = (doc["apiVersion"], doc["kind"])
        assert key in required, key
        kinds.add(doc["kind"])
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
        for path in required[key]:
            node: Any = doc
            for part in path.split("."):
                node = node[part]
            assert node, (doc["metadata"]["name"], path)
        if doc["kind"] == "Deployment":
            spec = doc["spec"]
            assert _matches(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
            for c in _containers(doc):
                assert c["name"] and c["image"]
    assert {"Deployment", "Service", "PodMonitor", "ServiceMonitor"} <= kinds


def test_kubernetes_environment_names_are_settings_and_the_metrics_port_matches() -> None:
    known = settings_variables()
    for doc in k8s_documents():
        if doc["kind"] != "Deployment":
            continue
        for c in _containers(doc):
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            exporter_env = {n for n in env if n.startswith(("PROMETHEUS_", "REDIS_", "GUNICORN_"))}
            assert exporter_env <= known, exporter_env - known
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            if "metrics" in ports:
                assert ports["metrics"] == int(env.get("PROMETHEUS_METRICS_PORT") or METRICS_PORT)


def test_monitors_and_services_find_their_pods_and_named_ports() -> None:
    docs = k8s_documents()
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    services = [d for d in docs if d["kind"] == "Service"]

    def pod_ports(selector: dict[str, str]) -> set[str]:
        matched = [
            d
            for d in deployments
            if _matches(selector, d["spec"]["template"]["metadata"]["labels"])
        ]
        assert matched, f"no Deployment's pods match {selector}"
        return {p["name"] for d in matched for c in _containers(d) for p in c.get("ports", [])}

    for service in services:
        names = pod_ports(service["spec"]["selector"])
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, (service["metadata"]["name"], port)
    for monitor in (d for d in docs if d["kind"] == "PodMonitor"):
        names = pod_ports(monitor["spec"]["selector"]["matchLabels"])
        assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} == {"metrics"} <= names
    for monitor in (d for d in docs if d["kind"] == "ServiceMonitor"):
        selected = [
            s
            for s in services
            if _matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))
        ]
        assert selected, monitor["metadata"]["name"]
        service_ports = {p["name"] for s in selected for p in s["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= service_ports


def test_the_sidecar_variant_mirrors_to_the_redis_it_runs() -> None:
    docs = yaml.safe_load_all((DEPLOY / "k8s" / "sidecar.yaml").read_text())
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    redis_service = by_name[("Service", "redis")]
    app = _containers(by_name[("Deployment", "gunicorn-app")])[0]
    agent = _containers(by_name[("Deployment", "metrics-sidecar")])[0]
    env = {e["name"]: e for e in app["env"]}
    assert env["REDIS_ENABLED"]["value"] == "true"
    assert env["REDIS_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    for container in (app, agent):
        values = {e["name"]: e.get("value") for e in container["env"]}
        assert values["REDIS_HOST"] == redis_service["metadata"]["name"]
        assert int(values["REDIS_PORT"]) == redis_service["spec"]["ports"][0]["port"]
    assert agent["command"][:3] == ["gunicorn-prometheus-agent", "--source", "redis"]


# ----------------------------------------------------- docker and compose ----


def test_compose_file_is_consistent_with_the_kit() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    known = settings_variables()
    services = compose["services"]
    # the scrape configs' targets are services of the compose file
    for path in SCRAPE_CONFIGS:
        for job in yaml.safe_load(path.read_text())["scrape_configs"]:
            for static in job["static_configs"]:
                for target in static["targets"]:
                    assert target.rsplit(":", 1)[0] in services, target
    for name, service in services.items():
        env = service.get("environment") or {}
        assert {n for n in env if n.startswith(("PROMETHEUS_", "REDIS_", "GUNICORN_"))} <= known, (
            name
        )
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert (COMPOSE.parent / source).exists(), (name, source)
        build = service.get("build")
        if build:
            assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_docker_compose_config() -> None:
    if shutil.which("docker") is None:
        pytest.skip("docker is not installed")
    version = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, check=False
    )
    if version.returncode != 0:
        pytest.skip(f"the docker compose plugin is not installed ({version.stderr.strip()[:80]})")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_dockerfile_settings_ports_and_sources() -> None:
    text = DOCKERFILE.read_text()
    known = settings_variables()
    env_block = re.search(r"^ENV (.*?)(?:\n(?!\s)|\Z)", text, re.M | re.S)
    assert env_block
    names = set(re.findall(r"([A-Z][A-Z0-9_]+)=", env_block.group(1)))
    assert names and names <= known, names - known
    assert str(METRICS_PORT) in re.search(r"^EXPOSE (.*)$", text, re.M).group(1).split()  # type: ignore[union-attr]
    for source in re.findall(r"^COPY (?!--from)(\S+) ", text, re.M):
        assert (ROOT / source).exists(), source
    assert "gunicorn_prometheus_exporter.gunicorn_config" in text
