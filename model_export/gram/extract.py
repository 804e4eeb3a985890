"""Tagged spans → canonical attribute values: the learned tagger's spans (``tagger.tag``) read
through the lexicon, which has the last word on span boundaries and senses it knows."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from model_export.gram.lexicon import Lexicon, Sense, Span, dictionary_spans, surface_key, words
from model_export.gram.tagger import AttributeTagger, tag


def extract(
    model: AttributeTagger,
    lexicon: Lexicon,
    texts: Sequence[str],
    companions: Mapping[str, Mapping[str, Collection[str]]] | None = None,
) -> list[dict[str, str]]:
    """attribute -> canonical value per text (``marketing`` left out): the tagger's spans read
    through ``lexicon``, the first span of each attribute winning. The lexicon has the last
    word on boundaries it knows: adjacent spans whose joined words are one known surface are
    one span ("ip" + "camera"), and a span it does not know whose words hold known surfaces is
    read as those ("amp midnight"). The product type is the first span the lexicon knows as one
    (the tagger's own spans before those split out, exact before close matches).
    ``companions`` (``lexicon.companion_values``: product type -> attribute -> values) lets the
    product type settle ambiguous spans: "medium" is size m for a hoodie and size medium for a
    rug, "charcoal" a colour for a pillow; without it they take their preferred sense. Never
    raises for odd text (an empty text gives {})."""
    sentences = [words(t) for t in texts]
    out = []
    for sentence, spans in zip(sentences, tag(model, sentences), strict=True):
        pieces = [
            piece
            for span in _merge(lexicon, [s for s in spans if s.attribute != "marketing"])
            for piece in _split(lexicon, span)
        ]
        pieces += [(span, True) for span in _gaps(lexicon, sentence, spans)]
        pieces.sort(key=lambda t: t[0].start)
        types = [(span, derived) for span, derived in pieces if span.attribute == "product_type"]
        chosen = min(types, key=lambda t: (_familiarity(lexicon, t[0]), t[1]), default=(None, False))[0]
        attrs: dict[str, str] = {}
        if chosen is not None:
            attrs["product_type"] = lexicon.normalize("product_type", chosen.surface)
        context = companions.get(attrs.get("product_type", "")) if companions is not None else None
        for span, _ in pieces:
            if span is chosen or (span.attribute == "product_type" and context is None):
                continue
            attribute, value = _resolve(lexicon, span, context)
            if attribute != "marketing":
                attrs.setdefault(attribute, value)
        out.append(attrs)
    return out


def _merge(lexicon: Lexicon, spans: list[Span]) -> list[Span]:
    """Runs of adjacent spans whose joined words are one known surface become that span (its
    sense of one of the run's attributes if it has one, else its preferred sense)."""
    out, k = [], 0
    while k < len(spans):
        for j in range(len(spans) - 1, k, -1):
            run = spans[k : j + 1]
            if any(a.end != b.start for a, b in itertools.pairwise(run)):
                continue
            surface = " ".join(s.surface for s in run)
            senses = lexicon.senses.get(surface, ())
            if senses:
                tagged = {s.attribute for s in run}
                attribute = next((a for a, _ in senses if a in tagged), senses[0][0])
                out.append(Span(run[0].start, run[-1].end, attribute, surface))
                k = j + 1
                break
        else:
            out.append(spans[k])
            k += 1
    return out


def _gaps(lexicon: Lexicon, sentence: Sequence[str], spans: Sequence[Span]) -> list[Span]:
    """Dictionary spans in the words no tagger span covers (marketing spans included)."""
    covered = np.zeros(len(sentence), bool)
    for span in spans:
        covered[span.start : span.end] = True
    out: list[Span] = []
    for run_start, run_end in _runs(~covered):
        inner = dictionary_spans(sentence[run_start:run_end], lexicon)
        out.extend(Span(run_start + s.start, run_start + s.end, s.attribute, s.surface) for s in inner)
    return [s for s in out if s.attribute != "marketing"]


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of True in ``flags``."""
    edges = np.flatnonzero(np.diff(np.r_[0, flags.astype(np.int8), 0]))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _split(lexicon: Lexicon, span: Span) -> list[tuple[Span, bool]]:
    """(span, False) when the lexicon knows its surface as its attribute (or knows nothing
    inside it), else (piece, True) for each dictionary span inside it."""
    if lexicon.has(span.attribute, span.surface):
        return [(span, False)]
    inner = dictionary_spans(span.surface.split(" "), lexicon)
    pieces = [(Span(span.start + s.start, span.start + s.end, s.attribute, s.surface), True) for s in inner]
    return pieces or [(span, False)]


def _familiarity(lexicon: Lexicon, span: Span) -> int:
    """0 for a known surface of the span's attribute, 1 for a close one, 2 for neither."""
    if lexicon.has(span.attribute, span.surface):
        return 0
    return 1 if lexicon.normalize(span.attribute, span.surface) in lexicon.values(span.attribute) else 2


def _resolve(lexicon: Lexicon, span: Span, context: Mapping[str, Collection[str]] | None) -> Sense:
    """The span's (attribute, value): its tagged attribute's value when the product type's items
    have it (or nothing is known about them), else another sense of the surface that they have."""
    among = context.get(span.attribute) if context is not None else None
    value = lexicon.normalize(span.attribute, span.surface, among)
    if context is None or (among is not None and value in among):
        return span.attribute, value
    for attribute, other in lexicon.senses.get(surface_key(span.surface), ()):
        if other in context.get(attribute, ()):
            return attribute, other
    return span.attribute, value
