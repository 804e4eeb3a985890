"""Every ablation switch of the encoder still exports to ONNX and agrees with torch."""

from pathlib import Path

import numpy as np
import pytest
import torch

from index.features import Session, build_tokens
from index.vocab import Vocabulary
from model_export.batches import engaged_sequence, make_nsp_batch
from model_export.export import check_agreement, export_encoder
from model_export.model import MoE, NSPConfig, NSPModel
from model_export.train import TrainConfig, batch_loss

T0 = 1767225600
VOCAB = Vocabulary.build(
    [f"i{i}" for i in range(40)], [f"c{i % 4}" for i in range(40)], list(range(40)), ["a", "b"]
)


def history(n: int) -> list[Session]:
    return [
        Session(
            f"r{j}", T0 + 900 * j, "ab"[j % 2], tuple((f"i{(3 * j + x) % 40}", 1 + x % 4) for x in range(4))
        )
        for j in range(n)
    ]


def model(**overrides: object) -> NSPModel:
    torch.manual_seed(0)
    config = NSPConfig(
        n_items=40,
        n_category_tokens=VOCAB.n_category_tokens,
        n_scene_tokens=VOCAB.n_scene_tokens,
        **overrides,
    )  # type: ignore[arg-type]
    return NSPModel(config).eval()


@pytest.mark.parametrize(
    "overrides",
    [
        {"block": "hstu", "tsn": True, "moe_experts": 4, "msp_horizons": 3},  # the full TBGRecall structure
        {},  # the defaults
        {"session_mask": False, "session_rope": False, "context_features": False, "item_side_info": False},
    ],
    ids=["full", "defaults", "no-session-structure"],
)
def test_variant_exports_and_agrees_at_several_lengths(overrides: dict[str, object], tmp_path: Path) -> None:
    m = model(**overrides)
    sequences = [build_tokens(history(n), "a", T0 + 86400, VOCAB) for n in (0, 3, 11)]
    path = tmp_path / "encoder.onnx"
    export_encoder(m, path, sequences[1][None])
    assert check_agreement(m, path, sequences) < 1e-4


def test_autoregressive_sequence_exports_too(tmp_path: Path) -> None:
    m = model(msp_horizons=1)
    sequences = [engaged_sequence(history(n), VOCAB, 100) for n in (1, 4, 9)]
    path = tmp_path / "encoder.onnx"
    export_encoder(m, path, sequences[1][None])
    assert check_agreement(m, path, sequences) < 1e-4


def test_moe_routes_each_token_to_top_k_experts() -> None:
    config = NSPConfig(n_items=1, n_category_tokens=1, n_scene_tokens=1, dim=8, moe_experts=4, moe_top_k=2)
    moe = MoE(config).eval()
    x = torch.randn(3, 5, 8)
    logits = moe.router(x)
    kth = logits.topk(2, dim=-1).values[..., -1:]
    gates = logits.masked_fill(logits < kth, float("-inf")).softmax(-1)
    assert ((gates > 0).sum(-1) == 2).all()
    # Zeroing an expert the token did not pick leaves that token's output unchanged.
    unpicked = int(gates[0, 0].argmin())
    before = moe(x)[0, 0]
    with torch.no_grad():
        for p in moe.experts[unpicked].parameters():
            p.zero_()
    torch.testing.assert_close(moe(x)[0, 0], before)


def test_msp_heads_differ_and_serving_uses_the_first() -> None:
    m = model(msp_horizons=3)
    tokens = torch.from_numpy(build_tokens(history(5), "a", T0 + 86400, VOCAB)[None])
    with torch.no_grad():
        hidden = m(tokens)[:, -1]
        heads = [m.user_vectors(hidden, h) for h in range(3)]
    assert not torch.allclose(heads[0], heads[1])
    from model_export.model import Encoder

    np.testing.assert_allclose(Encoder(m)(tokens).detach().numpy(), heads[0].numpy(), atol=1e-6)


def test_a_model_trained_on_40_sessions_exports_and_agrees_on_40(tmp_path: Path) -> None:
    config = TrainConfig(max_sessions=40)
    m = model().train()
    batch = make_nsp_batch([history(45)], [44], VOCAB, config.max_sessions, config.max_items, horizons=1)
    vocab_tensors = (torch.from_numpy(VOCAB.item_category), torch.from_numpy(VOCAB.item_price))
    loss = batch_loss(m, batch, config, vocab_tensors, torch.arange(40))
    loss.backward()
    torch.optim.AdamW(m.parameters(), lr=config.lr).step()
    m.eval()
    sequences = [build_tokens(history(n), "a", T0 + 86400, VOCAB, config.max_sessions) for n in (3, 40)]
    assert len(sequences[1]) > len(build_tokens(history(40), "a", T0 + 86400, VOCAB))  # past the default 20
    path = tmp_path / "encoder.onnx"
    export_encoder(m, path, sequences[0][None])
    assert check_agreement(m, path, sequences) < 1e-4
