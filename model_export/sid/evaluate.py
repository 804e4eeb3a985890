"""CQ-SID hit rates, computed the way the paper's tables read, by the beam search the service
runs (``index.sid_trie.beam_search``) over the torch generator.

A case is a search session: its query, the user's recently engaged SIDs before it (for the
personalised rows), its engaged items (click targets) and every item it showed (exposure
targets). ``hitrate`` is item-level: the share of a case's targets whose full SID (group suffix
included) is among the beam's SIDs, averaged over cases; ``prefix_hitrate`` counts a target
found when its 3-level cluster is (the looser cluster-level rate, reported apart, since prefix
matching hides the split); ``truncated_hitrate`` expands the beam's SIDs to items in beam order
and keeps the first ``depth`` (the paper's top-1K truncation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from index.features import CLICK
from index.sid_layout import SidLayout
from index.sid_search import context_tokens, recent_engaged
from index.sid_table import SidTable
from index.sid_trie import SidTrie, Step, beam_search
from index.tokenizer import PAD_ID, TextTokenizer
from index.vocab import Vocabulary
from model_export.data import EvalCase
from model_export.sid.generator import SidGenerator

Beams = list[tuple[np.ndarray, np.ndarray]]  # per case: (table rows, log-probs), best first


@dataclass(frozen=True)
class SidCase:
    text_ids: np.ndarray  # (1, Lt) the query's pieces, unpadded
    user_tokens: np.ndarray  # (1, Lu) recent SIDs' tokens (all PAD for query-only)
    clicked: np.ndarray  # labels engaged (click or deeper)
    exposed: np.ndarray  # labels shown


def sid_cases(
    cases: Sequence[EvalCase],
    vocab: Vocabulary,
    tokenizer: TextTokenizer,
    item_sids: np.ndarray,
    layout: SidLayout,
    max_text_tokens: int,
    user_sids: int,
    personal: bool,
) -> list[SidCase]:
    """Cases with a query and an engaged item; ``personal``: with the user's recent SIDs."""
    out = []
    for case in cases:
        if not case.target.query:
            continue
        labelled = [
            (label, a) for item, a in case.target.items if (label := vocab.item_index(item)) is not None
        ]
        clicked = np.asarray([label for label, a in labelled if a >= CLICK], dtype=np.int64)
        if not len(clicked):
            continue
        ids = tokenizer.ids([case.target.query], max_text_tokens)
        ids = ids[:, : max(1, int((ids[0] != PAD_ID).sum()))]
        recent = recent_engaged(case.history, vocab, user_sids) if personal else []
        users = context_tokens(item_sids, layout, [recent], user_sids)
        exposed = np.asarray([label for label, _ in labelled], dtype=np.int64)
        out.append(SidCase(ids, users, clicked, exposed))
    return out


def torch_stepper(model: SidGenerator, case: SidCase) -> Step:
    """The beam search's step over the torch generator for one case (what the ONNX decoder
    computes in the service)."""
    with torch.no_grad():
        memory, pad = model.encode(torch.from_numpy(case.text_ids), torch.from_numpy(case.user_tokens))

    @torch.no_grad()
    def step(prefix: np.ndarray) -> np.ndarray:
        rows = prefix.shape[0]
        logits = model.decode(memory.expand(rows, -1, -1), pad.expand(rows, -1), torch.from_numpy(prefix))
        return logits[:, -1].numpy()

    return step


def generate(model: SidGenerator, trie: SidTrie, cases: Sequence[SidCase], beam: int) -> Beams:
    model.eval()
    return [beam_search(trie, trie.layout, torch_stepper(model, case), beam) for case in cases]


def hitrate(
    beams: Beams, cases: Sequence[SidCase], table: SidTable, beam: int, exposure: bool = False
) -> float:
    """Mean share of each case's targets whose SID is among the first ``beam`` of its beams."""
    shares = []
    for (rows, _), case in zip(beams, cases, strict=True):
        targets = case.exposed if exposure else case.clicked
        shares.append(float(np.isin(table.item_sid[targets], rows[:beam]).mean()))
    return float(np.mean(shares)) if shares else 0.0


def prefix_hitrate(beams: Beams, cases: Sequence[SidCase], table: SidTable, beam: int) -> float:
    """As ``hitrate`` with a target found when its 3-level cluster is among the beams'."""
    shares = []
    for (rows, _), case in zip(beams, cases, strict=True):
        found = {tuple(code) for code in table.codes[rows[:beam], :3].tolist()}
        codes = table.codes[table.item_sid[case.clicked], :3].tolist()
        shares.append(float(np.mean([tuple(code) in found for code in codes])))
    return float(np.mean(shares)) if shares else 0.0


def truncated_hitrate(
    beams: Beams, cases: Sequence[SidCase], table: SidTable, beam: int, depth: int
) -> float:
    """Mean share of clicked targets among the first ``depth`` items the first ``beam`` SIDs
    expand to (beam order, then the table's order within a SID)."""
    shares = []
    for (rows, _), case in zip(beams, cases, strict=True):
        labels, _ = table.expand(rows[:beam], depth, np.zeros(0, np.int64))
        shares.append(float(np.isin(case.clicked, labels).mean()))
    return float(np.mean(shares)) if shares else 0.0
