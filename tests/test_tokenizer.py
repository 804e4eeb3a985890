"""The shared tokenizer: deterministic, dense ids, padding, and a misspelling's shared pieces."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from index.tokenizer import PAD_ID, UNK_ID, TextTokenizer, train_tokenizer

TEXTS = [
    "Kelora running sneakers black size 42",
    "Kelora running sneakers white size 43",
    "Ixka trail running shoes m blue",
    "Ixka trail running shoes s grey",
    "cotton crew-neck t-shirt for women, white",
    "cotton crew-neck t-shirt for men, black",
] * 3


def test_the_same_texts_give_the_same_vocabulary() -> None:
    first, second = train_tokenizer(TEXTS, 500), train_tokenizer(list(TEXTS), 500)
    assert first.ids(TEXTS, 16).tolist() == second.ids(TEXTS, 16).tolist()
    assert first.vocab_size == second.vocab_size


def test_ids_are_dense_even_with_one_letter_words() -> None:
    """'m' and 's' are words here and also character pieces: every id stays below vocab_size
    (a model's embedding table is that size)."""
    tokenizer = train_tokenizer(TEXTS, 500)
    ids = tokenizer.ids([*TEXTS, "m s t zzz"], 32)
    assert ids.max() < tokenizer.vocab_size
    assert (ids[-1][:4] > UNK_ID).all()


def test_padding_truncation_and_unknown_characters() -> None:
    tokenizer = train_tokenizer(TEXTS, 500)
    ids = tokenizer.ids(["running", "", "running shoes black white kelora ixka", "日本"], 3)
    assert ids.shape == (4, 3)
    assert ids[0, 1:].tolist() == [PAD_ID, PAD_ID] and ids[1].tolist() == [PAD_ID] * 3
    assert (ids[2] > UNK_ID).all()
    assert ids[3, 0] == UNK_ID


def test_a_misspelt_word_falls_into_known_pieces_led_by_the_right_prefix() -> None:
    """A frequent word is one piece, so its typo does not share that piece; it still becomes
    known pieces (never [UNK]) led by a prefix of the intended word."""
    tokenizer = train_tokenizer(TEXTS, 500)
    pieces = tokenizer.pieces("runnign")
    assert "running".startswith(pieces[0]) and len(pieces[0]) >= 3
    assert UNK_ID not in tokenizer.ids(["runnign"], 8)[0]
    assert tokenizer.pieces("SNEAKERS") == tokenizer.pieces("sneakers")  # normalised first


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    tokenizer = train_tokenizer(TEXTS, 500)
    tokenizer.save(tmp_path / "tokenizer.json")
    loaded = TextTokenizer.load(tmp_path / "tokenizer.json")
    assert np.array_equal(loaded.ids(TEXTS, 12), tokenizer.ids(TEXTS, 12))
