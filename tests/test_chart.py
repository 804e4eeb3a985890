"""The Helm chart (k8s/nsp-recall), checked offline: rendered with the default values and every
ci/ values file (helm-python-sdk, Helm's Go SDK in a wheel), linted, every manifest validated
against the Kubernetes API schemas (kubernetes-validate), and the rendered pods compared with
what the service really reads: its settings, routes, port and bundle root, and the CLI flags."""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from cli_helpers import ROOT
from deploy_checks import unknown_setting_names
from fastapi import FastAPI
from starlette.routing import Match

from nsprecall.cli import build_parser
from service.app import create_app
from service.settings import Settings

CHART = ROOT / "k8s" / "nsp-recall"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
CASES = ["defaults", *(path.stem for path in CI_VALUES)]
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) that kubernetes-validate ships.
KUBERNETES_VERSION = "1.29.0"
# Custom resources have no schema in kubernetes-validate (it ships the core API only).
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
# Chart.yaml declares the Bitnami redis chart (for redis.enabled) but CI does not download it.
KNOWN_LINT_WARNING = "chart directory is missing these dependencies: redis"
DUMMY_SECRET = "s3cret-for-the-chart-test"


def case_values(case: str) -> dict[str, Any]:
    if case == "defaults":
        return {}
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{case}.yaml").read_text())
    return loaded


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values, name="nsp", namespace="recall")
    return [
        doc
        for path, text in sorted(files.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def validate(manifest: dict[str, Any]) -> None:
    """Raises kubernetes_validate.ValidationError; strict: unknown fields are errors too."""
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def find(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = find(manifests, kind)
    return found


def server_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "nsp-recall"
    ]
    return container


def answers_get(app: FastAPI, path: str) -> bool:
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "app": app}
    return any(route.matches(scope)[0] == Match.FULL for route in app.routes)


def round_options() -> set[str]:
    (subcommands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return set(subcommands.choices["round"]._option_string_actions)


def server_environment(manifests: list[dict[str, Any]]) -> dict[str, str]:
    """The server container's environment as the kubelet would build it, secrets stubbed."""
    container = server_container(one(manifests, "Deployment"))
    configmaps = {m["metadata"]["name"]: m["data"] for m in find(manifests, "ConfigMap")}
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        environment.update(configmaps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        if "value" in var:
            value = var["value"]
            for name, known in environment.items():  # $(VAR) refers to variables defined earlier
                value = value.replace(f"$({name})", known)
            assert "$(" not in value, f"{var['name']} refers to an undefined variable: {value}"
            environment[var["name"]] = value
        else:
            assert "secretKeyRef" in var["valueFrom"], var
            environment[var["name"]] = DUMMY_SECRET
    return environment


@pytest.fixture(scope="module", params=CASES)
def case(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    values = case_values(request.param)
    return request.param, values, render(values)


@pytest.fixture
def service_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No NSP_* or REDIS_URL from the test runner's environment leaks into Settings()."""
    for name in list(os.environ):
        if name.startswith("NSP_") or name == "REDIS_URL":
            monkeypatch.delenv(name)


def test_chart_lints_without_findings(case: tuple[str, dict[str, Any], list[dict[str, Any]]]) -> None:
    _, values, _ = case
    report = helm.lint(CHART, values)
    findings = [m for m in report["messages"] if m["severity"] >= 2 and KNOWN_LINT_WARNING not in m["error"]]
    assert findings == [] and report["errors"] == []


def test_every_manifest_is_valid_kubernetes(case: tuple[str, dict[str, Any], list[dict[str, Any]]]) -> None:
    name, _, manifests = case
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "Service", "ConfigMap"} <= kinds, name
    for manifest in manifests:
        if (manifest["apiVersion"], manifest["kind"]) in CUSTOM_KINDS:
            continue
        validate(manifest)


def test_the_validator_catches_an_invalid_manifest() -> None:
    deployment = one(render({}), "Deployment")
    validate(deployment)
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    misspelt = copy.deepcopy(deployment)
    server_container(misspelt)["readinesProbe"] = server_container(misspelt).pop("readinessProbe")
    for broken in (wrong_type, misspelt):
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(broken)


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": "two"},
        {"settings": {"workers": 0}},
        {"settings": {"logLevel": "verbose"}},
        {"bundles": {"source": "nfs"}},
        {"setings": {"workers": 2}},  # a misspelt section is not silently ignored
        {"extraSettings": {"WORKERS": "2"}},
    ],
)
def test_the_schema_rejects_broken_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        render(values)


def test_the_chart_refuses_replicas_without_a_shared_store() -> None:
    with pytest.raises(helm.HelmRenderError, match="shared session store"):
        render({"replicaCount": 3})


def test_server_settings_agree_with_the_service(
    case: tuple[str, dict[str, Any], list[dict[str, Any]]], service_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, values, manifests = case
    environment = server_environment(manifests)
    assert unknown_setting_names(environment) == set(), f"{name}: names Settings does not read"
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    settings = Settings()  # the real validation: types, ranges, cross-field rules

    deployment = one(manifests, "Deployment")
    container = server_container(deployment)
    (port,) = container["ports"]
    assert port["name"] == "http" and port["containerPort"] == settings.port
    assert settings.host == "0.0.0.0"  # reachable from the kubelet and the Service

    app = create_app(settings)
    probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "readiness", "liveness")}
    assert probes["readiness"]["path"] == "/readyz"
    assert probes["startup"]["path"] == probes["liveness"]["path"] == "/livez"
    for probe in probes.values():
        assert answers_get(app, probe["path"]) and probe["port"] == "http"

    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["bundles"]["mountPath"] == str(settings.bundle_root)
    assert mounts["tmp"]["mountPath"] == "/tmp"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    if values.get("bundles", {}).get("source", "pvc") == "pvc":
        assert volumes["bundles"]["persistentVolumeClaim"]["readOnly"] is mounts["bundles"]["readOnly"]
    else:
        assert "emptyDir" in volumes["bundles"]
        (pull,) = deployment["spec"]["template"]["spec"]["initContainers"]
        assert {"name": "bundles", "mountPath": str(settings.bundle_root)} in pull["volumeMounts"]

    # Stopping: the preStop sleep, then the server's own grace time, within the pod's.
    pod = deployment["spec"]["template"]["spec"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    sleep_s = float(pre_stop[-1].removeprefix("import time; time.sleep(").removesuffix(")"))
    assert pre_stop[:2] == ["python", "-c"] and sleep_s == values.get("preStopSleepSeconds", 5)
    assert pod["terminationGracePeriodSeconds"] > sleep_s + settings.shutdown_grace_s

    service = one(manifests, "Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    for monitor in find(manifests, "ServiceMonitor"):
        assert [e["path"] for e in monitor["spec"]["endpoints"]] == ["/metrics"]
        assert answers_get(app, "/metrics")


def test_redis_password_stays_out_of_the_config(
    case: tuple[str, dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, values, manifests = case
    for configmap in find(manifests, "ConfigMap"):
        assert not {"NSP_REDIS_URL", "REDIS_URL", "NSP_ADMIN_TOKEN"} & set(configmap["data"])
    env = {v["name"]: v for v in server_container(one(manifests, "Deployment")).get("env", [])}
    if values.get("externalRedis", {}).get("existingSecret"):
        assert "secretKeyRef" in env["REDIS_PASSWORD"]["valueFrom"]
        assert "$(REDIS_PASSWORD)@" in env["NSP_REDIS_URL"]["value"]
        names = list(env)
        assert names.index("REDIS_PASSWORD") < names.index("NSP_REDIS_URL")  # $(VAR) needs it first
    if values.get("adminToken", {}).get("existingSecret"):
        assert "secretKeyRef" in env["NSP_ADMIN_TOKEN"]["valueFrom"]


@pytest.mark.parametrize("enabled", [None, True])
def test_the_console_is_off_unless_the_values_turn_it_on(
    enabled: bool | None, service_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {} if enabled is None else {"settings": {"consoleEnabled": enabled}}
    for variable, value in server_environment(render(values)).items():
        monkeypatch.setenv(variable, value)
    app = create_app(Settings())
    assert answers_get(app, "/ui") is bool(enabled)


def test_the_setting_name_check_can_fail() -> None:
    manifests = render({"extraSettings": {"NSP_NOT_A_SETTING": "1"}})
    assert unknown_setting_names(server_environment(manifests)) == {"NSP_NOT_A_SETTING"}


def test_every_container_is_hardened(case: tuple[str, dict[str, Any], list[dict[str, Any]]]) -> None:
    _, _, manifests = case
    pod_specs = [m["spec"]["template"]["spec"] for m in find(manifests, "Deployment")]
    pod_specs += [m["spec"]["jobTemplate"]["spec"]["template"]["spec"] for m in find(manifests, "CronJob")]
    for pod in pod_specs:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["capabilities"]["drop"] == ["ALL"], container["name"]
            assert isinstance(context["runAsUser"], int) and context["runAsUser"] > 0
            assert "memory" in container["resources"]["limits"], container["name"]


def test_training_rounds_use_real_cli_flags(case: tuple[str, dict[str, Any], list[dict[str, Any]]]) -> None:
    _, values, manifests = case
    cronjobs = find(manifests, "CronJob")
    assert bool(cronjobs) == bool(values.get("training", {}).get("enabled"))
    for cronjob in cronjobs:
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        (trainer,) = [c for c in pod["containers"] + pod.get("initContainers", []) if c["name"] == "round"]
        args = build_parser().parse_args(trainer["args"])  # exits on an unknown or malformed flag
        assert args.command == "round"
        flags = {arg.split("=")[0] for arg in trainer["args"] if arg.startswith("--")}
        assert flags <= round_options(), "argparse would accept an abbreviation; the chart must not"
        mounts = {Path(m["mountPath"]) for m in trainer["volumeMounts"]}
        for path in (args.data, args.state, args.bundles):
            assert any(path.is_relative_to(mount) for mount in mounts), path
        if values.get("bundles", {}).get("source", "pvc") == "pvc":
            deployment = one(manifests, "Deployment")
            served = {m["name"]: m["mountPath"] for m in server_container(deployment)["volumeMounts"]}
            assert str(args.bundles) == served["bundles"]  # publishes where the servers read


def test_lint_reports_what_the_schema_rejects() -> None:
    report = helm.lint(CHART, {"replicaCount": "two"})
    assert any(m["severity"] == 3 and "replicaCount" in m["error"] for m in report["messages"])
