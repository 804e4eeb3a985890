"""Data-parallel training under torchrun (gloo, 2 processes) gives the single-process result."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from cli_helpers import ROOT, run_cli

TORCHRUN = Path(sys.executable).with_name("torchrun")
TRAIN = ["--epochs", "1", "--dropout", "0", "--seed", "3", "--quiet"]  # dropout masks are per process


def test_two_processes_train_the_same_model_as_one(world: Path, tmp_path: Path) -> None:
    assert shutil.which(str(TORCHRUN)), "torchrun comes with torch"
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    run_cli("train", "--data", str(world), "--out", str(single), *TRAIN)
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "nsprecall.cli", "train"]
    done = subprocess.run(
        [*command, "--data", str(world), "--out", str(parallel), *TRAIN],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        done.stdout.count("Held-out next sessions (test period, full catalog, seen items kept)") == 1
    )  # rank 0 alone

    a = torch.load(single / "checkpoint.pt", weights_only=True)["state_dict"]
    b = torch.load(parallel / "checkpoint.pt", weights_only=True)["state_dict"]
    for name in a:
        assert torch.allclose(a[name], b[name], atol=5e-4), name
    # the tolerance has teeth: another seed trains parameters much further apart
    other = tmp_path / "other-seed"
    run_cli("train", "--data", str(world), "--out", str(other), *[x if x != "3" else "4" for x in TRAIN])
    c = torch.load(other / "checkpoint.pt", weights_only=True)["state_dict"]
    assert max((a[k] - c[k]).abs().max().item() for k in a) > 1e-2
    val_a = json.loads((single / "metrics.json").read_text())["val"]
    val_b = json.loads((parallel / "metrics.json").read_text())["val"]
    for metric, value in val_a.items():
        assert abs(value - val_b[metric]) < 0.02, metric
