"""The session store's Redis layout: one record per request session, and a seen-items set.

Per user, three keys share the user's hash tag (``service.store.user_key``), so one script or
one pipelined read reaches all of them on a standalone Redis and on a cluster alike:

``sessions``
    a list of session records, the most recently written first. A record is a JSON array
    without its brackets: the request id, then the session's events in arrival order, each
    ``[item_id, ts, action, scene(, query)]`` — ``"r7",["i1",17,"exposure","feed"],[…]``.
    Wrapping any number of records as ``[[…],[…]]`` makes one JSON document, so a read decodes
    a user's window in one ``orjson.loads``; a write appends to a record with a string
    concatenation, never decoding it.
``seen``
    a sorted set: every stored item id scored by the last time the user met it.
``events``
    the number of events the ``sessions`` records hold (what the cap counts).

A read asks for the newest W records (``LRANGE 0 W-1``) and, when the request excludes seen
items, the whole ``seen`` set — one round trip whose size does not grow with the history beyond
W sessions, except for the seen ids themselves (one short string per distinct item).

Before this layout (format 1), each event was its own JSON array in one list per user at
``LEGACY_KEY``. Such lists are still read (in the same round trip, merged with the records
written since) until ``nsprecall store-migrate`` rewrites them as records.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from index.features import Event

SESSIONS_KEY = "sessions"
SEEN_KEY = "seen"
COUNT_KEY = "count"
LEGACY_KEY = "events"  # format 1: one JSON array per event, newest first

# How many of the newest records a write searches for the session its events belong to; events
# of an older session (a click arriving after this many newer requests) start a record of their
# own, which reads merge with the first one by request id.
MERGE_SCAN = 8


def event_json(event: Event) -> bytes:
    fields: list[object] = [event.item_id, event.ts, event.action, event.scene]
    if event.query:  # most events carry none
        fields.append(event.query)
    return orjson.dumps(fields)


def session_groups(events: Sequence[Event]) -> dict[str, list[Event]]:
    """One user's events by request id, in the order the requests first appear."""
    groups: dict[str, list[Event]] = {}
    for event in events:
        groups.setdefault(event.request_id, []).append(event)
    return groups


def record_prefix(request_id: str) -> bytes:
    """The start of every record of ``request_id``: its JSON string and a comma."""
    return orjson.dumps(request_id) + b","


def script_args(groups: dict[str, list[Event]]) -> list[bytes | int]:
    """``APPEND_SCRIPT``'s ARGV after the cap and TTL: the group count, then per group its
    record prefix, its events joined as a record's tail and how many they are, then the
    (ts, item id) pairs of the seen set."""
    args: list[bytes | int] = [len(groups)]
    seen: list[bytes | int] = []
    for request_id, group in groups.items():
        args += [record_prefix(request_id), b",".join(event_json(e) for e in group), len(group)]
        for event in group:
            seen += [event.ts, event.item_id.encode()]
    return args + seen


def decode_records(user_id: str, records: Sequence[bytes | str]) -> list[Event]:
    """The events of ``records`` (as LRANGE returns them); a record that does not parse is
    skipped (the caller logs how many)."""
    if not records:
        return []
    raw = [r.encode() if isinstance(r, str) else r for r in records]
    try:
        decoded = orjson.loads(b"[[" + b"],[".join(raw) + b"]]")
    except orjson.JSONDecodeError:  # one bad record: decode them one by one, keeping the good
        decoded = []
        for record in raw:
            try:
                decoded.append(orjson.loads(b"[" + record + b"]"))
            except orjson.JSONDecodeError:
                continue
    events = []
    for record in decoded:
        try:
            request_id = str(record[0])
            for fields in record[1:]:
                query = str(fields[4]) if len(fields) == 5 else ""
                events.append(
                    Event(
                        user_id,
                        str(fields[0]),
                        int(fields[1]),
                        str(fields[2]),
                        str(fields[3]),
                        request_id,
                        query,
                    )
                )
        except (IndexError, TypeError, ValueError):
            continue
    return events


def decode_legacy(user_id: str, value: bytes | str) -> Event | None:
    """One format-1 value, ``[item_id, ts, action, scene, request_id(, query)]``."""
    try:
        fields = orjson.loads(value)
        if not isinstance(fields, list) or len(fields) not in (5, 6):
            return None
        item_id, ts, action, scene, request_id = fields[:5]
        query = str(fields[5]) if len(fields) == 6 else ""
        return Event(user_id, str(item_id), int(ts), str(action), str(scene), str(request_id), query)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None


# The end of both scripts: the cap (whole oldest records first; a lone record over the cap keeps
# its newest events, under its own prefix ARGV[4]), the seen set's cap, and the TTL of every key.
_CAP_AND_EXPIRE = """
local count = redis.call('INCRBY', KEYS[3], added)
while count > max_events do
  if redis.call('LLEN', KEYS[1]) > 1 then
    local record = redis.call('RPOP', KEYS[1])
    count = count - (#cjson.decode('[' .. record .. ']') - 1)
  else
    local record = redis.call('LINDEX', KEYS[1], 0)
    local decoded = cjson.decode('[' .. record .. ']')
    local kept = {}
    for i = math.max(2, #decoded - max_events + 1), #decoded do
      table.insert(kept, cjson.encode(decoded[i]))
    end
    redis.call('LSET', KEYS[1], 0, ARGV[4] .. table.concat(kept, ','))
    count = #kept
  end
end
redis.call('SET', KEYS[3], count)
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(max_events + 1))
for i = 1, 3 do
  redis.call('EXPIRE', KEYS[i], ttl)
end
"""

_READ_ARGS = """
local max_events = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local groups = tonumber(ARGV[3])
local added = 0
local first_seen = 4 + 3 * groups
if #ARGV >= first_seen then
  redis.call('ZADD', KEYS[2], 'GT', unpack(ARGV, first_seen))
end
"""

# KEYS: sessions, seen, count. ARGV: max events, TTL seconds, then ``script_args``. Appends each
# group to its session's record among the newest MERGE_SCAN (or pushes a new record as the
# newest), adds the items to the seen set (ZADD GT keeps the latest time), then the cap and TTL.
APPEND_SCRIPT = (
    _READ_ARGS
    + """
for g = 0, groups - 1 do
  local prefix = ARGV[4 + 3 * g]
  local tail = ARGV[5 + 3 * g]
  added = added + tonumber(ARGV[6 + 3 * g])
  local head = redis.call('LRANGE', KEYS[1], 0, """
    + str(MERGE_SCAN - 1)
    + """)
  local merged = false
  for i, record in ipairs(head) do
    if string.sub(record, 1, #prefix) == prefix then
      redis.call('LSET', KEYS[1], i - 1, record .. ',' .. tail)
      merged = true
      break
    end
  end
  if not merged then
    redis.call('LPUSH', KEYS[1], prefix .. tail)
  end
end
"""
    + _CAP_AND_EXPIRE
    + "return added\n"
)

# KEYS: sessions, seen, count, the format-1 list. ARGV as APPEND_SCRIPT's, the groups newest
# first. The groups become records *behind* every record written since (they are older), the
# format-1 list is deleted, all in one step: a reader sees the user before or after, never both.
MIGRATE_SCRIPT = (
    _READ_ARGS
    + """
for g = 0, groups - 1 do
  redis.call('RPUSH', KEYS[1], ARGV[4 + 3 * g] .. ARGV[5 + 3 * g])
  added = added + tonumber(ARGV[6 + 3 * g])
end
redis.call('DEL', KEYS[4])
"""
    + _CAP_AND_EXPIRE
    + "return added\n"
)
