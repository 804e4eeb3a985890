"""The GRAM generator: token log-probabilities, SFT on ``L_q + λ·L_t``, the DPO co-alignment loss
(its value at the reference, its sign, separate β, the length penalty, the alarm), the ONNX
export's agreement with torch and the serving runtime's checks at load."""

from __future__ import annotations

import copy
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from index.gram_generator import (
    GRAM_DECODER_FILE,
    GRAM_ENCODER_FILE,
    GRAM_GENERATOR_FILES,
    GRAM_PROBE_FILE,
    GramGeneratorRuntime,
)
from index.gram_vocab import BOS, EOS, MAX_CODE_TOKENS, PAD, RESERVED
from model_export.gram.align import (
    DpoConfig,
    PreferencePairs,
    dpo_loss,
    loss_alarm,
    pair_logprob,
    train_dpo,
)
from model_export.gram.export import GramExport, export_generator
from model_export.gram.generator import (
    PRODUCT_TASK,
    QUERY_TASK,
    CodeExamples,
    GramGenerator,
    GramGeneratorConfig,
    SftConfig,
    train_sft,
)

TEXT_VOCAB = 40
CODE_VOCAB = RESERVED + 10  # values 3..12


def tiny_model(seed: int = 0, **changes: object) -> GramGenerator:
    base: dict[str, object] = {
        "text_vocab": TEXT_VOCAB,
        "code_vocab": CODE_VOCAB,
        "dim": 32,
        "heads": 2,
        "layers": 1,
        "ffn": 64,
        "max_text_tokens": 16,
    }
    torch.manual_seed(seed)
    return GramGenerator(GramGeneratorConfig(**{**base, **changes})).eval()  # type: ignore[arg-type]


def code_rows(*codes: tuple[int, ...]) -> np.ndarray:
    """(E, 7) token rows: each code's value tokens, EOS, PAD."""
    out = np.full((len(codes), MAX_CODE_TOKENS), PAD, np.int64)
    for row, code in enumerate(codes):
        out[row, : len(code)] = code
        out[row, len(code)] = EOS
    return out


def tasks(n: int, task: int) -> torch.Tensor:
    return torch.full((n,), task, dtype=torch.int64)


# --- token log-probabilities -------------------------------------------------------------------


def test_token_logprobs_are_full_vocabulary_causal_and_zero_at_pad() -> None:
    model = tiny_model(seed=1)
    text = torch.tensor([[5, 9, 3, 0]])
    with torch.no_grad():
        # every token of the vocabulary as the first target: with PAD's share (a PAD target
        # reads 0) their probabilities sum to 1
        first = torch.full((CODE_VOCAB, MAX_CODE_TOKENS), PAD, dtype=torch.int64)
        first[:, 0] = torch.arange(CODE_VOCAB)
        first[:, 1] = EOS
        logp = model.token_logprobs(text.expand(CODE_VOCAB, -1), tasks(CODE_VOCAB, QUERY_TASK), first)
        logits = model.teacher_forced_logits(text, tasks(1, QUERY_TASK), first[1:2])
        pad_share = torch.softmax(logits[0, 0], dim=-1)[PAD]
        assert (logp[1:, 0].exp().sum() + pad_share).item() == pytest.approx(1.0, abs=1e-5)
        assert logp[0, 0] == 0 and (logp[:, 2:] == 0).all()  # PAD targets
        # a token's log-prob does not depend on the tokens after it
        codes = torch.from_numpy(code_rows((3, 7, 9), (3, 7, 11, 12)))
        two = model.token_logprobs(text.expand(2, -1), tasks(2, QUERY_TASK), codes)
        torch.testing.assert_close(two[0, :2], two[1, :2])
        assert two[0, 4:].eq(0).all() and two[1, 5:].eq(0).all() and two[:, :4].ne(0).all()
        total = model.sequence_logprob(text.expand(2, -1), tasks(2, QUERY_TASK), codes)
        torch.testing.assert_close(total, two.sum(-1))
        # the task token changes the distribution
        product = model.token_logprobs(text.expand(2, -1), tasks(2, PRODUCT_TASK), codes)
        assert not torch.allclose(two, product)


def test_code_rows_are_validated() -> None:
    text, task = np.ones((1, 2), np.int64), np.zeros(1, np.int64)
    for bad in (
        [3, 4, 0, 0, 0, 0, 0],
        [EOS, 0, 0, 0, 0, 0, 0],
        [3, 0, EOS, 0, 0, 0, 0],
        [3, EOS, 4, 0, 0, 0, 0],
    ):
        with pytest.raises(ValueError, match="row 0"):
            CodeExamples(text, task, np.array([bad], np.int64))
    with pytest.raises(ValueError, match="task"):
        CodeExamples(text, np.array([2]), code_rows((3,)))
    joined = CodeExamples.concat(
        CodeExamples(text, task, code_rows((3,))),
        CodeExamples(np.ones((2, 4), np.int64), task.repeat(2), code_rows((4,), (5,))),
    )
    assert (
        joined.text_ids.shape == (3, 4) and joined.text_ids[0].tolist() == [1, 1, 0, 0] and len(joined) == 3
    )


# --- SFT ---------------------------------------------------------------------------------------


def toy_sides(rows: int = 96) -> tuple[CodeExamples, CodeExamples]:
    """The SAME texts on both sides; piece p names the query code (3 + p%4,) and the product code
    (3 + p%4, 7 + p%3): only the task token tells the sides apart."""
    rng = np.random.default_rng(0)
    pieces = rng.integers(1, 13, size=rows)
    text = np.zeros((rows, 3), np.int64)
    text[:, 0] = pieces
    query = code_rows(*[(3 + p % 4,) for p in pieces.tolist()])
    product = code_rows(*[(3 + p % 4, 7 + p % 3) for p in pieces.tolist()])
    return (
        CodeExamples(text, np.full(rows, QUERY_TASK), query),
        CodeExamples(text, np.full(rows, PRODUCT_TASK), product),
    )


def test_sft_learns_both_sides_through_the_task_token() -> None:
    query, product = toy_sides()
    config = SftConfig(epochs=40, batch_size=32, lr=1e-2, seed=0, progress=False)
    metrics = train_sft(tiny_model(seed=2, dropout=0.0), query, product, config)
    assert metrics["loss"] < 0.2 * metrics["first_loss"]
    assert metrics["query_accuracy"] > 0.95 and metrics["product_accuracy"] > 0.95


def test_sft_lambda_weights_the_product_side_and_an_empty_side_adds_nothing() -> None:
    query, product = toy_sides()
    config = SftConfig(epochs=8, batch_size=32, lr=1e-2, lam=0.0, seed=0, progress=False)
    untrained = tiny_model(seed=3, dropout=0.0)
    with torch.no_grad():
        before = -untrained.token_logprobs(
            torch.from_numpy(product.text_ids),
            torch.from_numpy(product.task),
            torch.from_numpy(product.codes),
        )
    start = before.sum().item() / (product.codes != PAD).sum()
    weighted = train_sft(copy.deepcopy(untrained), query, product, config)
    # λ = 0: the product side does not train, its loss stays near the untrained model's
    assert weighted["query_loss"] < 0.3 * start
    assert weighted["product_loss"] > 0.5 * start
    empty = CodeExamples(np.zeros((0, 3), np.int64), np.zeros(0, np.int64), np.zeros((0, 7), np.int64))
    alone = train_sft(
        copy.deepcopy(untrained), query, empty, SftConfig(epochs=8, batch_size=32, lr=1e-2, progress=False)
    )
    assert math.isnan(alone["product_loss"]) and alone["query_loss"] < 0.3 * start
    with pytest.raises(ValueError, match="task"):
        train_sft(untrained, product, query, config)


def test_sft_is_deterministic_for_a_seed() -> None:
    query, product = toy_sides(40)
    config = SftConfig(epochs=1, batch_size=16, lr=1e-2, seed=5, progress=False)
    first, second = tiny_model(seed=4), tiny_model(seed=4)  # default dropout: the seed fixes it too
    assert train_sft(first, query, product, config) == train_sft(second, query, product, config)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


# --- DPO ---------------------------------------------------------------------------------------


def toy_pairs(rows: int = 12) -> PreferencePairs:
    """Query piece p, product pieces (p, p+12); chosen code (3 + p%4, 9), rejected (3 + p%4, 10, 11)."""
    pieces = np.arange(rows) % 12 + 1
    query = np.stack([pieces, np.zeros(rows, np.int64)], axis=1)
    product = np.stack([pieces, pieces + 12, np.zeros(rows, np.int64)], axis=1)
    chosen = code_rows(*[(3 + p % 4, 9) for p in pieces.tolist()])
    rejected = code_rows(*[(3 + p % 4, 10, 11) for p in pieces.tolist()])
    return PreferencePairs(query.astype(np.int64), product.astype(np.int64), chosen, rejected)


def pair_tensors(pairs: PreferencePairs) -> tuple[torch.Tensor, ...]:
    return tuple(
        torch.from_numpy(a) for a in (pairs.query_ids, pairs.product_ids, pairs.chosen, pairs.rejected)
    )


def test_pair_logprob_is_the_mean_of_both_sides_probabilities() -> None:
    model = tiny_model(seed=5)
    query, product, chosen, _ = pair_tensors(toy_pairs(4))
    with torch.no_grad():
        got = pair_logprob(model, query, product, chosen)
        q = model.sequence_logprob(query, tasks(4, QUERY_TASK), chosen).double().exp()
        t = model.sequence_logprob(product, tasks(4, PRODUCT_TASK), chosen).double().exp()
    torch.testing.assert_close(got.double(), ((q + t) / 2).log(), atol=1e-5, rtol=0)


def test_dpo_loss_is_log_2_when_policy_is_the_reference() -> None:
    model = tiny_model(seed=6)
    query, product, chosen, rejected = pair_tensors(toy_pairs())
    with torch.no_grad():
        lp_chosen = pair_logprob(model, query, product, chosen)
        lp_rejected = pair_logprob(model, query, product, rejected)
    lengths = (chosen != PAD).sum(-1), (rejected != PAD).sum(-1)
    loss, stats = dpo_loss(lp_chosen, lp_rejected, lp_chosen, lp_rejected, *lengths, DpoConfig())
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert stats["margin"] == 0 and stats["chosen_reward"] == 0
    # train_dpo's first step sees the same: the policy runs without dropout, like the reference
    history = train_dpo(
        tiny_model(seed=6), tiny_model(seed=6), toy_pairs(), DpoConfig(steps=1, lr=1e-2, progress=False)
    )
    assert history[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_dpo_raises_the_chosen_code_and_lowers_the_rejected_one() -> None:
    model = tiny_model(seed=7, dropout=0.1)
    reference = copy.deepcopy(model)
    pairs = toy_pairs()
    query, product, chosen, rejected = pair_tensors(pairs)
    with torch.no_grad():
        before = pair_logprob(model, query, product, chosen), pair_logprob(model, query, product, rejected)
    config = DpoConfig(steps=15, batch_size=6, lr=1e-2, seed=0, progress=False)
    history = train_dpo(model, reference, pairs, config)
    with torch.no_grad():
        after = pair_logprob(model, query, product, chosen), pair_logprob(model, query, product, rejected)
    assert (after[0] > before[0]).all(), "every chosen code's probability rises"
    assert (after[1] < before[1]).all(), "every rejected code's probability falls"
    assert history[-1]["loss"] < history[0]["loss"] - 0.05 and history[-1]["margin"] > 0
    for a, b in zip(reference.parameters(), copy.deepcopy(reference).parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="copy"):
        train_dpo(model, model, pairs, config)


def test_separate_betas_weigh_chosen_and_rejected_rewards() -> None:
    # log-ratios 1 (chosen) and 2 (rejected), one token each: margin = β_w·1 - β_l·2
    args = (torch.tensor([-1.0]), torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-3.0]))
    ones = (torch.tensor([1]), torch.tensor([1]))
    at_zero, _ = dpo_loss(*args, *ones, DpoConfig(beta_chosen=0.2, beta_rejected=0.1))
    assert at_zero.item() == pytest.approx(math.log(2))
    smaller, stats = dpo_loss(*args, *ones, DpoConfig(beta_chosen=0.2, beta_rejected=0.05))
    assert smaller.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.1))))
    assert stats["chosen_reward"] == pytest.approx(0.2) and stats["rejected_reward"] == pytest.approx(0.1)
    larger, _ = dpo_loss(*args, *ones, DpoConfig(beta_chosen=0.3, beta_rejected=0.1))
    assert larger.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.1))))
    one_beta, _ = dpo_loss(*args, *ones, DpoConfig(beta_chosen=0.1, beta_rejected=0.1))
    assert one_beta.item() > at_zero.item()  # a single β = 0.1 prefers the rejected code here


def test_length_penalty_divides_rewards_by_code_length() -> None:
    # both codes moved their log-probability by +1; the chosen one has 2 tokens, the rejected 5
    args = (torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([-1.0]), torch.tensor([-1.0]))
    lengths = (torch.tensor([2]), torch.tensor([5]))
    plain, _ = dpo_loss(*args, *lengths, DpoConfig(beta_chosen=1.0, beta_rejected=1.0, length_penalty=0.0))
    assert plain.item() == pytest.approx(math.log(2))  # plain sums: equal rewards
    per_token, stats = dpo_loss(
        *args, *lengths, DpoConfig(beta_chosen=1.0, beta_rejected=1.0, length_penalty=1.0)
    )
    assert stats["margin"] == pytest.approx(1 / 2 - 1 / 5)
    assert per_token.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.3))))


def test_loss_alarm_fires_at_log_2_and_at_collapse(caplog: pytest.LogCaptureFixture) -> None:
    assert loss_alarm([0.6931, 0.6929, 0.6935]) is not None
    assert loss_alarm([0.6, 0.1, 1e-5, 1e-5]) is not None
    assert loss_alarm([0.69, 0.6, 0.5, 0.45]) is None
    with caplog.at_level(logging.WARNING, logger="model_export.gram.align"):
        train_dpo(
            tiny_model(seed=8), tiny_model(seed=8), toy_pairs(), DpoConfig(steps=3, lr=0.0, progress=False)
        )
    assert any("log 2" in r.getMessage() for r in caplog.records)


# --- ONNX export and runtime -------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[GramGenerator, Path, GramExport]:
    model = tiny_model(seed=9)
    directory = tmp_path_factory.mktemp("gram_export")
    return model, directory, export_generator(model, directory)


def copy_bundle(source: Path, target: Path) -> Path:
    for name in GRAM_GENERATOR_FILES:
        shutil.copy(source / name, target / name)
    return target


def test_export_records_what_the_manifest_needs(exported: tuple[GramGenerator, Path, GramExport]) -> None:
    spec = exported[2]
    assert spec.vocab_size == CODE_VOCAB and spec.dim == 32 and spec.max_text_tokens == 16
    assert (spec.encoder, spec.decoder, spec.probe) == GRAM_GENERATOR_FILES
    assert spec.parity_max_abs_diff <= 1e-4


@pytest.mark.parametrize("text_len", [3, 16])
def test_runtime_matches_torch_at_every_prefix_length(
    exported: tuple[GramGenerator, Path, GramExport], text_len: int
) -> None:
    model, directory, _ = exported
    runtime = GramGeneratorRuntime.load(directory, dim=32, vocab_size=CODE_VOCAB)
    rng = np.random.default_rng(text_len)
    beams = 5
    for task in (QUERY_TASK, PRODUCT_TASK):
        text = rng.integers(1, TEXT_VOCAB, size=(1, text_len)).astype(np.int64)
        if text_len > 3:
            text[0, -4:] = 0  # a right-padded prompt
        memory, pad = runtime.encode(text[0], task)
        with torch.no_grad():
            want, want_pad = model.encode(torch.from_numpy(text), torch.tensor([task]))
        np.testing.assert_allclose(memory, want.numpy(), atol=1e-4)
        np.testing.assert_array_equal(pad, want_pad.numpy())
        step = runtime.stepper(memory, pad)
        for length in range(1, MAX_CODE_TOKENS + 1):
            values = rng.integers(RESERVED, CODE_VOCAB, size=(beams, length - 1))
            prefix = np.concatenate([np.full((beams, 1), BOS), values], axis=1).astype(np.int64)
            with torch.no_grad():
                expected = model.decode(want, want_pad, torch.from_numpy(prefix))[:, -1]
            np.testing.assert_allclose(step(prefix), expected.numpy(), atol=1e-4)


def test_runtime_refuses_bad_prompts(exported: tuple[GramGenerator, Path, GramExport]) -> None:
    runtime = GramGeneratorRuntime.load(exported[1])
    with pytest.raises(ValueError, match="task"):
        runtime.encode(np.array([4, 5]), 2)
    with pytest.raises(ValueError, match="one prompt"):
        runtime.encode(np.zeros(0, np.int64), QUERY_TASK)
    with pytest.raises(ValueError, match="one prompt"):
        runtime.encode(np.ones((2, 3), np.int64), QUERY_TASK)


@pytest.mark.parametrize(("key", "file"), [("memory", GRAM_ENCODER_FILE), ("logits", GRAM_DECODER_FILE)])
def test_load_refuses_a_tampered_probe(
    exported: tuple[GramGenerator, Path, GramExport], tmp_path: Path, key: str, file: str
) -> None:
    directory = copy_bundle(exported[1], tmp_path)
    with np.load(directory / GRAM_PROBE_FILE) as probe:
        arrays = dict(probe)
    arrays[key] = arrays[key] + 1e-2
    np.savez(directory / GRAM_PROBE_FILE, **arrays)
    with pytest.raises(ValueError, match=file):
        GramGeneratorRuntime.load(directory)
    (directory / GRAM_PROBE_FILE).write_bytes(b"not an npz")
    with pytest.raises(ValueError, match=GRAM_PROBE_FILE):
        GramGeneratorRuntime.load(directory)


def test_load_refuses_a_corrupt_or_altered_decoder(
    exported: tuple[GramGenerator, Path, GramExport], tmp_path: Path
) -> None:
    directory = copy_bundle(exported[1], tmp_path)
    path = directory / GRAM_DECODER_FILE
    graph = onnx.load(str(path))
    largest = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights = numpy_helper.to_array(largest)
    # a constant shift would vanish against LayerNorm's zero-mean outputs: add noise instead
    noise = np.random.default_rng(0).normal(0, 0.05, weights.shape).astype(np.float32)
    largest.CopyFrom(numpy_helper.from_array(weights + noise, largest.name))
    onnx.save(graph, str(path))  # loads fine, computes something else: the probe catches it
    with pytest.raises(ValueError, match=f"{GRAM_DECODER_FILE} does not reproduce"):
        GramGeneratorRuntime.load(directory)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=GRAM_DECODER_FILE):
        GramGeneratorRuntime.load(directory)
    with pytest.raises(ValueError, match="manifest"):
        GramGeneratorRuntime.load(copy_bundle(exported[1], directory), vocab_size=CODE_VOCAB + 1)
    (directory / GRAM_ENCODER_FILE).unlink()
    with pytest.raises(FileNotFoundError):
        GramGeneratorRuntime.load(directory)


def test_a_value_token_starts_next_to_the_words_that_name_it() -> None:
    config = GramGeneratorConfig(
        text_vocab=TEXT_VOCAB, code_vocab=CODE_VOCAB, dim=32, heads=2, layers=1, ffn=64, max_text_tokens=16,
        value_pieces=2,
    )  # fmt: skip
    pieces = np.zeros((CODE_VOCAB, 2), np.int64)
    pieces[RESERVED] = (7, 8)  # value token 3 is named by pieces 7 and 8
    pieces[RESERVED + 1] = (9, 0)
    torch.manual_seed(0)
    model = GramGenerator(config, pieces)
    with torch.no_grad():
        table = model.code_table()
        text = model.text_embedding.weight
        own = model.code_embedding.weight
        assert torch.allclose(table[RESERVED], own[RESERVED] + (text[7] + text[8]) / 2)
        assert torch.allclose(table[RESERVED + 1], own[RESERVED + 1] + text[9])
        assert torch.allclose(table[PAD], own[PAD]), "reserved tokens have no text part"
    # The pieces are part of the state: a copy made from the config alone loads them.
    copy = GramGenerator(config)
    copy.load_state_dict(model.state_dict())
    assert torch.equal(copy.value_pieces, model.value_pieces)
    with pytest.raises(ValueError, match="value pieces of shape"):
        GramGenerator(config, pieces[:, :1])
