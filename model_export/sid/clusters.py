"""The SID's fourth level: a group suffix that caps how many items share one SID.

An RQ-VAE cluster ``(c1, c2, c3)`` may hold thousands of items, and the generator can only name
the cluster, so the recall channel would have to expand all of them. ``split_clusters`` cuts
each cluster into ``G = min(ceil(c / t_max), g_max)`` groups of near-equal size by a stable
per-item key (never at random, so the same catalog always gets the same SIDs); every group then
holds at most ``t_max`` items unless ``g_max`` binds (more than ``t_max * g_max`` items: groups
of up to ``ceil(c / g_max)``). ``place_new_items`` adds items published later without moving
any existing item's SID.
"""

from __future__ import annotations

import numpy as np

__all__ = ["place_new_items", "split_clusters"]


def check_limits(t_max: int, g_max: int) -> None:
    if t_max < 1 or g_max < 1:
        raise ValueError(f"t_max and g_max must be positive, got {t_max}, {g_max}")


def split_clusters(codes: np.ndarray, order_key: np.ndarray, t_max: int, g_max: int) -> np.ndarray:
    """(N, 3) int64 codes and (N,) int64 stable keys (e.g. a stable hash of the item id) → (N,)
    int64 group suffix in ``[0, g_max)``.

    Within a cluster of ``c`` items, sorted by key (ties by row), item of rank ``k`` goes to
    group ``k * G // c``: contiguous runs whose sizes differ by at most one. Deterministic and
    independent of row order up to equal keys. Raises ``ValueError`` on bad shapes or limits.
    """
    codes = np.asarray(codes, dtype=np.int64)
    order_key = np.asarray(order_key, dtype=np.int64)
    check_limits(t_max, g_max)
    if codes.ndim != 2 or codes.shape[1] != 3 or order_key.shape != (len(codes),):
        raise ValueError(f"need codes (N, 3) and order_key (N,), got {codes.shape}, {order_key.shape}")
    groups = np.zeros(len(codes), dtype=np.int64)
    if len(codes) == 0:
        return groups
    _, cluster, sizes = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    cluster = cluster.reshape(-1)
    order = np.lexsort((np.arange(len(codes)), order_key, cluster))  # by cluster, key, row
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # first position of each cluster in order
    rank = np.arange(len(codes)) - starts[cluster[order]]  # (N,) rank within its cluster
    c = sizes[cluster[order]]
    n_groups = np.minimum(-(-c // t_max), g_max)  # ceil(c / t_max), capped
    groups[order] = rank * n_groups // c
    return groups


def place_new_items(
    existing_sids: np.ndarray, new_codes: np.ndarray, new_keys: np.ndarray, t_max: int, g_max: int
) -> np.ndarray:
    """Groups for items published after the split, leaving ``existing_sids`` (M, 4) as they are.

    New items (``new_codes`` (N, 3), ``new_keys`` (N,) int64) are placed one at a time in key
    order (ties by row), so the result does not depend on their row order. A cluster's open
    groups are ``0 .. max existing g`` (none for a new cluster); an item goes to the least
    filled open group below ``t_max`` (ties: lowest g), else opens the next group index while
    it is below ``g_max``, else goes to the least filled group. Returns (N,) int64 groups.
    """
    existing_sids = np.asarray(existing_sids, dtype=np.int64).reshape(-1, 4)
    new_codes = np.asarray(new_codes, dtype=np.int64)
    new_keys = np.asarray(new_keys, dtype=np.int64)
    check_limits(t_max, g_max)
    if new_codes.ndim != 2 or new_codes.shape[1] != 3 or new_keys.shape != (len(new_codes),):
        raise ValueError(f"need new_codes (N, 3) and new_keys (N,), got {new_codes.shape}, {new_keys.shape}")
    if len(existing_sids) and (existing_sids[:, 3].min() < 0 or existing_sids[:, 3].max() >= g_max):
        raise ValueError(f"existing group suffixes outside [0, {g_max})")
    fill: dict[tuple[int, ...], list[int]] = {}  # cluster -> items per open group
    for *cluster, g in existing_sids.tolist():
        counts = fill.setdefault(tuple(cluster), [])
        counts.extend([0] * (g + 1 - len(counts)))
        counts[g] += 1
    groups = np.zeros(len(new_codes), dtype=np.int64)
    for row in np.lexsort((np.arange(len(new_codes)), new_keys)).tolist():
        counts = fill.setdefault(tuple(new_codes[row].tolist()), [])
        below = [g for g, n in enumerate(counts) if n < t_max]
        if below:
            g = min(below, key=counts.__getitem__)  # min keeps the first (lowest g) of ties
        elif len(counts) < g_max:
            g = len(counts)
            counts.append(0)
        else:
            g = min(range(len(counts)), key=counts.__getitem__)
        counts[g] += 1
        groups[row] = g
    return groups
