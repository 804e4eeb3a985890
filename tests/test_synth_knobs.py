"""The session-context knobs of the synthetic world: each one, turned up from 0, moves the
generated log in the direction it promises, and at 0 the world is the base world."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model_export.synth import (
    DAY,
    HOMEPAGE,
    SESSION_KNOBS,
    SESSION_WORLD,
    Structure,
    SynthConfig,
    catalog_structure,
    category_peak_hour,
    category_scene,
    generate,
)
from nsprecall.cli import main

# Busy users on a small catalog: enough clicks per knob world to measure shares to ~±0.02.
SMALL = SynthConfig(n_users=300, n_items=1000, n_categories=30, n_days=10, visits_per_day=1.0, seed=3)


def _events(config: SynthConfig, out: Path) -> pd.DataFrame:
    generate(config, out, progress=False)
    events = pd.read_csv(out / "events.csv")
    structure = catalog_structure(config)
    events["category"] = events["item_id"].map(structure.category)
    events["group"] = events["item_id"].map(structure.group)
    assert events["group"].notna().all()
    return events


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, float], pd.DataFrame]:
    """The base world and, per knob, that knob alone at 0.5 and at 1."""
    out: dict[tuple[str, float], pd.DataFrame] = {}
    base = _events(SMALL, tmp_path_factory.mktemp("base"))
    for knob in SESSION_KNOBS:
        out[knob, 0.0] = base
        for value in (0.5, 1.0):
            config = replace(SMALL, **{knob: value})
            out[knob, value] = _events(config, tmp_path_factory.mktemp(f"{knob}-{value}"))
    return out


def _series(
    worlds: dict[tuple[str, float], pd.DataFrame], knob: str, statistic: Callable[[pd.DataFrame], float]
) -> list[float]:
    return [float(statistic(worlds[knob, value])) for value in (0.0, 0.5, 1.0)]


def _scene_lean_share(events: pd.DataFrame) -> float:
    """Share of homepage and search clicks on categories that lean to that scene."""
    clicks = events[(events["action"] == "click") & events["scene"].isin(["homepage", "search"])]
    lean = np.where(category_scene(clicks["category"].to_numpy()) == HOMEPAGE, "homepage", "search")
    return float((lean == clicks["scene"].to_numpy()).mean())


def _time_alignment(events: pd.DataFrame) -> float:
    """Mean cos(hour - the category's peak hour) over clicks: 0 when time does not matter."""
    clicks = events[events["action"] == "click"]
    hour = (clicks["ts"].to_numpy() % DAY) / 3600.0
    peak = category_peak_hour(clicks["category"].to_numpy())
    return float(np.cos(2 * np.pi * (hour - peak) / 24.0).mean())


def _after_purchase(events: pd.DataFrame, structure: Structure) -> tuple[float, float]:
    """Of the clicks in the 5 requests after a user's purchase request: the share in the
    purchased item's complement sub-cluster and the share in its own sub-cluster."""
    engaged = events[events["action"].isin(["click", "pay"])].sort_values("ts", kind="stable")
    complement = same = total = 0
    for _, rows in engaged.groupby("user_id"):
        requests = rows["request_id"].drop_duplicates().tolist()
        position = {r: p for p, r in enumerate(requests)}
        clicks = rows[rows["action"] == "click"]
        click_position = clicks["request_id"].map(position).to_numpy()
        click_group = clicks["group"].to_numpy()
        for request, group in rows[rows["action"] == "pay"][["request_id", "group"]].itertuples(index=False):
            after = (click_position > position[request]) & (click_position <= position[request] + 5)
            total += int(after.sum())
            complement += int((click_group[after] == structure.complement[group]).sum())
            same += int((click_group[after] == group).sum())
    return complement / total, same / total


def _grid_share(events: pd.DataFrame) -> float:
    """Share of requests with several exposures that show them all at one second."""
    exposures = events[events["action"] == "exposure"].groupby("request_id")["ts"].agg(["nunique", "size"])
    several = exposures[exposures["size"] > 1]
    return float((several["nunique"] == 1).mean())


def test_scene_interest_makes_the_scene_pick_the_interest(
    worlds: dict[tuple[str, float], pd.DataFrame],
) -> None:
    share = _series(worlds, "scene_interest", _scene_lean_share)
    assert abs(share[0] - 0.5) < 0.06  # base world: a scene says nothing about the category
    assert share[0] + 0.04 < share[1] < share[2] - 0.1
    assert share[2] > 0.8


def test_scene_interest_shows_complements_on_detail_and_cart_pages(
    worlds: dict[tuple[str, float], pd.DataFrame],
) -> None:
    structure = catalog_structure(SMALL)

    def complement_share(events: pd.DataFrame) -> float:
        """Share of detail/cart clicks in the complement sub-cluster of the user's last click."""
        ordered = events[events["action"] == "click"].sort_values("ts", kind="stable")
        previous = ordered.groupby("user_id")["group"].shift(1)
        page = ordered["scene"].isin(["detail", "cart"]) & previous.notna()
        partner = structure.complement[previous[page].astype(int).to_numpy()]
        return float((ordered.loc[page, "group"].to_numpy() == partner).mean())

    share = _series(worlds, "scene_interest", complement_share)
    assert share[0] < 0.02
    assert share[0] + 0.02 < share[1] < share[2] - 0.02


def test_time_interest_aligns_clicks_with_each_categorys_hour(
    worlds: dict[tuple[str, float], pd.DataFrame],
) -> None:
    alignment = _series(worlds, "time_interest", _time_alignment)
    # Near 0 in the base world (the shared diurnal rhythm and a few favourites leave ±0.07).
    assert abs(alignment[0]) < 0.1
    assert alignment[0] + 0.15 < alignment[1] < alignment[2] - 0.05


def test_complement_chain_turns_the_next_requests_to_complements(
    worlds: dict[tuple[str, float], pd.DataFrame],
) -> None:
    structure = catalog_structure(SMALL)
    shares = [_after_purchase(worlds["complement_chain", v], structure) for v in (0.0, 0.5, 1.0)]
    complement = [c for c, _ in shares]
    same = [s for _, s in shares]
    assert complement[0] < 0.005
    assert 4 * complement[0] < complement[1] < complement[2] / 2
    assert complement[2] > 0.05
    # Repeats and substitutes of the purchase become rarer.
    assert same[0] > same[1] > same[2] and same[2] < 0.5 * same[0]


def test_unordered_exposure_shows_requests_at_once(worlds: dict[tuple[str, float], pd.DataFrame]) -> None:
    grid = _series(worlds, "unordered_exposure", _grid_share)
    assert grid[0] == 0.0
    assert 0.4 < grid[1] < 0.6
    assert grid[2] == 1.0


def test_knobs_at_zero_are_the_default_and_the_session_world_sets_every_knob() -> None:
    assert all(getattr(SynthConfig(), knob) == 0.0 for knob in SESSION_KNOBS)
    assert set(SESSION_WORLD) == set(SESSION_KNOBS) and all(v > 0 for v in SESSION_WORLD.values())


def test_cli_world_and_knob_options(tmp_path: Path) -> None:
    common = ["synth", "--users", "40", "--items", "200", "--days", "3", "--quiet"]
    main([*common, "--out", str(tmp_path / "session"), "--world", "session"])
    main([*common, "--out", str(tmp_path / "tuned"), "--world", "session", "--scene-interest", "0"])
    main([*common, "--out", str(tmp_path / "base")])
    session = (tmp_path / "session" / "events.csv").read_bytes()
    assert session != (tmp_path / "tuned" / "events.csv").read_bytes()
    assert session != (tmp_path / "base" / "events.csv").read_bytes()
    with pytest.raises(SystemExit, match="--time-interest must be between 0 and 1"):
        main([*common, "--out", str(tmp_path / "bad"), "--time-interest", "1.5"])
    assert not (tmp_path / "bad").exists()
