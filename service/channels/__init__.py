"""The recall channels (``base`` has the interface). ``CHANNEL_NAMES`` is the API's vocabulary:
a request naming any other channel is a 422."""

from __future__ import annotations

from typing import Literal

ChannelName = Literal["nsp", "history", "i2i", "popular", "bm25", "dense", "sid", "gram"]
CHANNEL_NAMES: tuple[ChannelName, ...] = ("nsp", "history", "i2i", "popular", "bm25", "dense", "sid", "gram")
# The channels that read the request's query; they answer nothing for a request without one.
TEXT_CHANNELS: tuple[ChannelName, ...] = ("bm25", "dense", "sid", "gram")
