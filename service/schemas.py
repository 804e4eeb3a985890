"""HTTP request and response bodies of the v1 API (design §3.2), with their limits.

The limits here are the API's hard ceilings; ``Settings`` may lower k, batch and exclusion
limits per deployment (checked in the routes). Every string is bounded. Unknown fields are
rejected, so a typo in a field name is a 422 rather than a silently ignored option, and values
are not coerced (``"k": "5"`` or ``"exclude_seen": "no"`` is a 422, not a guess).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from index.features import Event
from index.text import MAX_QUERY_CHARS, normalize_text
from service.channels import ChannelName
from service.registry import Trigger
from service.settings import API_MAX_EVENTS_PER_BATCH, API_MAX_EXCLUDE_IDS, API_MAX_K


def _integral(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# JSON Schema's "integer" includes 1.0; strict validation still refuses "1", 1.5 and true. Put it
# after an int's constraints (Annotated[int, Field(ge=…), INTEGRAL]), or the OpenAPI schema loses them.
INTEGRAL = BeforeValidator(_integral)
UserId = Annotated[str, Field(min_length=1, max_length=128)]
ItemId = Annotated[str, Field(min_length=1, max_length=128)]
Scene = Annotated[str, Field(min_length=1, max_length=64)]
RequestId = Annotated[str, Field(min_length=1, max_length=128)]
Action = Literal["exposure", "click", "cart", "pay"]
Source = Literal["model", "cache", "fallback"]
Include = Literal["meta"]  # what an answer may add to each item on request
Scenario = Literal["recommendation", "search"]
# 2100-01-01T00:00:00Z. A later event time is a unit mistake (ms or µs), and the encoder's
# calendar features cannot represent years past 9999 at all.
MAX_TS = 4_102_444_800
# The characters ``normalize_text`` drops or folds to nothing (whitespace, Cc, Cf), for the
# OpenAPI schema only: a query must hold one character outside them, so that the schema refuses
# what the validator refuses (the API fuzz run holds the two to each other, and
# tests/test_text.py holds this list to ``normalize_text`` over every code point).
BLANK_CHARS = (
    r"\u0000-\u0020\u007f-\u00a0\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u1680"
    r"\u180e\u2000-\u200f\u2028-\u202f\u205f-\u2064\u2066-\u206f\u3000\ufeff\ufff9-\ufffb"
    r"\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    r"\U000e0001\U000e0020-\U000e007f"
)


def _query_text(value: str) -> str:
    text = normalize_text(value)
    if not text:
        raise ValueError(
            "query is empty after normalisation (whitespace, control and format characters are "
            "dropped); omit it or send null for a recommendation request"
        )
    if len(text) > MAX_QUERY_CHARS:
        raise ValueError(f"query is {len(text)} characters after normalisation; at most {MAX_QUERY_CHARS}")
    return text


# Search text as sent, then normalised (``index.text``): 1..512 characters both as sent and after
# normalisation. The raw bound is the normalised one because the OpenAPI schema can only state a
# raw length, and every string it calls valid must be accepted.
QueryText = Annotated[
    str,
    Field(min_length=1, max_length=MAX_QUERY_CHARS, json_schema_extra={"pattern": f"[^{BLANK_CHARS}]"}),
    AfterValidator(_query_text),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RecallRequest(_Request):
    user_id: UserId
    k: Annotated[int, Field(ge=1, le=API_MAX_K), INTEGRAL] | None = Field(
        default=None,
        description="Items to return (1..1000); default: the service's default_k (100).",
    )
    scene: Scene = Field(
        default="default", description="Scene of the request; picks the query context and fallback."
    )
    exclude_seen: bool | None = Field(
        default=None,
        description="Drop items in the user's recent history (any action); default: the "
        "deployment's exclude_seen setting (true unless configured otherwise).",
    )
    exclude_item_ids: list[ItemId] = Field(
        default_factory=list, max_length=API_MAX_EXCLUDE_IDS, description="Items never to return (≤ 1000)."
    )
    query: QueryText | None = Field(
        default=None,
        description="Search text (1..512 characters, as sent and after normalisation: NFKC, lower "
        "case, control and format characters dropped, whitespace collapsed). A query makes the "
        "request a search request: the text channels read it and the bundle's search fusion merges "
        "the lists. Null or absent: a recommendation request.",
    )
    channels: list[ChannelName] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description="Run only these channels (default: every channel the bundle carries).",
    )
    as_of: Annotated[int, Field(gt=0, le=MAX_TS), INTEGRAL] | None = Field(
        default=None,
        description="Unix seconds the request is answered as of (default: now): the query "
        "context's time, and only events before it count, so that logs can be replayed.",
    )
    include: list[Include] = Field(
        default_factory=list,
        max_length=4,
        description='Extras on each item: "meta" adds the item\'s title, category, price and '
        "attributes from the served bundle (absent for an item it has none for). Default: none.",
    )


class EventIn(_Request):
    user_id: UserId
    item_id: ItemId
    action: Action
    scene: Scene
    ts: Annotated[int, Field(gt=0, le=MAX_TS), INTEGRAL] = Field(
        description="Unix time in seconds (before 2100)."
    )
    request_id: RequestId
    query: QueryText | None = Field(
        default=None,
        description="Search text of the event's request, normalised as the recall query is; null "
        "or absent outside search.",
    )

    def to_event(self) -> Event:
        return Event(
            self.user_id, self.item_id, self.ts, self.action, self.scene, self.request_id, self.query or ""
        )


class EventsRequest(_Request):
    events: list[EventIn] = Field(min_length=1, max_length=API_MAX_EVENTS_PER_BATCH)


class ItemMetaOut(BaseModel):
    """What the served bundle's catalog says about an item (``index.item_meta``)."""

    title: str = Field(description='The catalog title; "" when it has none.')
    category: str
    price: float | None
    attributes: dict[str, str] = Field(description="The item's other catalog columns that have a value.")


def _absent(value: object) -> bool:
    return value is None


class ChannelHit(BaseModel):
    rank: int = Field(description="Rank of the item in this channel's list, from 1.")
    score: float = Field(description="The channel's own score for the item.")


class RecalledItem(BaseModel):
    item_id: str
    score: float = Field(description="Merged score; the list is sorted by it, best first.")
    channels: dict[str, ChannelHit] = Field(
        default_factory=dict,
        description="The channels that proposed the item; empty for padding that fills the answer "
        "up to k from the popularity list.",
    )
    # Left out of the body unless asked for (``include``), so answers read as before.
    meta: ItemMetaOut | None = Field(
        default=None, exclude_if=_absent, description='With include ["meta"]: the item\'s metadata.'
    )


class RecallResponse(BaseModel):
    user_id: str
    bundle_version: int
    source: Source
    degraded: bool
    items: list[RecalledItem]
    scenario: Scenario = Field(
        default="recommendation",
        description="search: the request carried a query; recommendation: it did not.",
    )
    answered_channels: list[str] = Field(
        default_factory=list,
        description="Channels whose lists went into the merge, in the order they ran; empty for a "
        "fallback or cache answer.",
    )
    missing_channels: list[str] = Field(
        default_factory=list,
        description="Channels that failed or timed out; the answer was merged without them.",
    )


class EventsAccepted(BaseModel):
    accepted: int


class SessionItem(BaseModel):
    item_id: str
    action: str
    meta: ItemMetaOut | None = Field(
        default=None, exclude_if=_absent, description="With include=meta: the item's metadata."
    )


class SessionOut(BaseModel):
    request_id: str
    ts: int
    scene: str
    items: list[SessionItem]
    # Left out of the body when None, so a session outside search reads as it did before search.
    query: str | None = Field(
        default=None,
        exclude_if=_absent,
        description="The session's search text, normalised; absent outside search.",
    )


class SessionsResponse(BaseModel):
    user_id: str
    sessions: list[SessionOut] = Field(description="Most recent session first.")


class BundleSummary(BaseModel):
    version: int
    pinned: bool = Field(description="An operator pinned this version; the watcher does not replace it.")
    parent_version: int | None
    created_at: str
    training: dict[str, object]
    item_count: int
    embedding_dim: int
    hnsw: dict[str, object]
    metrics: dict[str, float]
    channels: dict[str, object] | None = Field(
        description="The channels' settings and fusion weights fitted on validation; null: a bundle "
        "from before the merge (nsp channel alone)."
    )
    text: dict[str, object] | None = Field(
        default=None,
        description="The bundle's text channels (bm25, dense) and the query pieces they read; null: "
        "a bundle without text channels (search requests are answered by the others).",
    )
    query_pieces: int = Field(
        default=0, description="Query pieces the nsp encoder reads on a context token; 0: it reads none."
    )


class PinRequest(_Request):
    version: Annotated[int, Field(gt=0), INTEGRAL] = Field(
        description="Bundle version to serve until unpinned."
    )


class FailedVersionOut(BaseModel):
    version: int
    attempts: int = Field(description="Failed loads in a row.")
    retry_in_s: float | None = Field(
        description="Seconds until the watcher tries it again; null: never (mislabelled directory)."
    )


class SwapOut(BaseModel):
    at: float = Field(description="Unix seconds.")
    version: int = Field(description="The version swapped in, or the one that failed to load.")
    previous_version: int | None = Field(description="The version served when it happened.")
    outcome: Literal["swapped", "failed"]
    trigger: Trigger = Field(
        description="start: the first load; watcher: a poll (a pin another process shared "
        "included); the others: that admin action."
    )
    reason: str | None = Field(description="Why the load failed; null for a swap.")


class ServingState(BaseModel):
    """What an instance serves and why, for operators."""

    version: int | None = Field(description="Bundle version served now; null before the first load.")
    pinned: bool = Field(description="True while an operator's pin or rollback holds the version.")
    previous_version: int | None = Field(description="Version served before; the first rollback target.")
    versions: list[int] = Field(description="Complete bundle versions under the bundle root, ascending.")
    failed: list[FailedVersionOut] = Field(description="Versions that failed their last load.")
    swaps: list[SwapOut] = Field(
        default_factory=list, description="This instance's recent swaps and failed loads, newest first."
    )


class NeighbourOut(BaseModel):
    item_id: str
    weight: float = Field(description="The co-occurrence weight w(item, neighbour).")
    meta: ItemMetaOut | None


class CodeOut(BaseModel):
    code: str = Field(description='The attribute values, "attribute=value + attribute=value".')
    granularity: Literal["coarse", "medium", "fine"]
    logprob: float = Field(description="The product side's log-probability of the code for the item.")


class ItemOut(BaseModel):
    """One item as the served bundle knows it."""

    item_id: str
    bundle_version: int
    meta: ItemMetaOut | None = Field(description="null: the bundle carries no item metadata.")
    neighbours: list[NeighbourOut] = Field(
        description="Its i2i neighbours, strongest first; empty without an i2i table."
    )
    sid: list[int] | None = Field(
        description="Its semantic ID (one value per level); null without the sid channel or when "
        "the item has none."
    )
    codes: list[CodeOut] | None = Field(
        description="The gram codes it is indexed under, likeliest first; null without the gram channel."
    )


class Problem(BaseModel):
    """Body of every error response."""

    error: str
    detail: object
