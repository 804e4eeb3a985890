"""synth → train → publish through the real CLI; the published bundle's encoder checked in ORT."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from index import bundle
from index.ann import ItemIndex
from index.bundle import ChannelsSpec
from index.features import N_FEATURES, Session, build_tokens
from index.fusion import SEEN, UNSEEN
from index.i2i import I2I_FILE, ItemToItem
from index.vocab import Vocabulary
from model_export.export import check_agreement
from model_export.publish import load_run
from model_export.train import CHANNELS


def test_train_prints_model_and_popularity_and_model_wins(trained: tuple[Path, str]) -> None:
    run, stdout = trained
    assert "merged channels (served)" in stdout and "NSP channel alone" in stdout
    assert "popularity (global)" in stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["hr@100"] > metrics["test_popularity"]["hr@100"]
    assert metrics["test"]["hr@100"] > metrics["test_scene_popularity"]["hr@100"]
    # The merge was fitted on validation and judged on test for both exclusion policies.
    for split in ("val_merged", "val_merged_unseen", "test_merged", "test_merged_unseen"):
        assert 0 < metrics[split]["hr@100"] <= 1


def test_train_fits_the_channels_on_validation_and_publish_ships_them(
    trained: tuple[Path, str], bundle_root: Path
) -> None:
    run, _ = trained
    spec = ChannelsSpec.model_validate_json((run / CHANNELS).read_text())
    assert set(spec.fusion) == {SEEN, UNSEEN}
    assert spec.i2i is not None and spec.validation  # the fit's objectives are recorded
    manifest = bundle.read_manifest(bundle_root / "1")
    assert manifest.channels == spec
    assert I2I_FILE in manifest.files
    table = ItemToItem.load(bundle_root / "1" / I2I_FILE, manifest.item_count)
    assert table.nnz > 0 and table.indices.max() < manifest.item_count


def test_published_bundle_is_complete_and_verified(bundle_root: Path) -> None:
    directory = bundle_root / "1"
    manifest = bundle.read_manifest(directory)
    bundle.verify_files(directory, manifest)
    for name in (
        bundle.ENCODER_FILE,
        bundle.INDEX_FILE,
        bundle.POPULARITY_FILE,
        bundle.PROBE_FILE,
        "vocab.json",
    ):
        assert name in manifest.files
    vocab = Vocabulary.load(directory)
    assert manifest.item_count == vocab.n_items == 1200
    index = ItemIndex.load(
        directory / bundle.INDEX_FILE, manifest.embedding_dim, manifest.item_count, manifest.hnsw
    )
    assert index.count == vocab.n_items
    # ef_search was tuned at publish time to the recall target, and the manifest says so
    hnsw = manifest.hnsw
    assert hnsw.tuned_k == 200 and hnsw.recall_target == 0.95
    assert hnsw.measured_recall is not None and hnsw.measured_recall >= 0.95
    assert hnsw.ef_search >= 200
    assert "test.hr@100" in manifest.metrics
    assert manifest.training.data_start_ts is not None


def test_exported_encoder_has_dynamic_batch_and_length(bundle_root: Path) -> None:
    graph = onnx.load(str(bundle_root / "1" / bundle.ENCODER_FILE)).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, True, False]
    assert dims[2].dim_value == N_FEATURES


def test_onnx_matches_torch_at_lengths_other_than_the_export_example(
    trained: tuple[Path, str], bundle_root: Path
) -> None:
    model, _, vocab = load_run(trained[0])
    rng = np.random.default_rng(1)
    sequences = []
    for n_sessions in (0, 2, 9, 33):
        history = [
            Session(
                f"r{j}",
                1767225600 + 600 * j,
                "homepage",
                tuple((str(vocab.item_ids[i]), int(rng.integers(1, 5))) for i in rng.integers(0, 1200, 7)),
            )
            for j in range(n_sessions)
        ]
        sequences.append(build_tokens(history, "search", 1767225600 + 600 * n_sessions, vocab))
    assert len({len(s) for s in sequences}) == 4
    assert check_agreement(model, bundle_root / "1" / bundle.ENCODER_FILE, sequences) < 1e-4


def test_probe_outputs_reproduce_in_onnx_runtime(bundle_root: Path) -> None:
    directory = bundle_root / "1"
    session = ort.InferenceSession(str(directory / bundle.ENCODER_FILE), providers=["CPUExecutionProvider"])
    with np.load(directory / bundle.PROBE_FILE) as probe:
        (out,) = session.run(["user_vec"], {"tokens": probe["tokens"]})
        np.testing.assert_allclose(out, probe["user_vec"], atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
