"""The learned attribute tagger: BIO labels over ``ATTRIBUTE_TYPES`` for the words of a title or a
query, so that attribute values are found in words the dictionary does not hold verbatim (typos,
unseen word orders, a surface whose sense depends on its neighbours).

Each word is read as a hashed word id plus the mean of its hashed character 3-grams (of
"<word>"), so a typo'd word keeps most of its grams and lands near the word it misspells; a
one-layer BiGRU reads the sentence and a linear head scores the labels. Training drops a word's
id embedding at random (``word_dropout``) and injects typos (``typo_rate``) so the grams learn to
carry a word on their own. Small enough to train in seconds on a few thousand sentences on two
CPU cores. Hashing is ``zlib.crc32`` (stable across processes, unlike ``hash``).

Training rows: a title is labelled by dictionary matching restricted to its item's own catalog
values (``title_spans``: truth, every span names a value the item has); a query by unrestricted
matching (``query_spans``: weak labels, the preferred sense of every surface).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model_export.gram.lexicon import (
    ATTRIBUTE_TYPES,
    Lexicon,
    Span,
    dictionary_spans,
    words,
)
from model_export.progress import progress_bar

log = logging.getLogger(__name__)

PAD_ID = 0  # word and gram id of padding (and of a dropped word id)
OUTSIDE = 0  # label "O"
LABELS = ("O", *(f"{p}-{a}" for a in ATTRIBUTE_TYPES for p in ("B", "I")))  # B-a = 1 + 2k, I-a = 2 + 2k
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass
class TaggerConfig:
    word_buckets: int = 16384  # hashed word ids; a world has a few thousand distinct words
    gram_buckets: int = 16384  # hashed character 3-grams
    dim: int = 64  # word + gram embedding width
    hidden: int = 64  # per GRU direction
    dropout: float = 0.1  # on embeddings and GRU outputs (training only)
    word_dropout: float = 0.25  # share of word ids zeroed in training: the grams must carry the word too
    typo_rate: float = 0.05  # per word of 4+ letters, a random edit in training (labels kept)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3  # Adam
    seed: int = 0  # initialisation, batch order, dropout and typos
    # Torch threads while training and tagging: a GRU over 64 x 15 words gains nothing from more,
    # and on a busy machine extra threads make each step many times slower.
    threads: int = 1
    progress: bool = True  # a progress bar per epoch (drawn only when stderr is a terminal)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class AttributeTagger(nn.Module):
    """Word ids and gram ids in, label logits out; ``tag`` and ``extract`` wrap it for text."""

    def __init__(self, config: TaggerConfig) -> None:
        super().__init__()
        self.config = config
        # Sparse gradients: a batch touches a few hundred of the tables' rows, and a dense Adam
        # step over every row would cost twice the rest of the step.
        self.word_embedding = nn.Embedding(config.word_buckets, config.dim, padding_idx=PAD_ID, sparse=True)
        self.gram_embedding = nn.Embedding(config.gram_buckets, config.dim, padding_idx=PAD_ID, sparse=True)
        self.dropout = nn.Dropout(config.dropout)
        self.rnn = nn.GRU(config.dim, config.hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * config.hidden, len(LABELS))

    def forward(self, word_ids: torch.Tensor, gram_ids: torch.Tensor) -> torch.Tensor:
        """word_ids (B, T) int64, gram_ids (B, T, G) int64 (a real word has at least one gram;
        padding words none) → logits (B, T, len(LABELS)); padding positions' logits are 0."""
        present = gram_ids != PAD_ID  # (B, T, G)
        mask = present.any(-1)  # (B, T) real words
        if self.training and self.config.word_dropout > 0:
            kept = torch.rand(word_ids.shape, device=word_ids.device) >= self.config.word_dropout
            word_ids = word_ids * kept
        grams = self.gram_embedding(gram_ids).sum(2)  # (B, T, D)
        grams = grams / present.sum(-1, keepdim=True).clamp(min=1)
        x = self.dropout(self.word_embedding(word_ids) + grams)  # (B, T, D)
        lengths = mask.sum(1).clamp(min=1).cpu()  # pack refuses length 0; that row's output is masked
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        h, _ = pad_packed_sequence(out, batch_first=True, total_length=word_ids.shape[1])  # (B, T, 2H)
        return self.head(self.dropout(h)) * mask.unsqueeze(-1)  # (B, T, C)


class _Features:
    """Hashed ids of words, cached: the same word always gets the same ids."""

    def __init__(self, config: TaggerConfig) -> None:
        self.config = config
        self.cache: dict[str, tuple[int, tuple[int, ...]]] = {}

    def word(self, word: str) -> tuple[int, tuple[int, ...]]:
        found = self.cache.get(word)
        if found is None:
            padded = f"<{word}>"
            grams = dict.fromkeys(padded[i : i + 3] for i in range(len(padded) - 2))
            found = (
                _bucket("w " + word, self.config.word_buckets),
                tuple(_bucket(g, self.config.gram_buckets) for g in grams),
            )
            self.cache[word] = found
        return found

    def batch(self, sentences: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) word ids and (B, T, G) gram ids, right-padded with ``PAD_ID``."""
        length = max((len(s) for s in sentences), default=0)
        rows = [[self.word(w) for w in s] for s in sentences]
        width = max((len(g) for row in rows for _, g in row), default=1)
        word_ids = np.zeros((len(sentences), max(length, 1)), np.int64)
        gram_ids = np.zeros((len(sentences), max(length, 1), width), np.int64)
        for b, row in enumerate(rows):
            for t, (word_id, grams) in enumerate(row):
                word_ids[b, t] = word_id
                gram_ids[b, t, : len(grams)] = grams
        return torch.from_numpy(word_ids), torch.from_numpy(gram_ids)


@contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _bucket(text: str, buckets: int) -> int:
    return 1 + zlib.crc32(text.encode()) % (buckets - 1)


def bio_labels(sentence: Sequence[str], spans: Sequence[Span]) -> list[int]:
    """One label id per word. Raises ``ValueError`` for a span outside the sentence, an unknown
    attribute or overlapping spans."""
    labels = [OUTSIDE] * len(sentence)
    for span in spans:
        if not 0 <= span.start < span.end <= len(sentence):
            raise ValueError(f"span {span} outside a sentence of {len(sentence)} words")
        if span.attribute not in ATTRIBUTE_TYPES:
            raise ValueError(f"span {span} has an unknown attribute type")
        if any(labels[span.start : span.end]):
            raise ValueError(f"span {span} overlaps another span")
        first = 1 + 2 * ATTRIBUTE_TYPES.index(span.attribute)
        labels[span.start : span.end] = [first] + [first + 1] * (span.end - span.start - 1)
    return labels


def _spans_of(sentence: Sequence[str], labels: Sequence[int]) -> list[Span]:
    """BIO decoding; an I- label that does not continue its type starts a span (argmax repair)."""
    spans: list[Span] = []
    start, attribute = -1, ""

    def close(end: int) -> None:
        if start >= 0:
            spans.append(Span(start, end, attribute, " ".join(sentence[start:end])))

    for i, label in enumerate(labels):
        if label == OUTSIDE:
            close(i)
            start = -1
            continue
        kind, name = (label - 1) % 2, ATTRIBUTE_TYPES[(label - 1) // 2]
        if kind == 0 or start < 0 or name != attribute:
            close(i)
            start, attribute = i, name
    close(len(labels))
    return spans


def _typo(word: str, rng: np.random.Generator) -> str:
    """One random edit inside the word (swap, drop, double, replace), as shoppers make them."""
    k = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return word[: k - 1] + word[k] + word[k - 1] + word[k + 1 :]
    if kind == 1:
        return word[:k] + word[k + 1 :]
    if kind == 2:
        return word[:k] + word[k] + word[k:]
    return word[:k] + _LETTERS[int(rng.integers(0, 26))] + word[k + 1 :]


def title_spans(
    titles: Sequence[str], attributes: Sequence[Mapping[str, str]], lexicon: Lexicon
) -> tuple[list[list[str]], list[list[Span]]]:
    """Training rows from titles: each title's words and its spans, matched against the item's
    own values (``attributes``, parallel to ``titles``) and any marketing phrase."""
    if len(titles) != len(attributes):
        raise ValueError(f"{len(titles)} titles but {len(attributes)} attribute rows")
    marketing = lexicon.values("marketing")
    sentences, spans = [], []
    for title, attrs in zip(titles, attributes, strict=True):
        allowed = {a: {v} for a, v in attrs.items()} | {"marketing": marketing}
        sentence = words(title)
        sentences.append(sentence)
        spans.append(dictionary_spans(sentence, lexicon, allowed))
    return sentences, spans


def query_spans(queries: Sequence[str], lexicon: Lexicon) -> tuple[list[list[str]], list[list[Span]]]:
    """Training rows from queries: each query's words and its weak spans (any sense)."""
    sentences = [words(q) for q in queries]
    return sentences, [dictionary_spans(s, lexicon) for s in sentences]


def train_tagger(
    sentences: Sequence[list[str]], spans: Sequence[list[Span]], config: TaggerConfig
) -> AttributeTagger:
    """Trains a new tagger on ``sentences`` (word lists, see ``lexicon.words``) with their
    labelled ``spans`` (cross-entropy over every real word, Adam). Logs the loss per epoch;
    returns the model in eval mode. Raises ``ValueError`` for mismatched inputs, a bad span or
    no non-empty sentence. Deterministic for a seed."""
    if len(sentences) != len(spans):
        raise ValueError(f"{len(sentences)} sentences but {len(spans)} span lists")
    rows = [(list(s), bio_labels(s, p)) for s, p in zip(sentences, spans, strict=True) if s]
    if not rows:
        raise ValueError("no non-empty sentence to train the tagger on")
    with _threads(config.threads):
        return _train(rows, config)


def _train(rows: list[tuple[list[str], list[int]]], config: TaggerConfig) -> AttributeTagger:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = AttributeTagger(config)
    features = _Features(config)
    tables = [model.word_embedding.weight, model.gram_embedding.weight]
    dense = [p for name, p in model.named_parameters() if not name.endswith("embedding.weight")]
    optimizers = [torch.optim.SparseAdam(tables, lr=config.lr), torch.optim.Adam(dense, lr=config.lr)]
    for epoch in range(config.epochs):
        model.train()
        order = rng.permutation(len(rows))
        total, count = 0.0, 0
        batches = range(0, len(rows), config.batch_size)
        bar = progress_bar(batches, config.progress, desc=f"tagger {epoch + 1}/{config.epochs}", leave=False)
        for lo in bar:
            batch = [rows[k] for k in order[lo : lo + config.batch_size].tolist()]
            text = [
                [_typo(w, rng) if len(w) >= 4 and rng.random() < config.typo_rate else w for w in s]
                for s, _ in batch
            ]
            word_ids, gram_ids = features.batch(text)
            target = torch.zeros(word_ids.shape, dtype=torch.int64)  # (B, T)
            mask = torch.zeros(word_ids.shape, dtype=torch.bool)
            for b, (_, labels) in enumerate(batch):
                target[b, : len(labels)] = torch.tensor(labels)
                mask[b, : len(labels)] = True
            logits = model(word_ids, gram_ids)  # (B, T, C)
            loss = F.cross_entropy(logits[mask], target[mask])
            for optimizer in optimizers:
                optimizer.zero_grad()
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
            total += loss.item() * int(mask.sum())
            count += int(mask.sum())
        log.info("tagger epoch %d/%d: loss %.4f", epoch + 1, config.epochs, total / count)
    model.eval()
    return model


@torch.no_grad()
def tag(
    model: AttributeTagger, sentences: Sequence[Sequence[str]], batch_size: int = 512
) -> list[list[Span]]:
    """Spans of each sentence (word lists) by the argmax label per word; puts the model in eval
    mode, no gradient."""
    model.eval()
    features = _Features(model.config)
    out: list[list[Span]] = []
    with _threads(model.config.threads):
        for lo in range(0, len(sentences), batch_size):
            batch = sentences[lo : lo + batch_size]
            word_ids, gram_ids = features.batch(batch)
            labels = model(word_ids, gram_ids).argmax(-1).tolist()  # (B, T)
            out.extend(_spans_of(s, labels[b][: len(s)]) for b, s in enumerate(batch))
    return out


def tagger_accuracy(
    model: AttributeTagger, sentences: Sequence[Sequence[str]], spans: Sequence[Sequence[Span]]
) -> dict[str, dict[str, float]]:
    """Span precision, recall and F1 per attribute type (a predicted span counts when its start,
    end and type all match a labelled one), and over all types as ``"all"``; ``support`` is the
    number of labelled spans. Types with neither labelled nor predicted spans are left out."""
    if len(sentences) != len(spans):
        raise ValueError(f"{len(sentences)} sentences but {len(spans)} span lists")
    predicted = tag(model, sentences)
    counts = {a: [0, 0, 0] for a in (*ATTRIBUTE_TYPES, "all")}  # true positive, predicted, labelled
    for gold, found in zip(spans, predicted, strict=True):
        truth = {(s.start, s.end, s.attribute) for s in gold}
        for s in found:
            hit = int((s.start, s.end, s.attribute) in truth)
            for key in (s.attribute, "all"):
                counts[key][0] += hit
                counts[key][1] += 1
        for s in gold:
            counts[s.attribute][2] += 1
            counts["all"][2] += 1
    report = {}
    for key, (hits, n_predicted, n_labelled) in counts.items():
        if n_predicted or n_labelled:
            precision = hits / n_predicted if n_predicted else 0.0
            recall = hits / n_labelled if n_labelled else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            report[key] = {"precision": precision, "recall": recall, "f1": f1, "support": float(n_labelled)}
    return report
