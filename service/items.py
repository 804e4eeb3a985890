"""What the API says about items: their metadata on request, and ``GET /v1/items/{item_id}``.

Everything comes from one bundle handle (the metadata, the i2i table, the SID table and the
gram code index of the same training round), so an answer never mixes two bundles. An item the
bundle does not know (a new item seen online before the next round) has no metadata: ``meta``
is left out of a recall or session item and the item view answers 404 ``unknown_item``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from index.gram_score import GRANULARITIES, granularity_of
from index.gram_search import GramSearch
from service.dependencies import BundleDep
from service.errors import UnknownItem
from service.runtime import Bundle
from service.schemas import (
    CodeOut,
    ItemMetaOut,
    ItemOut,
    NeighbourOut,
    Problem,
    RecallResponse,
    SessionOut,
)

router = APIRouter(responses={code: {"model": Problem} for code in (404, 422, 503)})


@router.get("/v1/items/{item_id}")
async def item(
    item_id: Annotated[str, PathParam(min_length=1, max_length=128)],
    bundle: BundleDep,
    neighbours: Annotated[int, Query(ge=1, le=100, description="i2i neighbours to list.")] = 20,
) -> ItemOut:
    # The code lookup scans the code index's postings: off the event loop.
    return await asyncio.to_thread(item_view, bundle, item_id, neighbours)


def item_view(bundle: Bundle, item_id: str, neighbours: int) -> ItemOut:
    """The item's metadata, its strongest ``neighbours`` i2i neighbours, its SID and gram codes.
    Raises ``UnknownItem`` when the bundle's vocabulary does not hold it."""
    label = bundle.vocab.item_index(item_id)
    if label is None:
        raise UnknownItem(f"item {item_id!r} is not in the catalog of bundle {bundle.version}")
    text = bundle.text
    sid = text.sid if text is not None else None
    sid_row = int(sid.table.item_sid[label]) if sid is not None else -1
    return ItemOut(
        item_id=item_id,
        bundle_version=bundle.version,
        meta=meta_of(bundle, label),
        neighbours=_neighbours(bundle, label, neighbours),
        sid=sid.table.codes[sid_row].tolist() if sid is not None and sid_row >= 0 else None,
        codes=_codes(text.gram, label) if text is not None and text.gram is not None else None,
    )


def meta_of(bundle: Bundle, label: int | None) -> ItemMetaOut | None:
    """The metadata of vocabulary ``label``; None without metadata or for an unknown item."""
    info = bundle.meta.of(label) if bundle.meta is not None and label is not None else None
    if info is None:
        return None
    return ItemMetaOut(title=info.title, category=info.category, price=info.price, attributes=info.attributes)


def recall_with_meta(response: RecallResponse, bundle: Bundle) -> RecallResponse:
    """``response`` with each item's ``meta`` (the answer's own bundle: the one it came from)."""
    lookup = bundle.vocab.item_index
    items = [
        item.model_copy(update={"meta": meta_of(bundle, lookup(item.item_id))}) for item in response.items
    ]
    return response.model_copy(update={"items": items})


def sessions_with_meta(sessions: Sequence[SessionOut], bundle: Bundle) -> list[SessionOut]:
    lookup = bundle.vocab.item_index
    return [
        session.model_copy(
            update={
                "items": [
                    item.model_copy(update={"meta": meta_of(bundle, lookup(item.item_id))})
                    for item in session.items
                ]
            }
        )
        for session in sessions
    ]


def _neighbours(bundle: Bundle, label: int, limit: int) -> list[NeighbourOut]:
    table = bundle.i2i
    if table is None:
        return []
    start = int(table.indptr[label])
    end = min(int(table.indptr[label + 1]), start + limit)
    ids = bundle.vocab.item_ids
    return [
        NeighbourOut(item_id=str(ids[other]), weight=float(weight), meta=meta_of(bundle, int(other)))
        for other, weight in zip(
            table.indices[start:end].tolist(), table.weights[start:end].tolist(), strict=True
        )
    ]


def _codes(gram: GramSearch, label: int) -> list[CodeOut]:
    """Every code whose postings hold ``label``, with the product side's log-probability of
    the whole code (its token log-probs summed), likeliest first."""
    index = gram.index
    postings = np.flatnonzero(index.items == label)
    rows = np.searchsorted(index.offsets, postings, side="right") - 1
    codes = index.table.codes[rows]  # (K, 7)
    logprobs = index.token_logprobs[postings].sum(axis=1)  # 0 at PAD
    granularity = granularity_of(codes)
    out = [
        CodeOut.model_validate(
            {
                "code": " + ".join(f"{attribute}={value}" for attribute, value in gram.vocab.decode(row)),
                "granularity": GRANULARITIES[g],
                "logprob": logprob,
            }
        )
        for row, g, logprob in zip(codes, granularity.tolist(), logprobs.tolist(), strict=True)
    ]
    return sorted(out, key=lambda code: -code.logprob)
