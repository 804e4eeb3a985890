"""The object-storage scripts the chart ships (bundle-pull.sh in the init container and sync
sidecar, bundle-upload.sh after a training round), run with sh against a local "remote"
through a stand-in for the few rclone commands they use."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_chart import CHART, find, render

# lsf --dirs-only|--files-only, copy [--exclude|--include NAME], deletefile, purge; local paths.
FAKE_RCLONE = r"""#!/bin/sh
cmd=$1; shift
case "$cmd" in
  lsf)
    mode=$1; dir=$2
    [ -d "$dir" ] || exit 3
    if [ "$mode" = --dirs-only ]; then ls -1p "$dir" | grep '/$'; else ls -1p "$dir" | grep -v '/$'; fi
    exit 0 ;;
  copy)
    echo "copy $*" >> "$RCLONE_LOG"
    filter=""; name=""
    case "$1" in --exclude|--include) filter=$1; name=$2; shift 2 ;; esac
    mkdir -p "$2"
    for f in "$1"/*; do
      base=$(basename "$f")
      [ "$filter" = --exclude ] && [ "$base" = "$name" ] && continue
      [ "$filter" = --include ] && [ "$base" != "$name" ] && continue
      cp "$f" "$2/$base"
    done ;;
  deletefile) rm -f "$1" ;;
  purge) rm -rf "$1" ;;
  *) echo "fake rclone: $cmd unsupported" >&2; exit 2 ;;
esac
"""


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    values = yaml.safe_load((CHART / "ci" / "object-storage-values.yaml").read_text())
    (configmap,) = [
        c for c in find(render(values), "ConfigMap") if c["metadata"]["name"].endswith("-scripts")
    ]
    directory = tmp_path_factory.mktemp("scripts")
    for name, text in configmap["data"].items():
        (directory / name).write_text(text)
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    (bin_dir / "rclone").write_text(FAKE_RCLONE)
    (bin_dir / "rclone").chmod(0o755)
    return directory


def bundle(path: Path, complete: bool = True) -> None:
    path.mkdir(parents=True)
    (path / "encoder.onnx").write_text("onnx")
    if complete:
        (path / "manifest.json").write_text("{}")


def run(scripts: Path, script: str, root: Path, remote: Path, keep: int, once: bool = True) -> None:
    env = {
        "PATH": f"{scripts / 'bin'}:{os.environ['PATH']}",
        "REMOTE": str(remote),
        "BUNDLE_ROOT": str(root),
        "KEEP": str(keep),
        "INTERVAL": "1",
        "ONCE": "1" if once else "0",
        "RCLONE_LOG": str(root.parent / "rclone.log"),
    }
    done = subprocess.run(
        ["sh", str(scripts / script)], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr


def versions(directory: Path) -> list[str]:
    return sorted((p.name for p in directory.iterdir() if p.name.isdigit()), key=int)


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_pull_copies_complete_versions_keeps_the_newest_and_spares_the_served(
    scripts: Path, tmp_path: Path
) -> None:
    remote, root = tmp_path / "remote", tmp_path / "bundles"
    root.mkdir()
    bundle(remote / "1")
    bundle(remote / "2")
    bundle(remote / "3", complete=False)  # still uploading: its manifest comes last
    run(scripts, "bundle-pull.sh", root, remote, keep=3)
    assert versions(root) == ["1", "2"]
    assert sorted(p.name for p in (root / "2").iterdir()) == ["encoder.onnx", "manifest.json"]
    assert not list((root / ".incoming").iterdir())

    (remote / "3" / "manifest.json").write_text("{}")
    bundle(remote / "4")
    (root / ".serving").mkdir()
    (root / ".serving" / "pod-a.json").write_text(json.dumps({"version": 1, "pinned": True, "updated": 0}))
    run(scripts, "bundle-pull.sh", root, remote, keep=2)
    assert versions(root) == ["1", "3", "4"]  # 2 pruned; 1 is served (pinned) and stays


def test_upload_sends_the_manifest_last_and_mirrors_pruning(scripts: Path, tmp_path: Path) -> None:
    remote, published = tmp_path / "remote", tmp_path / "published"
    bundle(remote / "3")
    bundle(remote / "4")
    bundle(published / "4")
    bundle(published / "5")
    run(scripts, "bundle-upload.sh", published, remote, keep=3)
    assert versions(remote) == ["4", "5"]  # 3 was pruned by the round, so it goes remotely too
    assert (remote / "5" / "manifest.json").is_file() and (remote / "5" / "encoder.onnx").is_file()
    copies = (tmp_path / "rclone.log").read_text().splitlines()
    assert [c.split()[1:3] for c in copies] == [
        ["--exclude", "manifest.json"],
        ["--include", "manifest.json"],
    ]


def test_upload_with_nothing_published_deletes_nothing(scripts: Path, tmp_path: Path) -> None:
    remote, published = tmp_path / "remote", tmp_path / "published"
    bundle(remote / "7")
    published.mkdir()
    run(scripts, "bundle-upload.sh", published, remote, keep=3)
    assert versions(remote) == ["7"]
