"""Item metadata in the bundle: `nsprecall train` writes every vocabulary item's catalog row,
publish ships it, ``LoadedBundle`` serves it, and a bundle whose ``item_meta.json`` disagrees
with its vocabulary or manifest is refused while the served one stays."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fakes import write_real_bundle
from test_bundle_faults import Fault, _truncate, refused_while_the_served_one_stays, unlist

from index.bundle import read_manifest
from index.item_meta import ITEM_META_FILE, ItemInfo, ItemMeta
from index.vocab import Vocabulary
from model_export.catalog_meta import catalog_meta
from service.runtime import LoadedBundle

OWN_COLUMNS = {"item_id", "category", "price", "title", "first_day"}


def _as_written(value: str) -> str:
    """A CSV cell as the metadata holds it: an integral number without the ".0" pandas wrote."""
    head, dot, zero = value.partition(".")
    return head if dot and zero == "0" and head.lstrip("-").isdigit() else value


def catalog_rows(data_dir: Path) -> dict[str, ItemInfo]:
    """Each catalog row as ``ItemInfo``, read with the csv module (not the code under test)."""
    with (data_dir / "catalog.csv").open(newline="") as f:
        return {
            row["item_id"]: ItemInfo(
                title=row.get("title") or "",
                category=row["category"],
                price=float(row["price"]) if row["price"] else None,
                attributes={k: _as_written(v) for k, v in row.items() if k not in OWN_COLUMNS and v},
            )
            for row in csv.DictReader(f)
        }


def test_train_writes_every_items_catalog_row_and_the_bundle_serves_it(
    search_world: Path, search_trained: Path, search_bundle_root: Path
) -> None:
    expected = catalog_rows(search_world)
    directory = search_bundle_root / "1"
    manifest = read_manifest(directory)
    header = next(csv.reader((search_world / "catalog.csv").open()))
    assert manifest.item_meta is not None
    assert manifest.item_meta.attributes == [c for c in header if c not in OWN_COLUMNS]
    assert ITEM_META_FILE in manifest.files
    assert (search_trained / ITEM_META_FILE).read_bytes() == (directory / ITEM_META_FILE).read_bytes()

    bundle = LoadedBundle.load(directory)
    assert bundle.meta is not None
    ids = bundle.vocab.item_ids.tolist()
    assert len(ids) == len(expected)
    assert {item: bundle.meta.of(label) for label, item in enumerate(ids)} == expected
    assert bundle.meta.of(len(ids)) is None
    assert any(info.attributes for info in expected.values())  # the comparison covers attributes


def test_catalog_meta_writes_numbers_as_text_and_leaves_out_missing_values(tmp_path: Path) -> None:
    text = (
        "item_id,category,price,title,size,brand,first_day\n"
        "a,shoes,19.5,Red <b>runner</b>,42,acme,0\n"
        "b,shoes,,,,,3\n"
        "c,hats,7,Sun hat,42.5,zed,1\n"
    )
    catalog = pd.read_csv(io.StringIO(text), dtype={"item_id": str, "category": str})
    vocab = Vocabulary.build(["a", "b", "old"], ["shoes", "shoes", "bags"], [19.5, 1.0, 3.0], ["s"])
    vocab = vocab.extended(["c"], ["hats"], [7.0], ["s"])  # "old" is no longer in the catalog
    meta = catalog_meta(catalog, vocab)
    assert [meta.of(label) for label in range(4)] == [
        ItemInfo("Red <b>runner</b>", "shoes", 19.5, {"size": "42", "brand": "acme"}),
        ItemInfo("", "shoes", None, {}),
        ItemInfo("", "bags", None, {}),  # the vocabulary's category, nothing else
        ItemInfo("Sun hat", "hats", 7.0, {"size": "42.5", "brand": "zed"}),
    ]
    meta.save(tmp_path / ITEM_META_FILE, vocab.item_ids.tolist())
    loaded = ItemMeta.load(tmp_path / ITEM_META_FILE, vocab.item_ids.tolist(), ["size", "brand"])
    assert [loaded.of(label) for label in range(4)] == [meta.of(label) for label in range(4)]


def test_a_bundle_without_item_meta_loads_and_has_none(tmp_path: Path) -> None:
    bundle = LoadedBundle.load(write_real_bundle(tmp_path, 1))
    assert bundle.manifest.item_meta is None and bundle.meta is None


def _edit(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    """A ``staged`` fault: ``item_meta.json`` changed by ``change`` before the checksums."""

    def stage(directory: Path) -> None:
        path = directory / ITEM_META_FILE
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return stage


def _rename_item(data: dict[str, Any]) -> None:
    data["item_ids"][3] = "not-this-bundles-item"


def _drop_last_item(data: dict[str, Any]) -> None:
    columns = [data["item_ids"], data["titles"], data["categories"], data["prices"]]
    for column in [*columns, *data["attributes"].values()]:
        column.pop()


def _price_as_text(data: dict[str, Any]) -> None:
    data["prices"][0] = "12.50"


FAULTS = [
    Fault(
        "item metadata of another vocabulary",
        r"item_meta\.json: item 3 is 'not-this-bundles-item', the bundle's id map has ",
        staged=_edit(_rename_item),
    ),
    Fault(
        "item metadata missing an item",
        r"item_meta\.json: (\d+) items, the bundle has (?!\1)\d+",
        staged=_edit(_drop_last_item),
    ),
    Fault("a price that is not a number", r"item_meta\.json: prices must be", staged=_edit(_price_as_text)),
    Fault("unreadable item metadata", r"unreadable item_meta\.json", staged=_truncate(ITEM_META_FILE)),
    Fault(
        "attributes other than the manifest's",
        r"item_meta\.json: attributes \[.*\], the manifest lists \['nope'\]",
        manifest={"item_meta": {"attributes": ["nope"]}},
    ),
    Fault(
        "item metadata announced without the file",
        r"manifest says the bundle has item metadata but does not list item_meta\.json",
        staged=unlist(ITEM_META_FILE),
    ),
    Fault(
        "item metadata damaged after publishing",
        r"checksum mismatch for item_meta\.json",
        damage=_truncate(ITEM_META_FILE),
    ),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
async def test_a_bundle_with_bad_item_meta_is_refused_and_the_served_one_stays(
    fault: Fault, bundle_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = bundle_root / "1"
    assert read_manifest(good).item_meta is not None  # the faults start from a bundle that has it
    await refused_while_the_served_one_stays(good, tmp_path, fault, caplog)
