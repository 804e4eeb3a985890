"""LoadedBundle: a real bundle directory (hand-built ONNX encoder) loads; a bad one is refused."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fakes import write_real_bundle

from index.bundle import ENCODER_FILE, MANIFEST, PROBE_FILE, BundleError
from index.features import build_tokens, group_sessions, stack_left_padded
from service.runtime import CPU_PROVIDER, CUDA_PROVIDER, LoadedBundle, execution_providers

pytest.importorskip("onnx")


def test_a_valid_bundle_loads_and_serves(tmp_path: Path) -> None:
    directory = write_real_bundle(tmp_path, 4, n_items=40, dim=8)
    bundle = LoadedBundle.load(directory, encoder_threads=1, ann_threads=1)
    assert bundle.version == 4
    assert bundle.vocab.n_items == 40
    with np.load(directory / PROBE_FILE) as probe:
        vectors = bundle.encode(probe["tokens"])
        np.testing.assert_allclose(vectors, probe["user_vec"], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    labels, scores = bundle.search(vectors, 7)
    assert labels.shape == scores.shape == (len(vectors), 7)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    assert bundle.fallback("search") == [f"item-{i:04d}" for i in range(35, 40)]
    assert bundle.fallback("unknown-scene") == [f"item-{i:04d}" for i in range(10)]


def test_encoder_takes_the_shared_token_builder_output(tmp_path: Path) -> None:
    bundle = LoadedBundle.load(write_real_bundle(tmp_path, 1))
    tokens = stack_left_padded([build_tokens(group_sessions([]), "feed", 1_700_000_000, bundle.vocab)])
    assert bundle.encode(tokens).shape == (1, bundle.manifest.embedding_dim)


def test_an_encoder_that_misses_the_probe_is_refused(tmp_path: Path) -> None:
    directory = write_real_bundle(tmp_path, 1, probe_error=1e-3)
    with pytest.raises(BundleError, match="probe"):
        LoadedBundle.load(directory)


def test_a_file_changed_after_publishing_is_refused(tmp_path: Path) -> None:
    directory = write_real_bundle(tmp_path, 1)
    with (directory / ENCODER_FILE).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match=r"checksum mismatch for encoder\.onnx"):
        LoadedBundle.load(directory)


def test_an_index_over_other_items_is_refused(tmp_path: Path) -> None:
    directory = write_real_bundle(tmp_path, 1, n_items=40, index_items=39)
    with pytest.raises(BundleError, match="item counts disagree"):
        LoadedBundle.load(directory)


def test_an_embedding_dim_the_encoder_does_not_produce_is_refused(tmp_path: Path) -> None:
    directory = write_real_bundle(tmp_path, 1, dim=8, manifest_overrides={"embedding_dim": 16})
    with pytest.raises(BundleError, match="dim"):
        LoadedBundle.load(directory)


def test_wrong_encoder_io_names_are_refused(tmp_path: Path) -> None:
    encoder = {
        "inputs": ["input_ids"],
        "outputs": ["user_vec"],
        "max_sessions": 20,
        "max_items_per_session": 12,
    }
    directory = write_real_bundle(tmp_path, 1, manifest_overrides={"encoder": encoder})
    with pytest.raises(BundleError, match="input_ids"):
        LoadedBundle.load(directory)


def test_popularity_without_an_all_scenes_list_is_refused(tmp_path: Path) -> None:
    directory = write_real_bundle(tmp_path, 1, popularity={"feed": ["item-0001"]})
    with pytest.raises(BundleError, match="'\\*'"):
        LoadedBundle.load(directory)


def test_a_manifest_not_listing_a_required_file_is_refused(tmp_path: Path) -> None:
    directory = write_real_bundle(tmp_path, 1)
    manifest = json.loads((directory / MANIFEST).read_text())
    del manifest["files"][PROBE_FILE]
    (directory / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=re.escape(PROBE_FILE)):
        LoadedBundle.load(directory)


def test_cuda_falls_back_to_the_cpu_with_a_warning_where_onnxruntime_has_no_cuda(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if CUDA_PROVIDER in ort.get_available_providers():
        pytest.skip("this onnxruntime build has the CUDA provider")
    directory = write_real_bundle(tmp_path, 1, n_items=20, dim=8)
    with caplog.at_level(logging.WARNING):
        bundle = LoadedBundle.load(directory, provider="cuda")
    assert bundle.version == 1
    assert "encoder provider cuda requested" in caplog.text
    assert execution_providers("cpu") == [CPU_PROVIDER]
    with pytest.raises(ValueError, match="unknown encoder provider"):
        execution_providers("tpu")
