"""Bundles with a search side, for the text channels' tests: the shared tokenizer (``tokenizer_for``) for the
catalog's item texts and the text indexes built from them, staged into a bundle being written
(``stage_text``), published whole (``write_text_bundle``) or held in memory for a
``FakeBundle`` (``text_indexes``).

``item_texts[i]`` is the text of catalog label i (``fakes.make_vocab``'s ``item-000i``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fakes import write_real_bundle
from tokenizers import Tokenizer, models, pre_tokenizers

from index.bm25 import build_bm25
from index.bundle import Bm25Params, DenseSpec, TextSpec, commit, read_manifest, staging
from index.dense import DENSE_FILES
from index.text import normalize_text
from index.tokenizer import PAD, PAD_ID, TOKENIZER_FILE, UNK, UNK_ID, TextTokenizer
from service.text_indexes import TextIndexes

# A hand-built catalog: label i is TITLES[i] (the comments), for tests of the search channels.
TITLES = [
    "Nike Air running shoes, black",  # 0
    "Adidas running shorts",  # 1
    "Leather hiking boots",  # 2
    "Wool winter socks",  # 3
    "Canvas sneakers, white",  # 4
    "Stainless steel water bottle",  # 5
    "Cotton crew neck t-shirt",  # 6
    "Waterproof hiking jacket",  # 7
    "Trail running sneakers",  # 8
    "Yoga mat with carrying strap",  # 9
]

PREFIX = 5  # a longer word is two pieces: its first PREFIX characters, then the rest


def tokenizer_for(item_texts: Sequence[str]) -> TextTokenizer:
    """A WordPiece tokenizer (the pre-tokenizer ``train_tokenizer`` sets) whose vocabulary follows
    a rule, so every run gets the same pieces: ``train_tokenizer`` is not deterministic on ties,
    which a small catalog is full of (huggingface/tokenizers#1794). Each word of the texts up to
    ``PREFIX`` characters is one piece, a longer one its first ``PREFIX`` characters then
    ``##`` the rest; every character is a piece alone and as ``##c``. So "leathr" shares
    "leath" with "leather", and a word with a character no text has is unknown."""
    split = pre_tokenizers.BertPreTokenizer()
    words = {w for text in item_texts for w, _ in split.pre_tokenize_str(normalize_text(text))}
    pieces: set[str] = set()
    for word in words:
        pieces.update(word)
        pieces.update(f"##{ch}" for ch in word)
        pieces.update([word] if len(word) <= PREFIX else [word[:PREFIX], f"##{word[PREFIX:]}"])
    vocab = {PAD: PAD_ID, UNK: UNK_ID} | {piece: i for i, piece in enumerate(sorted(pieces), start=2)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = split
    return TextTokenizer(tokenizer)


def text_indexes(
    item_texts: Sequence[str],
    *,
    bm25: Bm25Params | None = None,
    tokenizer: TextTokenizer | None = None,
) -> TextIndexes:
    """What ``load_text_indexes`` would load from a bundle ``stage_text`` wrote (without dense);
    ``tokenizer`` defaults to ``tokenizer_for(item_texts)``."""
    tokenizer = tokenizer or tokenizer_for(item_texts)
    spec = TextSpec(bm25=bm25)
    index = build_bm25(item_texts, tokenizer, bm25) if bm25 is not None else None
    return TextIndexes(spec, tokenizer, bm25=index)


def stage_text(
    stage: Path,
    item_texts: Sequence[str],
    *,
    bm25: Bm25Params | None = None,
    tokenizer: TextTokenizer | None = None,
    dense: tuple[Path, DenseSpec] | None = None,
) -> dict[str, Any]:
    """Write ``tokenizer.json`` and the configured indexes into ``stage`` (a bundle directory
    before ``commit``); returns the manifest fields that announce them. ``dense``: a directory
    ``model_export.text.dense.write_dense`` wrote (with ``tokenizer``) and the spec it returned."""
    text = text_indexes(item_texts, bm25=bm25, tokenizer=tokenizer)
    text.tokenizer.save(stage / TOKENIZER_FILE)
    if text.bm25 is not None:
        text.bm25.save(stage)
    spec = text.spec
    if dense is not None:
        for name in DENSE_FILES:
            shutil.copy2(dense[0] / name, stage / name)
        spec = spec.model_copy(update={"dense": dense[1]})
    return {"text": spec.model_dump()}


def write_text_bundle(
    root: Path,
    item_texts: Sequence[str],
    version: int | None = None,
    *,
    bm25: Bm25Params | None = None,
    tokenizer: TextTokenizer | None = None,
    dense: tuple[Path, DenseSpec] | None = None,
    **bundle: Any,
) -> Path:
    """``fakes.write_real_bundle`` over ``len(item_texts)`` items (``bundle`` passed on), with
    the search side ``stage_text`` writes; published under ``root`` in one rename."""
    with tempfile.TemporaryDirectory() as scratch:
        plain = write_real_bundle(Path(scratch), 1, n_items=len(item_texts), **bundle)
        manifest = read_manifest(plain)
        fields = manifest.model_dump(by_alias=True, exclude={"version", "files", "created_at"})
        with staging(root) as stage:
            for name in manifest.files:
                shutil.copy2(plain / name, stage / name)
            staged = stage_text(stage, item_texts, bm25=bm25, tokenizer=tokenizer, dense=dense)
            fields.update(staged)
            return commit(root, stage, fields, version=version)
