"""The search world: attribute catalog, search requests with queries, ground-truth intents, and
the behaviour that makes it worth training and judging a search model on."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from index.text import normalize_text
from model_export.data import read_events
from model_export.search_truth import relevant_items, search_stats
from model_export.search_vocab import ATTRIBUTES, FAMILIES, TAXONOMY, VALUES
from model_export.search_world import (
    CATALOG_COLUMNS,
    INTENT_COLUMNS,
    SearchConfig,
    generate_search_world,
    read_table,
    user_preferences,
)
from model_export.synth import DAY, DAY0_TS, SynthConfig, generate
from nsprecall.cli import main

TINY = SynthConfig(n_users=300, n_items=1000, n_categories=30, n_days=10, seed=7)
# Many searches per active day, so click-rate comparisons rest on thousands of exposures.
BUSY = SearchConfig(searches_per_active_day=1.5)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("search_world")
    generate_search_world(TINY, out, BUSY)
    return out


def _tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return (
        read_table(out / "catalog.csv"),
        read_table(out / "events.csv"),
        read_table(out / "search_intents.csv"),
    )


def test_same_config_writes_identical_files_and_another_seed_does_not(world: Path, tmp_path: Path) -> None:
    generate_search_world(TINY, tmp_path / "again", BUSY)
    generate_search_world(replace(TINY, seed=8), tmp_path / "other", BUSY)
    for name in ("catalog.csv", "events.csv", "search_intents.csv"):
        assert (world / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
        assert (world / name).read_bytes() != (tmp_path / "other" / name).read_bytes(), name


def test_catalog_keeps_the_base_items_and_adds_fitting_attributes(world: Path, tmp_path: Path) -> None:
    catalog, _, _ = _tables(world)
    generate(TINY, tmp_path, progress=False)
    base = read_table(tmp_path / "catalog.csv")
    assert list(catalog.columns) == CATALOG_COLUMNS
    for column in ("item_id", "category", "price", "first_day", "brand"):
        assert catalog[column].tolist() == base[column].tolist(), column
    family = {t.value: c.family for c in TAXONOMY for t in c.types}
    for row in catalog.itertuples(index=False):
        assert row.product_type in row.title.lower(), row.title
        allowed = FAMILIES[family[row.product_type]]
        for name in ATTRIBUTES[1:]:
            value = getattr(row, name)
            if name in allowed:
                assert value in {f.value for f in VALUES[allowed[name]]}, (row.product_type, name, value)
            else:  # a kettle has no shoe size
                assert value == "", (row.product_type, name, value)
    assert catalog["category_path"].str.contains(" > ").all()
    assert catalog["title"].nunique() > 0.95 * len(catalog)


def test_every_search_request_has_one_query_and_base_search_rows_are_gone(world: Path) -> None:
    _, events, intents = _tables(world)
    search = events[events["scene"] == "search"]
    assert search["request_id"].str.startswith("s").all()
    assert (search["query"] != "").all()
    assert (search.groupby("request_id")["query"].nunique() == 1).all()
    assert (events.loc[events["scene"] != "search", "query"] == "").all()
    assert not events.loc[events["scene"] != "search", "request_id"].str.startswith("s").any()
    assert set(search["request_id"]) == set(intents["request_id"])
    ts = events["ts"].astype(np.int64)
    assert (np.diff(ts.to_numpy()) >= 0).all()
    first = search.groupby("request_id")["ts"].first().astype(np.int64)
    assert (first == intents.set_index("request_id")["ts"].astype(np.int64).reindex(first.index)).all()


def test_granularity_follows_the_configured_shares(world: Path, tmp_path: Path) -> None:
    _, _, intents = _tables(world)
    share = intents["granularity"].value_counts(normalize=True)
    assert len(intents) > 1000
    assert share["coarse"] == pytest.approx(BUSY.coarse_share, abs=0.06)
    assert share["medium"] == pytest.approx(BUSY.medium_share, abs=0.06)
    constrained = (intents[INTENT_COLUMNS] != "").sum(axis=1)
    assert constrained[intents["granularity"] == "coarse"].between(1, 2).all()
    assert (constrained[intents["granularity"] == "fine"] >= 4).all()
    generate_search_world(TINY, tmp_path, replace(BUSY, coarse_share=0.0, medium_share=0.0))
    assert set(read_table(tmp_path / "search_intents.csv")["granularity"]) == {"fine"}


def test_queries_use_other_words_than_relevant_titles(world: Path, tmp_path: Path) -> None:
    stats = search_stats(world)
    assert stats["absent_word_share"] > 0.3
    # The mismatch comes from the synonym and typo knobs: without them queries say title words.
    generate_search_world(TINY, tmp_path, replace(BUSY, synonym_prob=0.0, typo_rate=0.0))
    assert search_stats(tmp_path)["absent_word_share"] < 0.5 * stats["absent_word_share"]


def test_coarse_queries_repeat_and_fine_ones_are_mostly_unique(world: Path) -> None:
    stats = search_stats(world)
    assert stats["coarse_shared_share"] > 0.15
    assert stats["fine_shared_share"] < 0.05


def test_relevant_items_match_every_constrained_attribute(world: Path) -> None:
    catalog, _, intents = _tables(world)
    relevant = relevant_items(intents, catalog)
    assert sum(bool(v) for v in relevant.values()) > 0.9 * len(intents)
    by_id = catalog.set_index("item_id")
    for row in intents.head(200).itertuples(index=False):
        for item in relevant[row.request_id]:
            for name in INTENT_COLUMNS:
                wanted = getattr(row, name)
                assert wanted in ("", by_id.at[item, name])
    # An unconstrained attribute widens the set: the product type alone is a superset.
    loose = intents.assign(**dict.fromkeys(ATTRIBUTES, ""))
    wide = relevant_items(loose, catalog)
    assert all(relevant[r] <= wide[r] for r in relevant)


def test_relevant_items_are_clicked_far_more_often(world: Path) -> None:
    stats = search_stats(world)
    assert stats["ctr_relevant"] > 3 * stats["ctr_other"]
    assert 0.05 < stats["ctr_other"] < stats["ctr_relevant"] < 0.7


def test_a_users_preferred_brands_raise_their_click_share(world: Path) -> None:
    catalog, events, _ = _tables(world)
    prefs = user_preferences(TINY, BUSY, catalog)
    category = dict(zip(catalog["item_id"], catalog["category"], strict=True))
    brand = dict(zip(catalog["item_id"], catalog["brand"], strict=True))
    search = events[events["scene"] == "search"]
    clicks = search[search["action"] == "click"]
    clicked = set(zip(clicks["request_id"], clicks["item_id"], strict=True))
    shown = search[search["action"] == "exposure"]
    liked = np.array(
        [
            brand[i] in prefs.brands[(u, category[i])]
            for u, i in zip(shown["user_id"], shown["item_id"], strict=True)
        ]
    )
    click = np.array([k in clicked for k in zip(shown["request_id"], shown["item_id"], strict=True)])
    assert liked.sum() > 500
    assert click[liked].mean() > 1.5 * click[~liked].mean()


def test_nothing_is_exposed_before_it_arrives(world: Path) -> None:
    catalog, events, _ = _tables(world)
    first_day = dict(zip(catalog["item_id"], catalog["first_day"].astype(int), strict=True))
    search = events[events["scene"] == "search"]
    day = (search["ts"].astype(np.int64) - DAY0_TS) // DAY
    arrival = search["item_id"].map(first_day)
    assert (arrival <= day).all()


def test_read_events_reads_the_queries(world: Path) -> None:
    _, _, intents = _tables(world)
    frame = read_events(world / "events.csv")
    search = frame[frame["scene"] == "search"]
    expected = intents.set_index("request_id")["query"].map(normalize_text)
    assert (search["query"] == search["request_id"].map(expected)).all()
    assert (frame.loc[frame["scene"] != "search", "query"] == "").all()


def test_cli_synth_search_writes_the_search_world(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["synth", "--out", str(tmp_path), "--users", "60", "--items", "300", "--days", "3", "--quiet"]
    main([*args, "--search"])
    counts = json.loads(capsys.readouterr().out)
    assert counts["searches"] == len(read_table(tmp_path / "search_intents.csv")) > 0
    assert "query" in read_table(tmp_path / "events.csv").columns
