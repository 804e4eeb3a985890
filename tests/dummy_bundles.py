"""Publishing placeholder bundles (one fake file, a valid manifest) for format-level tests."""

from __future__ import annotations

from pathlib import Path

from index import bundle


def publish_dummy(
    root: Path, payload: bytes = b"data", version: int | None = None, metrics: dict[str, float] | None = None
) -> Path:
    fields = {
        "training": {"kind": "pretrain"},
        "model_config": {"dim": 4},
        "embedding_dim": 4,
        "encoder": {
            "inputs": ["tokens"],
            "outputs": ["user_vec"],
            "max_sessions": 2,
            "max_items_per_session": 2,
        },
        "hnsw": {},
        "item_count": 3,
        "metrics": metrics or {},
    }
    with bundle.staging(root) as stage:
        (stage / "encoder.onnx").write_bytes(payload)
        return bundle.commit(root, stage, fields, version)
