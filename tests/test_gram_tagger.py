"""GRAM attribute extraction: the lexicon (normalisation, dictionary spans, the search world's
lexicon.csv), the labelled training rows, and the learned tagger on hand-written titles and
queries it never saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from model_export.gram.extract import extract
from model_export.gram.lexicon import (
    LEXICON_FILE,
    Lexicon,
    Span,
    companion_values,
    dictionary_spans,
    item_attributes,
    read_lexicon,
    words,
)
from model_export.gram.tagger import (
    AttributeTagger,
    TaggerConfig,
    bio_labels,
    query_spans,
    tag,
    tagger_accuracy,
    title_spans,
    train_tagger,
)
from model_export.search_world import generate_search_world, read_table
from model_export.synth import SynthConfig

# (attribute, value, surfaces): a hand-written slice of a shop's dictionary. "navy" is also a
# tech colour's word for blue, "pro" a series and a style, "medium" a clothing and a rug size.
_DICTIONARY = [
    ("product_type", "sneakers", ["sneakers", "trainers", "running shoes", "kicks"]),
    ("product_type", "hoodie", ["hoodie", "hoody", "hooded sweatshirt"]),
    ("product_type", "kettle", ["kettle", "electric kettle", "water boiler"]),
    ("product_type", "backpack", ["backpack", "rucksack", "bookbag"]),
    ("product_type", "rug", ["rug", "area rug", "carpet"]),
    ("product_type", "air fryer", ["air fryer", "airfryer"]),
    ("brand", "Kalo", ["Kalo"]),
    ("brand", "Torzu", ["Torzu"]),
    ("brand", "Ixka", ["Ixka"]),
    ("brand", "Venqui", ["Venqui"]),
    ("series", "air", ["Air"]),
    ("series", "pro", ["Pro"]),
    ("audience", "men", ["men", "Men's", "for Men", "mens"]),
    ("audience", "women", ["women", "Women's", "for Women", "womens", "ladies"]),
    ("audience", "kids", ["kids", "Kids'", "for Kids", "childrens"]),
    ("style", "professional", ["professional", "pro", "studio"]),
    ("style", "casual", ["casual", "everyday", "relaxed"]),
    ("material", "cotton", ["cotton", "100 cotton"]),
    ("material", "stainless steel", ["stainless steel", "stainless", "inox"]),
    ("material", "wool", ["wool", "merino", "woollen"]),
    ("colour", "navy", ["navy", "dark blue", "navy blue"]),
    ("colour", "blue", ["blue", "light blue", "navy"]),
    ("colour", "black", ["black", "blk", "jet"]),
    ("colour", "grey", ["grey", "gray", "Space Grey", "charcoal"]),
    ("colour", "white", ["white", "ivory", "off white"]),
    ("size", "42", ["42", "Size 42", "EU 42", "eu42"]),
    ("size", "m", ["m", "Medium", "med"]),
    ("size", "l", ["l", "Large", "lg"]),
    ("size", "medium", ["medium", "M", "mid size"]),
    ("size", "1l", ["1l", "1L", "1 Litre", "1 liter"]),
    ("season", "winter", ["winter", "Winter Warm", "cold weather"]),
    ("season", "summer", ["summer", "hot weather"]),
    ("marketing", "hot sale", ["Hot Sale"]),
    ("marketing", "free shipping", ["Free Shipping"]),
]
LEXICON = Lexicon.from_rows((a, v, s) for a, v, forms in _DICTIONARY for s in [v, *forms])
# Which values each product type takes, and its title form of each.
_KINDS = {
    "sneakers": {"colour": ["navy", "black", "white"], "size": ["42"], "audience": ["men", "women", "kids"],
                 "material": ["cotton", "wool"], "style": ["casual"]},
    "hoodie": {"colour": ["navy", "grey", "black"], "size": ["m", "l"], "audience": ["men", "women"],
               "material": ["cotton", "wool"], "style": ["casual"], "season": ["winter"]},
    "kettle": {"colour": ["white", "black", "grey"], "size": ["1l"], "material": ["stainless steel"],
               "style": ["professional"]},
    "backpack": {"colour": ["navy", "black", "grey"], "audience": ["kids", "men"], "style": ["casual"]},
    "rug": {"colour": ["grey", "white", "blue"], "size": ["medium"], "material": ["wool", "cotton"]},
    "air fryer": {"colour": ["black", "white"], "size": ["1l"], "style": ["professional"]},
}  # fmt: skip
_TITLE_FORM = {"men": "Men's", "women": "Women's", "kids": "Kids'", "42": "Size 42", "m": "Medium",
               "l": "Large", "medium": "M", "1l": "1L"}  # fmt: skip
_QUERY_FORMS = {forms_value: forms for _, forms_value, forms in _DICTIONARY}


def _item(rng: np.random.Generator, kind: str) -> dict[str, str]:
    attrs = {"product_type": kind, "brand": str(rng.choice(["Kalo", "Torzu", "Ixka", "Venqui"]))}
    for attribute, values in _KINDS[kind].items():
        if rng.random() < 0.7:
            attrs[attribute] = str(rng.choice(values))
    if kind != "air fryer" and rng.random() < 0.3:
        attrs["series"] = str(rng.choice(["air", "pro"]))
    return attrs


def _title(rng: np.random.Generator, attrs: dict[str, str]) -> str:
    def form(a: str) -> str:
        v = attrs[a]
        return _TITLE_FORM.get(v, v.title()) if a != "brand" else v

    order = ["brand", "series", "audience", "style", "material", "product_type", "colour", "size", "season"]
    if rng.random() < 0.5:
        order = [
            "brand",
            "series",
            "colour",
            "material",
            "product_type",
            "audience",
            "size",
            "style",
            "season",
        ]
    text = " ".join(form(a) for a in order if a in attrs)
    if rng.random() < 0.3:
        text += " " + str(rng.choice(["Hot Sale", "Free Shipping"]))
    return text.lower() if rng.random() < 0.3 else text


def _query(rng: np.random.Generator, attrs: dict[str, str]) -> str:
    kept = [a for a in attrs if a not in ("series", "product_type") and rng.random() < 0.5]
    phrases = [
        attrs[a].lower() if a == "brand" else str(rng.choice([attrs[a], *_QUERY_FORMS[attrs[a]]]))
        for a in kept
    ]
    noun = str(rng.choice([attrs["product_type"], *_QUERY_FORMS[attrs["product_type"]]]))
    phrases.insert(int(rng.integers(0, len(phrases) + 1)), noun)
    return " ".join(phrases)


def _rows(n: int, seed: int) -> tuple[list[str], list[dict[str, str]], list[str]]:
    rng = np.random.default_rng(seed)
    kinds = list(_KINDS)
    items = [_item(rng, kinds[k % len(kinds)]) for k in range(n)]
    return [_title(rng, a) for a in items], items, [_query(rng, a) for a in items]


@pytest.fixture(scope="module")
def tagger() -> AttributeTagger:
    titles, items, queries = _rows(150, seed=0)
    t_words, t_spans = title_spans(titles, items, LEXICON)
    q_words, q_spans = query_spans(queries, LEXICON)
    return train_tagger(
        [*t_words, *q_words], [*t_spans, *q_spans], TaggerConfig(epochs=25, typo_rate=0.15, progress=False)
    )


def _spans(sentence: str, model: AttributeTagger) -> list[tuple[str, str]]:
    return [(s.attribute, s.surface) for s in tag(model, [words(sentence)])[0]]


def test_words_fold_case_and_keep_inner_punctuation() -> None:
    assert words("Kalo Men's  T-Shirt, 0.5L | HOT Sale") == [
        "kalo",
        "men's",
        "t-shirt",
        "0.5l",
        "hot",
        "sale",
    ]
    assert words("") == []


def test_normalize_maps_case_synonyms_units_and_typos() -> None:
    assert LEXICON.normalize("colour", "Dark Blue") == "navy"
    assert LEXICON.normalize("colour", "navy") == "navy"  # the value itself beats blue's synonym
    assert LEXICON.normalize("size", "EU 42") == "42"
    assert LEXICON.normalize("size", "1 Litre") == "1l"
    assert LEXICON.normalize("audience", "MEN'S") == "men"
    assert LEXICON.normalize("product_type", "Hooded Sweatshirt") == "hoodie"
    assert LEXICON.normalize("product_type", "snaekers") == "sneakers"  # difflib fallback
    assert LEXICON.normalize("colour", "Teal") == "teal"  # unknown: the normalised surface itself
    assert LEXICON.normalize("function", "Waterproof") == "waterproof"


def test_normalize_among_picks_the_sense_the_context_allows() -> None:
    assert LEXICON.normalize("size", "medium") == "medium"
    assert LEXICON.normalize("size", "medium", among={"m", "l"}) == "m"
    assert LEXICON.normalize("colour", "navy", among={"blue", "grey"}) == "blue"
    assert LEXICON.normalize("size", "mediun", among={"m", "l"}) == "m"  # a typo, then the context


def test_dictionary_spans_take_the_longest_match_first() -> None:
    spans = dictionary_spans(words("Navy Blue hooded sweatshirt for men air fryer"), LEXICON)
    assert spans == [
        Span(0, 2, "colour", "navy blue"),
        Span(2, 4, "product_type", "hooded sweatshirt"),
        Span(4, 6, "audience", "for men"),
        Span(6, 8, "product_type", "air fryer"),  # not series "air" + an unknown word
    ]
    assert dictionary_spans(["nothing", "known"], LEXICON) == []


def test_allowed_values_restrict_title_spans_to_the_items_own() -> None:
    sentence = words("Kalo Pro Navy Kettle Hot Sale")
    allowed = {"brand": {"Kalo"}, "style": {"professional"}, "colour": {"blue"}, "product_type": {"kettle"}}
    assert [(s.attribute, s.surface) for s in dictionary_spans(sentence, LEXICON, allowed)] == [
        ("brand", "kalo"), ("style", "pro"), ("colour", "navy"), ("product_type", "kettle"),
    ]  # fmt: skip
    # Unrestricted, the preferred senses: "pro" is the series whose value it is, marketing found.
    assert [(s.attribute, s.surface) for s in dictionary_spans(sentence, LEXICON)] == [
        ("brand", "kalo"), ("series", "pro"), ("colour", "navy"), ("product_type", "kettle"),
        ("marketing", "hot sale"),
    ]  # fmt: skip


def test_title_and_query_rows_label_truth_and_weak_spans() -> None:
    t_words, t_spans = title_spans(
        ["Torzu Women's Black Sneakers, Size 42 Free Shipping"],
        [{"product_type": "sneakers", "brand": "Torzu", "audience": "women", "colour": "black"}],
        LEXICON,
    )
    assert t_words == [["torzu", "women's", "black", "sneakers", "size", "42", "free", "shipping"]]
    # The size is not among the item's values here, so it is not labelled; marketing always is.
    assert [(s.attribute, s.start, s.end) for s in t_spans[0]] == [
        ("brand", 0, 1), ("audience", 1, 2), ("colour", 2, 3), ("product_type", 3, 4), ("marketing", 6, 8),
    ]  # fmt: skip
    _, q_spans = query_spans(["blk trainers eu42 ladies"], LEXICON)
    assert [(s.attribute, s.surface) for s in q_spans[0]] == [
        ("colour", "blk"), ("product_type", "trainers"), ("size", "eu42"), ("audience", "ladies"),
    ]  # fmt: skip
    with pytest.raises(ValueError):
        title_spans(["a title"], [], LEXICON)


def test_bio_labels_refuse_bad_spans() -> None:
    assert bio_labels(["dark", "blue", "hoodie"], [Span(0, 2, "colour", "dark blue")]) == [13, 14, 0]
    with pytest.raises(ValueError):
        bio_labels(["hoodie"], [Span(0, 2, "product_type", "hoodie x")])
    with pytest.raises(ValueError):
        bio_labels(["hoodie"], [Span(0, 1, "category", "hoodie")])
    with pytest.raises(ValueError):
        bio_labels(["a", "b"], [Span(0, 2, "colour", "a b"), Span(1, 2, "size", "b")])


def test_lexicon_files_catalog_fallback_and_merge(tmp_path: Path) -> None:
    catalog = pd.DataFrame(
        {
            "item_id": ["i1", "i2", "i3"],
            "title": ["Kalo Air Sneakers", "Kalo Air Fryer, Black", "Torzu Hoodie"],
            "product_type": ["sneakers", "air fryer", "hoodie"],
            "brand": ["Kalo", "Kalo", "unknown"],
            "colour": ["", "black", "Navy"],
        }
    )
    fallback = read_lexicon(tmp_path, catalog)  # no lexicon.csv: the catalog's values only
    assert fallback == Lexicon.from_catalog(catalog)
    assert fallback.normalize("colour", "NAVY") == "Navy" and "unknown" not in fallback.values("brand")
    assert fallback.values("series") == frozenset()

    LEXICON.to_frame().to_csv(tmp_path / LEXICON_FILE, index=False)
    merged = read_lexicon(tmp_path, catalog)
    assert merged == LEXICON.merge(fallback)
    assert merged.normalize("colour", "dark blue") == "navy" and merged.has("colour", "navy")

    attrs = item_attributes(catalog, merged)
    assert attrs["i1"] == {"product_type": "sneakers", "brand": "Kalo", "series": "air"}
    assert attrs["i2"] == {"product_type": "air fryer", "brand": "Kalo", "colour": "black"}  # no series
    assert attrs["i3"] == {"product_type": "hoodie", "colour": "Navy"}  # the placeholder brand left out

    (tmp_path / LEXICON_FILE).write_text("attribute,value,surface\ncategory,shoes,shoes\n")
    with pytest.raises(ValueError, match=LEXICON_FILE):
        read_lexicon(tmp_path, catalog)


def test_tagger_tags_held_out_titles_and_queries(tagger: AttributeTagger) -> None:
    # Word orders and combinations the training rows do not hold.
    assert _spans("Venqui Pro Kids' Grey Backpack, Hot Sale", tagger) == [
        ("brand", "venqui"), ("series", "pro"), ("audience", "kids"), ("colour", "grey"),
        ("product_type", "backpack"), ("marketing", "hot sale"),
    ]  # fmt: skip
    assert _spans("merino hoody ladies charcoal", tagger) == [
        ("material", "merino"), ("product_type", "hoody"), ("audience", "ladies"), ("colour", "charcoal"),
    ]  # fmt: skip
    assert _spans("ixka stainless electric kettle", tagger) == [
        ("brand", "ixka"), ("material", "stainless"), ("product_type", "electric kettle"),
    ]  # fmt: skip


def test_tagger_finds_a_typod_product_type_the_dictionary_misses(tagger: AttributeTagger) -> None:
    query = "navy blue rucksak for kids"
    assert ("product_type", "rucksak") not in [
        (s.attribute, s.surface) for s in dictionary_spans(words(query), LEXICON)
    ]
    assert ("product_type", "rucksak") in _spans(query, tagger)
    assert extract(tagger, LEXICON, [query]) == [
        {"product_type": "backpack", "colour": "navy", "audience": "kids"}
    ]


def test_extract_normalises_values_and_uses_the_product_types_companions(tagger: AttributeTagger) -> None:
    texts = [
        "Kalo Air Men's Dark Blue Trainers, EU 42 Free Shipping",
        "medium wool hoody",
        "medium wool rug",
        "",
    ]
    assert extract(tagger, LEXICON, texts) == [
        {"product_type": "sneakers", "brand": "Kalo", "series": "air", "audience": "men", "colour": "navy",
         "size": "42"},
        {"product_type": "hoodie", "size": "medium", "material": "wool"},
        {"product_type": "rug", "size": "medium", "material": "wool"},
        {},
    ]  # fmt: skip
    _, items, _ = _rows(150, seed=0)
    companions = companion_values(items)
    assert extract(tagger, LEXICON, texts[1:3], companions) == [
        {"product_type": "hoodie", "size": "m", "material": "wool"},  # a hoodie's medium is size m
        {"product_type": "rug", "size": "medium", "material": "wool"},
    ]


def test_tagger_accuracy_reports_precision_recall_f1_per_type(tagger: AttributeTagger) -> None:
    titles, items, _ = _rows(40, seed=1)  # held out: another draw
    t_words, t_spans = title_spans(titles, items, LEXICON)
    report = tagger_accuracy(tagger, t_words, t_spans)
    assert {"product_type", "brand", "colour", "all"} <= set(report)
    assert set(report) <= {*(a for a, _, _ in _DICTIONARY), "all"}
    for scores in report.values():
        assert set(scores) == {"precision", "recall", "f1", "support"}
        assert all(0.0 <= scores[k] <= 1.0 for k in ("precision", "recall", "f1"))
    assert report["all"]["support"] == sum(len(s) for s in t_spans)
    assert report["all"]["f1"] > 0.95
    # Labels that disagree with the tagger score low: every colour called a size.
    relabelled = [[Span(s.start, s.end, "size" if s.attribute == "colour" else s.attribute, s.surface)
                   for s in spans] for spans in t_spans]  # fmt: skip
    wrong = tagger_accuracy(tagger, t_words, relabelled)
    assert wrong["colour"]["precision"] == 0.0 and wrong["colour"]["support"] == 0.0
    assert wrong["size"]["recall"] < 0.6 and wrong["all"]["f1"] < report["all"]["f1"]


def test_training_is_deterministic_for_a_seed_and_refuses_bad_input() -> None:
    titles, items, _ = _rows(30, seed=2)
    rows = title_spans(titles, items, LEXICON)
    config = TaggerConfig(epochs=2, progress=False)
    a, b = train_tagger(*rows, config), train_tagger(*rows, config)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    with pytest.raises(ValueError):
        train_tagger([["a"]], [], config)
    with pytest.raises(ValueError):
        train_tagger([[]], [[]], config)


def test_search_world_lexicon_is_deterministic_and_maps_its_synonyms(tmp_path: Path) -> None:
    config = SynthConfig(n_users=40, n_items=200, n_categories=10, n_days=3, seed=5)
    generate_search_world(config, tmp_path / "a")
    generate_search_world(config, tmp_path / "b")
    text = (tmp_path / "a" / LEXICON_FILE).read_bytes()
    assert text == (tmp_path / "b" / LEXICON_FILE).read_bytes()
    frame = read_table(tmp_path / "a" / LEXICON_FILE)
    assert list(frame.columns) == ["attribute", "value", "surface"]
    assert not frame.duplicated().any()
    assert frame.values.tolist() == sorted(frame.values.tolist())
    catalog = read_table(tmp_path / "a" / "catalog.csv")
    lexicon = read_lexicon(tmp_path / "a", catalog)
    assert "navy" in set(catalog["colour"])
    assert lexicon.normalize("colour", "dark blue") == "navy"
    assert lexicon.normalize("series", "Air") == "air" and lexicon.values("marketing")
    # Every catalog value is reachable from its own spelling, and every title names its product type.
    attrs = item_attributes(catalog, lexicon)
    for row, found in zip(catalog.itertuples(index=False), attrs.values(), strict=True):
        for column in ("product_type", "brand", "colour", "material", "size", "audience"):
            assert found.get(column, "") == getattr(row, column), (row.title, column)
    _, spans = title_spans(catalog["title"].tolist(), list(attrs.values()), lexicon)
    assert all(any(s.attribute == "product_type" for s in row) for row in spans)
