"""Publishing refuses a run whose validation quality is below the floor or the latest bundle's."""

import subprocess
from pathlib import Path

import pytest
from cli_helpers import CLI, ROOT, run_cli
from dummy_bundles import publish_dummy

from index import bundle
from model_export.publish import QualityGate, QualityGateError


def test_gate_compares_with_floor_and_latest_bundle(tmp_path: Path) -> None:
    gate = QualityGate(floor=0.3, max_drop=0.05)
    gate.check({"val.hr@100": 0.5}, tmp_path)  # no bundle yet, above the floor
    with pytest.raises(QualityGateError, match="below the floor"):
        gate.check({"val.hr@100": 0.2}, tmp_path)
    publish_dummy(tmp_path, metrics={"val.hr@100": 0.6})
    gate.check({"val.hr@100": 0.58}, tmp_path)  # within 5 %
    with pytest.raises(QualityGateError, match="below bundle 1"):
        gate.check({"val.hr@100": 0.55}, tmp_path)
    QualityGate(floor=0.3, max_drop=0.05, force=True).check({"val.hr@100": 0.1}, tmp_path)


def test_cli_refuses_then_force_publishes(trained: tuple[Path, str], tmp_path: Path) -> None:
    args = [*CLI, "publish", "--run", str(trained[0]), "--bundles", str(tmp_path), "--min-hr100", "0.999"]
    refused = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "quality gate" not in refused.stdout
    assert "below the floor" in refused.stderr
    assert bundle.list_versions(tmp_path) == []
    run_cli(
        "publish", "--run", str(trained[0]), "--bundles", str(tmp_path), "--min-hr100", "0.999", "--force"
    )
    assert bundle.list_versions(tmp_path) == [1]
