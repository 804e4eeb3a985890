"""Codes for many texts at once: batched, trie-constrained beam search of the torch generator,
the offline twin of the serving runtime (``index.gram_search``)."""

from __future__ import annotations

import numpy as np
import torch

from index.gram_trie import CodeTable, CodeTrie, Step, beam_search
from index.gram_vocab import Code, CodeVocab
from model_export.gram.generator import GramGenerator, trim_padding
from model_export.progress import progress_bar


class Coder:
    """Batched, trie-constrained beam search of a torch generator over many prompts: what the
    ONNX runtime does for one query at serving time, for whole catalogs offline."""

    def __init__(self, model: GramGenerator, trie: CodeTrie, chunk: int = 256) -> None:
        self.model = model
        self.trie = trie
        self.chunk = chunk

    @torch.no_grad()
    def codes(
        self,
        text_ids: np.ndarray,
        task: int,
        beam: int,
        max_codes: int,
        progress: bool = False,
        desc: str = "",
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows (P, M) -1 padded, token log-probs (P, M, 7), scores (P, M)) per prompt."""
        self.model.eval()
        rows, logps, scores = [], [], []
        starts = range(0, len(text_ids), self.chunk)
        for start in progress_bar(starts, progress, desc=desc, leave=False):
            ids = torch.from_numpy(np.ascontiguousarray(text_ids[start : start + self.chunk], dtype=np.int64))
            tasks = torch.full((len(ids),), task, dtype=torch.int64)
            memory, pad = self.model.encode(trim_padding(ids), tasks)

            step = _torch_step(self.model, memory, pad)
            r, lp, s = beam_search(self.trie, step, beam, max_codes, prompts=len(ids))
            rows.append(r)
            logps.append(lp)
            scores.append(s)
        if not rows:
            return (
                np.zeros((0, max_codes), np.int64),
                np.zeros((0, max_codes, 7), np.float32),
                np.zeros((0, max_codes), np.float32),
            )
        return np.concatenate(rows), np.concatenate(logps), np.concatenate(scores)


def _torch_step(model: GramGenerator, memory: torch.Tensor, pad: torch.Tensor) -> Step:
    """The decoder over a chunk of encoded prompts as ``index.gram_trie``'s step."""

    def step(prompt: np.ndarray, prefix: np.ndarray) -> np.ndarray:
        which = torch.from_numpy(np.asarray(prompt, dtype=np.int64))
        logits = model.decode(memory[which], pad[which], torch.from_numpy(prefix))[:, -1]
        return logits.float().numpy()

    return step


def code_sets(rows: np.ndarray, table: CodeTable, vocab: CodeVocab) -> list[set[Code]]:
    return [{vocab.decode(table.codes[r]) for r in row if r >= 0} for row in rows]
