"""The NSP encoder's structural promises, checked through its outputs."""

import numpy as np
import pytest
import torch

from index.features import COL, Session, build_tokens, stack_left_padded
from index.vocab import Vocabulary
from model_export.model import Encoder, NSPConfig, NSPModel, session_mask

T0 = 1767225600


@pytest.fixture(scope="module")
def setup() -> tuple[NSPModel, Vocabulary]:
    torch.manual_seed(0)
    v = Vocabulary.build(
        [f"i{i}" for i in range(50)], [f"c{i % 5}" for i in range(50)], list(range(50)), ["a", "b"]
    )
    model = NSPModel(
        NSPConfig(n_items=50, n_category_tokens=v.n_category_tokens, n_scene_tokens=v.n_scene_tokens)
    )
    return model.eval(), v


def sessions(items: list[list[str]]) -> list[Session]:
    return [Session(f"r{j}", T0 + 3600 * j, "a", tuple((i, 1) for i in s)) for j, s in enumerate(items)]


@torch.no_grad()
def user_vec(model: NSPModel, v: Vocabulary, history: list[Session]) -> np.ndarray:
    tokens = build_tokens(history, "b", T0 + 3600 * 99, v)
    return Encoder(model)(torch.from_numpy(tokens[None]))[0].numpy()


def test_session_is_a_set(setup: tuple[NSPModel, Vocabulary]) -> None:
    model, v = setup
    a = user_vec(model, v, sessions([["i1", "i2", "i3"], ["i4", "i5"]]))
    b = user_vec(model, v, sessions([["i3", "i1", "i2"], ["i5", "i4"]]))
    c = user_vec(model, v, sessions([["i4", "i5"], ["i1", "i2", "i3"]]))
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert not np.allclose(a, c, atol=1e-4)  # across sessions, order matters


@torch.no_grad()
def test_context_token_sees_only_earlier_sessions(setup: tuple[NSPModel, Vocabulary]) -> None:
    model, v = setup
    base = sessions([["i1", "i2"], ["i3", "i4"], ["i5"]])
    changed = sessions([["i1", "i2"], ["i3", "i9"], ["i5"]])  # session 1's items differ
    h = [model(torch.from_numpy(build_tokens(s, "a", T0 + 86400, v)[None]))[0] for s in (base, changed)]
    tokens = build_tokens(base, "a", T0 + 86400, v)
    contexts = np.flatnonzero(tokens[:, COL["token_type"]] == 1)
    # Context of session 1 must not see its own items; session 2's context must.
    torch.testing.assert_close(h[0][contexts[1]], h[1][contexts[1]])
    assert not torch.allclose(h[0][contexts[2]], h[1][contexts[2]])
    # Item i3 (same session as the change) does not see its sibling either.
    torch.testing.assert_close(h[0][contexts[1] + 1], h[1][contexts[1] + 1])


def test_mask_keeps_padding_out() -> None:
    token_type = torch.tensor([[0, 0, 1, 2]])
    session = torch.tensor([[0, 0, 0, 0]])
    mask = session_mask(token_type, session)[0]
    assert mask[0, 0] and mask[1, 1]  # padding rows see themselves: no all-masked softmax
    assert not mask[2:, :2].any()  # real tokens never see padding
    assert mask[3].tolist() == [False, False, True, True]  # own context + itself


@torch.no_grad()
def test_left_padding_does_not_change_output(setup: tuple[NSPModel, Vocabulary]) -> None:
    model, v = setup
    short = build_tokens(sessions([["i1"]]), "a", T0 + 7200, v)
    long = build_tokens(sessions([["i1", "i2"], ["i3"], ["i4", "i5", "i6"]]), "a", T0 + 86400, v)
    alone = Encoder(model)(torch.from_numpy(short[None]))
    batched = Encoder(model)(torch.from_numpy(stack_left_padded([short, long])))
    torch.testing.assert_close(alone[0], batched[0], atol=1e-5, rtol=1e-5)
