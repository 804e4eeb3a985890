"""GRAM codes: granularity, the code order, a product's ladder of prefixes and the initial targets
shared across the click link."""

from __future__ import annotations

import pytest

from index.gram_vocab import EOS, CodeVocab, code_lengths
from model_export.gram.codes import (
    MAX_CODE_ATTRIBUTES,
    click_link_targets,
    granularity,
    product_codes,
    query_backoffs,
    query_code,
)
from model_export.gram.lexicon import CODE_TYPES

HOODIE = {
    "colour": "navy", "brand": "Kalo", "product_type": "hoodie", "size": "m", "marketing": "hot sale",
    "audience": "men", "material": "cotton", "season": "winter", "style": "casual", "series": "air",
}  # fmt: skip
KETTLE = {"product_type": "kettle", "brand": "Torzu", "colour": "white"}


def test_granularity_is_coarse_up_to_two_medium_at_three_fine_beyond() -> None:
    pt, brand, colour, size = (
        ("product_type", "kettle"),
        ("brand", "Torzu"),
        ("colour", "white"),
        ("size", "1l"),
    )
    assert [granularity(c) for c in ((pt,), (pt, brand), (pt, brand, colour), (pt, brand, colour, size))] == [
        "coarse", "coarse", "medium", "fine",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        granularity(())


def test_query_code_lists_attributes_in_code_order_without_marketing_and_at_most_six() -> None:
    assert query_code({"colour": "white", "product_type": "kettle"}) == (
        ("product_type", "kettle"), ("colour", "white"),
    )  # fmt: skip
    code = query_code(HOODIE)
    assert code is not None and len(code) == MAX_CODE_ATTRIBUTES
    assert [a for a, _ in code] == ["product_type", "brand", "series", "audience", "style", "material"]
    assert query_code({"marketing": "hot sale"}) is None
    assert query_code({"colour": ""}) is None


def test_product_codes_are_the_head_with_one_and_two_attributes_then_all() -> None:
    codes = product_codes(KETTLE)
    kettle = ("product_type", "kettle")
    assert codes == [
        (kettle,),
        (kettle, ("brand", "Torzu")),
        (kettle, ("colour", "white")),
        (kettle, ("brand", "Torzu"), ("colour", "white")),
    ]
    assert [granularity(c) for c in codes] == ["coarse", "coarse", "coarse", "medium"]
    full = product_codes(HOODIE)
    rest = 8  # the hoodie's code attributes besides its type (marketing is not one)
    assert len(full[0]) == 1 and all(c[0] == full[0][0] for c in full)
    assert len(full[-1]) == MAX_CODE_ATTRIBUTES and granularity(full[-1]) == "fine"
    assert len(full) == 1 + rest + rest * (rest - 1) // 2 + 1
    assert all(a != "marketing" for code in full for a, _ in code)
    assert product_codes({}) == []
    # A product without a product type still gets codes, from the attributes it has.
    assert product_codes({"colour": "red", "brand": "Ixka"}) == [
        (("brand", "Ixka"),), (("brand", "Ixka"), ("colour", "red")),
    ]  # fmt: skip


def test_a_query_backs_off_to_its_head_alone_and_with_each_attribute() -> None:
    code = query_code({"product_type": "hoodie", "colour": "navy", "audience": "men"})
    assert code is not None
    hoodie = ("product_type", "hoodie")
    assert query_backoffs(code) == [(hoodie,), (hoodie, ("audience", "men")), (hoodie, ("colour", "navy"))]
    assert query_backoffs((hoodie, ("colour", "navy"))) == [(hoodie,)]
    assert query_backoffs((hoodie,)) == []


def test_codes_encode_with_the_bundle_vocabulary_in_their_own_order() -> None:
    codes = [*product_codes(HOODIE), *product_codes(KETTLE)]
    vocab = CodeVocab.build(CODE_TYPES, codes)
    rows = vocab.encode(codes)
    assert [vocab.decode(r) for r in rows] == codes  # code order is the vocabulary's attribute order
    assert code_lengths(rows).tolist() == [len(c) + 1 for c in codes]
    assert (rows[range(len(codes)), [len(c) for c in codes]] == EOS).all()


def test_click_link_targets_share_codes_both_ways() -> None:
    items = [
        {"product_type": "kettle", "brand": "Torzu"},  # 0: clicked by both queries
        {"product_type": "hoodie", "colour": "navy"},  # 1: clicked by one query
        {"product_type": "mug"},  # 2: never clicked
        {},  # 3: no attributes at all, clicked
    ]
    queries = {
        "torzu kettle": {"product_type": "kettle", "brand": "Torzu"},
        "kettle": {"product_type": "kettle"},
        "gift": {},  # no attributes: only what it clicked
        "unclicked mug": {"product_type": "mug"},
    }
    clicks = [("torzu kettle", 0), ("kettle", 0), ("kettle", 1), ("kettle", 1), ("gift", 1), ("gift", 3)]
    by_query, by_item = click_link_targets(queries, items, clicks)

    kettle, torzu_kettle = (("product_type", "kettle"),), (("product_type", "kettle"), ("brand", "Torzu"))
    hoodie, navy_hoodie = (("product_type", "hoodie"),), (("product_type", "hoodie"), ("colour", "navy"))
    mug = (("product_type", "mug"),)
    # A query takes its own code, its backoffs, and those codes of its clicked items that ask
    # for nothing it did not ("kettle" does not learn the Torzu code or the hoodie's colour).
    assert by_query == {
        "torzu kettle": {torzu_kettle, kettle},
        "kettle": {kettle, hoodie},
        "gift": {hoodie},
        "unclicked mug": {mug},
    }
    assert by_item == {
        0: {kettle, torzu_kettle},  # the product's codes already hold both queries' codes
        1: {hoodie, navy_hoodie, kettle},  # "kettle" clicked a hoodie: its code goes there too
        2: {mug},
    }


def test_a_click_on_an_unknown_item_label_is_refused() -> None:
    with pytest.raises(ValueError, match="label 2"):
        click_link_targets({"q": {"product_type": "mug"}}, [{}, {}], [("q", 2)])
