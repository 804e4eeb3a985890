"""HTTP request and response bodies of the v1 API (design §3.2), with their limits.

The limits here are the API's hard ceilings; ``Settings`` may lower k, batch and exclusion
limits per deployment (checked in the routes). Every string is bounded. Unknown fields are
rejected, so a typo in a field name is a 422 rather than a silently ignored option, and values
are not coerced (``"k": "5"`` or ``"exclude_seen": "no"`` is a 422, not a guess).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from index.features import Event
from service.channels import ChannelName
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
# 2100-01-01T00:00:00Z. A later event time is a unit mistake (ms or µs), and the encoder's
# calendar features cannot represent years past 9999 at all.
MAX_TS = 4_102_444_800


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
    query: str | None = Field(
        default=None,
        max_length=512,
        description="Search query text; reserved for the search channels, ignored by v1.",
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


class EventIn(_Request):
    user_id: UserId
    item_id: ItemId
    action: Action
    scene: Scene
    ts: Annotated[int, Field(gt=0, le=MAX_TS), INTEGRAL] = Field(
        description="Unix time in seconds (before 2100)."
    )
    request_id: RequestId

    def to_event(self) -> Event:
        return Event(self.user_id, self.item_id, self.ts, self.action, self.scene, self.request_id)


class EventsRequest(_Request):
    events: list[EventIn] = Field(min_length=1, max_length=API_MAX_EVENTS_PER_BATCH)


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


class RecallResponse(BaseModel):
    user_id: str
    bundle_version: int
    source: Source
    degraded: bool
    items: list[RecalledItem]
    missing_channels: list[str] = Field(
        default_factory=list,
        description="Channels that failed or timed out; the answer was merged without them.",
    )


class EventsAccepted(BaseModel):
    accepted: int


class SessionItem(BaseModel):
    item_id: str
    action: str


class SessionOut(BaseModel):
    request_id: str
    ts: int
    scene: str
    items: list[SessionItem]


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


class ServingState(BaseModel):
    """What an instance serves and why, for operators."""

    version: int | None = Field(description="Bundle version served now; null before the first load.")
    pinned: bool = Field(description="True while an operator's pin or rollback holds the version.")
    previous_version: int | None = Field(description="Version served before; the first rollback target.")
    versions: list[int] = Field(description="Complete bundle versions under the bundle root, ascending.")
    failed: list[FailedVersionOut] = Field(description="Versions that failed their last load.")


class Problem(BaseModel):
    """Body of every error response."""

    error: str
    detail: object
