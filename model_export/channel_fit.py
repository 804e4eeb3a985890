"""Fit the classic channels and the merge on the validation split, and judge them.

``fit_channels`` runs at train time, after the NSP epoch is selected, on the same validation
cases (never test):

1. the i2i co-occurrence table is built from the training period (``index.i2i``);
2. the history channel's action weights and half-life, and the i2i channel's recency
   (recent sessions, decay), are grid-searched for NDCG@100 of each channel alone (its order
   is what the merge reads);
3. the merge is fitted per exclusion policy: for each method (weighted RRF with each constant
   of ``RRF_KS``, normalised score sum) the channel weights are found by coordinate ascent
   over ``WEIGHT_GRID`` maximising the mean of Recall@K over ``KS``, each K judged as a k = K
   request (each channel's list at depth max(K, min_depth), the merge cut to K and padded from
   popularity as the service pads), starting from
   the best of equal weights and each channel alone; the variant with the better objective is
   served. Everything measured goes into ``ChannelsSpec.validation``;
4. when the log has search sessions, the merge of search requests is fitted the same way, apart,
   on the validation search cases (at most ``MAX_SEARCH_FIT_CASES``, a seeded sample), over
   every channel including the text ones (``index.fusion.fusion_key``), for the mean Recall@K
   over ``SEARCH_KS``.

``judge`` reports each channel alone, the merge, the oracle union of the lists the merge
receives (the ceiling it can reach), each channel's unique hits among them and the merge's
loss without each channel (leave-one-out).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from index.bundle import ChannelsSpec
from index.features import CLICK
from index.fusion import EMPTY, RRF_K, SEEN, UNSEEN, FusionMethod, FusionParams, fusion_key
from index.history import HistoryParams
from index.i2i import I2IParams, ItemToItem
from model_export.channels import (
    CaseLists,
    ChannelRanker,
    OfflineChannels,
    TextSearch,
    cut,
    merged_rows,
    pad_rows,
)
from model_export.data import Dataset, EvalCase
from model_export.metrics import hit_metrics
from model_export.ranking import case_targets, flatten_sessions

log = logging.getLogger(__name__)

KS = (20, 100, 500)
# The search merge is judged at GRAM's depths (Recall@10/100/300): a search result page, and
# the candidates a search ranker takes.
SEARCH_KS = (10, 100, 300)
WEIGHT_GRID = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
# RRF constants tried: 60 is the Elasticsearch/OpenSearch/Vespa/Milvus convention; smaller
# ones reward the top of each list more (close to interleaving), which suits short lists.
RRF_KS = (2, 10, 60)
HALF_LIVES = (1.0, 3.0, 7.0, 14.0, 30.0, 90.0)
ACTION_WEIGHTS = (
    (0.0, 0.1, 1.0, 2.0, 4.0),  # depth matters a lot
    (0.0, 0.0, 1.0, 2.0, 4.0),  # exposures say nothing
    (0.0, 0.3, 1.0, 1.5, 2.0),  # depth matters a little
    (0.0, 0.1, 1.0, 1.0, 1.0),  # any engagement is alike
)
I2I_RECENCY = tuple(itertools.product((5, 10, 20), (0.5, 0.8, 1.0)))  # (recent_sessions, decay)
DEFAULT_NEIGHBOURS = 100  # docs/benchmarks/quality.md measures recall against N; docs the memory
# The search merge's fit merges every case ~500 times; a sample of this size keeps it to minutes.
MAX_SEARCH_FIT_CASES = 1500


def build_i2i(dataset: Dataset, params: I2IParams) -> ItemToItem:
    """The co-occurrence table of the training period's engaged items."""
    flat = flatten_sessions(list(dataset.train.values()), dataset.vocab)
    engaged = flat.action >= CLICK
    return ItemToItem.build(
        flat.owner[engaged], flat.position[engaged], flat.item[engaged], dataset.vocab.n_items, params
    )


def ndcg_of(rows: Sequence[np.ndarray], targets: Sequence[set[int]], k: int = 100) -> float:
    """NDCG@k of unpadded lists: a channel's own order matters to the merge, and Recall@100 of a
    user's own items barely moves with it (most histories hold fewer than 100 items)."""
    ranked = pad_rows(rows, [EMPTY[0]] * len(rows), k)
    return hit_metrics(ranked, targets, [k])[f"ndcg@{k}"]


def merged_objective(
    by_k: dict[int, CaseLists],
    fills: dict[int, list[np.ndarray]],
    targets: Sequence[set[int]],
    fusion: FusionParams,
) -> float:
    """Mean over K of the merged Recall@K, each K as a k = K request (its lists merged, cut to K,
    padded as the service pads)."""
    values = []
    for k, lists in by_k.items():
        ranked = pad_rows(merged_rows(lists, fusion, k), fills[k], k)
        values.append(hit_metrics(ranked, targets, [k])[f"recall@{k}"])
    return float(np.mean(values))


def fit_fusion(
    by_k: dict[int, CaseLists],
    fills: dict[int, list[np.ndarray]],
    targets: Sequence[set[int]],
    channels: Sequence[str],
) -> tuple[FusionParams, dict[str, float]]:
    """The best (method, rrf_k, weights) by coordinate ascent, and each method's objective."""
    scores: dict[str, float] = {}
    best_params, best_value = FusionParams(), -1.0
    variants: list[tuple[FusionMethod, int]] = [("rrf", c) for c in RRF_KS] + [("score", RRF_K)]
    for method, rrf_k in variants:
        base = FusionParams(method=method, rrf_k=rrf_k)

        def objective(weights: dict[str, float], base: FusionParams = base) -> float:
            return merged_objective(by_k, fills, targets, base.model_copy(update={"weights": weights}))

        # Start from the better of equal weights and each channel alone, so the merge fitted on
        # validation is never below the best single channel there.
        starts = [dict.fromkeys(channels, 1.0)]
        starts += [{c: float(c == alone) for c in channels} for alone in channels]
        value, weights = max(((objective(w), w) for w in starts), key=lambda pair: pair[0])
        for _ in range(3):  # passes; stops early once a pass changes nothing
            improved = False
            for channel in channels:
                for weight in WEIGHT_GRID:
                    trial = {**weights, channel: weight}
                    if weight == weights[channel] or not any(trial.values()):
                        continue
                    candidate = objective(trial)
                    if candidate > value + 1e-9:
                        value, weights, improved = candidate, trial, True
            if not improved:
                break
        label = method if method == "score" else f"rrf{rrf_k}"
        scores[label] = value
        log.info("fusion %s: objective %.4f with %s", label, value, weights)
        if value > best_value:
            best_value, best_params = value, base.model_copy(update={"weights": weights})
    return best_params, scores


def fit_history(
    cases: Sequence[EvalCase], targets: Sequence[set[int]], source: OfflineChannels
) -> HistoryParams:
    best, best_value = source.history, -1.0
    for half_life, weights in itertools.product(HALF_LIVES, ACTION_WEIGHTS):
        source.history = HistoryParams(action_weights=weights, half_life_days=half_life)
        rows = [row["history"][0] for row in source.lists(cases, 100, False, only=["history"])]
        value = ndcg_of(rows, targets)
        if value > best_value:
            best, best_value = source.history, value
    source.history = best
    return best


def fit_i2i(cases: Sequence[EvalCase], targets: Sequence[set[int]], source: OfflineChannels) -> I2IParams:
    best, best_value = source.i2i, -1.0
    for recent, decay in I2I_RECENCY:
        source.i2i = source.i2i.model_copy(update={"recent_sessions": recent, "decay": decay})
        values = [
            ndcg_of([row["i2i"][0] for row in source.lists(cases, 100, seen, only=["i2i"])], targets)
            for seen in (False, True)
        ]
        value = float(np.mean(values))
        if value > best_value:
            best, best_value = source.i2i, value
    source.i2i = best
    return best


def deep_lists(
    source: OfflineChannels, cases: Sequence[EvalCase], exclude_seen: bool, ks: Sequence[int] = KS
) -> tuple[dict[int, CaseLists], dict[int, list[np.ndarray]]]:
    """Each channel's lists as a k = K request gets them (depth max(K, min_depth)) and the
    padding, per K (computed once at the deepest, then cut)."""
    lists = source.lists(cases, source.depth(max(ks)), exclude_seen)
    by_k = {k: cut(lists, source.depth(k)) for k in ks}
    fills = {k: [row["popular"][0] for row in by_k[k]] for k in ks}
    return by_k, fills


def search_fit_cases(dataset: Dataset, limit: int = MAX_SEARCH_FIT_CASES, seed: int = 0) -> list[EvalCase]:
    """The validation search cases the search merge is fitted on: all, or a seeded sample."""
    cases = dataset.search_val
    if len(cases) <= limit:
        return list(cases)
    chosen = np.sort(np.random.default_rng(seed).choice(len(cases), size=limit, replace=False))
    return [cases[i] for i in chosen.tolist()]


def fit_channels(
    dataset: Dataset,
    user_vectors: Callable[[Sequence[EvalCase]], np.ndarray] | None,
    items: np.ndarray | None,
    neighbours: int = DEFAULT_NEIGHBOURS,
    ks: Sequence[int] = KS,
    text: dict[str, TextSearch] | None = None,
) -> tuple[ChannelsSpec, ItemToItem, OfflineChannels]:
    """Fit on ``dataset.val`` (and ``dataset.search_val`` for the search merge); returns the
    spec for the manifest, the i2i table and the channels."""
    i2i = I2IParams(neighbours=neighbours)
    table = build_i2i(dataset, i2i)
    source = OfflineChannels(
        dataset.vocab, dataset.popularity, HistoryParams(), table, i2i, user_vectors, items, text=text or {}
    )
    cases, targets = case_targets(dataset.val, dataset.vocab)
    if not cases:
        log.warning("no validation cases: channel settings and fusion weights left at their defaults")
        return ChannelsSpec(i2i=i2i), table, source
    fit_history(cases, targets, source)
    fit_i2i(cases, targets, source)
    fusion: dict[str, FusionParams] = {}
    validation: dict[str, float] = {}
    for exclude_seen, key in ((False, SEEN), (True, UNSEEN)):
        by_k, fills = deep_lists(source, cases, exclude_seen, ks)
        fusion[key], by_method = fit_fusion(by_k, fills, targets, source.recommendation_names)
        validation.update({f"{key}.{method}": value for method, value in by_method.items()})
    search_cases, search_targets = case_targets(search_fit_cases(dataset), dataset.vocab)
    for exclude_seen in (False, True) if search_cases else ():
        key = fusion_key(exclude_seen, search=True)
        by_k, fills = deep_lists(source, search_cases, exclude_seen, SEARCH_KS)
        fusion[key], by_method = fit_fusion(by_k, fills, search_targets, source.names)
        validation.update({f"{key}.{method}": value for method, value in by_method.items()})
    spec = ChannelsSpec(
        history=source.history,
        i2i=source.i2i,
        min_depth=source.min_depth,
        fusion=fusion,
        validation=validation,
    )
    log.info("channels fitted on %d validation cases: %s", len(cases), spec.model_dump_json())
    return spec, table, source


def judge(
    source: OfflineChannels,
    spec: ChannelsSpec,
    cases: Sequence[EvalCase],
    ks: Sequence[int] = KS,
    search: bool = False,
) -> dict[str, Any]:
    """Per exclusion policy: each channel alone and the merge (HR/Recall/NDCG@K, each K as a
    k = K request), the oracle union Recall@K, unique hits per channel, leave-one-out loss.
    ``search``: the cases are search requests, merged with the search fusion."""
    cases, targets = case_targets(cases, source.vocab)
    names = source.names if search else source.recommendation_names
    report: dict[str, Any] = {"cases": len(cases)}
    for exclude_seen, view in ((False, "all"), (True, "unseen")):
        by_k, fills = deep_lists(source, cases, exclude_seen, ks)
        entry: dict[str, Any] = {"channels": {}, "merged": {}, "union": {}, "unique": {}, "leave_one_out": {}}
        for k in ks:
            lists, fill = by_k[k], fills[k]
            merged = pad_rows(merged_rows(lists, spec.fusion_for(exclude_seen, search), k), fill, k)
            entry["merged"].update(hit_metrics(merged, targets, [k]))
            for name in names:
                alone = pad_rows([row[name][0] for row in lists], fill, k)
                entry["channels"].setdefault(name, {}).update(hit_metrics(alone, targets, [k]))
                without = [n for n in names if n != name]
                dropped = pad_rows(
                    merged_rows(lists, spec.fusion_for(exclude_seen, search), k, without), fill, k
                )
                loss = entry["merged"][f"recall@{k}"] - hit_metrics(dropped, targets, [k])[f"recall@{k}"]
                entry["leave_one_out"].setdefault(name, {})[f"recall@{k}"] = loss
            found = [
                {n: set(row[n][0].tolist()) & t for n in row} for row, t in zip(lists, targets, strict=True)
            ]
            union = [set().union(*f.values()) if f else set() for f in found]
            entry["union"][f"recall@{k}"] = float(
                np.mean([len(u) / len(t) for u, t in zip(union, targets, strict=True)])
            )
            entry["union"][f"hr@{k}"] = float(np.mean([bool(u) for u in union]))
            total = sum(len(u) for u in union)
            for name in names:
                only = sum(len(f[name] - set().union(*(f[o] for o in f if o != name))) for f in found)
                entry["unique"].setdefault(name, {})[f"hits@{k}"] = only
                entry["unique"][name][f"share@{k}"] = only / total if total else 0.0
        report[view] = entry
    return report


def channel_rankers(
    source: OfflineChannels, spec: ChannelsSpec, search: bool = False
) -> dict[str, ChannelRanker]:
    """Each channel alone and the merge, as harness rankers (``model_export.ranking.evaluate``);
    ``search``: for search cases (the search merge, text channels included)."""
    names = source.names if search else source.recommendation_names
    rankers = {name: ChannelRanker(source, spec, [name], search) for name in names}
    return {**rankers, "merged": ChannelRanker(source, spec, None, search)}
