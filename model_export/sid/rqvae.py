"""The CQ-SID tokenizer: an RQ-VAE that turns item content vectors into three-level codes.

An MLP encoder maps an item's content vector to a latent ``z``; three residual codebooks
quantise it (level 1 codes ``z``, level 2 what level 1 left over, level 3 what level 2 left
over); an MLP decoder rebuilds the content vector from the sum of the chosen code vectors.
Codebooks are not trained by gradient but by exponential moving averages (EMA) of the residuals
assigned to each code, and a code that stops receiving items is restarted on a badly quantised
residual of the current batch. Two things make the codes CQ-SID's rather than plain RQ-VAE's:

* **Category-guided level 1**: an item with a known category takes level-1 code = its category,
  never the nearest code; the forced code vector is what enters the level-1 EMA statistics and
  the residual. Codes below ``n_categories`` are reserved for categories and never restarted;
  items of unknown category (-1) take the nearest of all level-1 codes.
* **Query-item contrast**: a bidirectional in-batch InfoNCE between the latents of items and of
  the queries that led to them (queries go through the same encoder), on ``pairs`` only, so an
  item nobody searched for is masked out of the term.

Loss: ``recon + beta * commit + gamma * InfoNCE`` with mean reductions throughout. The model
holds its input normalisation (shift and scale from the training items), so ``assign_codes``
works on any vectors of the same space, new items included, and ``checkpoint`` carries
everything needed to rebuild it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model_export.progress import progress_bar

log = logging.getLogger(__name__)

__all__ = [
    "LEVELS",
    "RQVAE",
    "EmaCodebook",
    "RqvaeConfig",
    "RqvaeOutput",
    "assign_codes",
    "codebook_stats",
    "info_nce",
    "init_rqvae",
    "rqvae_losses",
    "train_rqvae",
]

LEVELS = 3  # residual levels; the group suffix (model_export.sid.clusters) is the SID's fourth
ASSIGN_CHUNK = 8192  # items encoded at once by assign_codes


@dataclass
class RqvaeConfig:
    level_sizes: tuple[int, int, int]  # (K1, K2, K3); with use_category K1 >= n_categories
    latent_dim: int = 32  # size of z and of every code vector
    hidden: int = 128  # width of the encoder's and the decoder's hidden layer
    beta: float = 1.0  # commitment weight (paper); sum over levels of per-level mean squared error
    # InfoNCE weight. The paper's 0.001 goes with 37.5M samples; here the reconstruction term is
    # on inputs scaled to unit mean square (it ends near 0.17 on 64-d vectors) while InfoNCE over
    # 128 in-batch pairs sits near ln 128 = 4.9. Measured on 5,000 items x 64-d, (64, 64, 64)
    # codes, queries unrelated to content: items of different content clusters clicked from the
    # same query shared a level-1 code (use_category off) 1% of the time without the term, 2% at
    # 0.001 and 0.01 (codes barely move), 34% at 0.1 (reconstruction +13%), 76% at 0.3 (+31%).
    gamma: float = 0.1
    temperature: float = 0.1  # InfoNCE tau (paper) on cosine similarity
    ema_decay: float = 0.99  # paper's lambda: a code vector averages its residuals over ~100 steps
    # Dead-code rule: a code whose EMA count (items per step) falls below dead_ratio times a
    # uniform code's share, batch_size / K, is restarted. 0.1 with decay 0.99: a code at its share
    # (where init and restart put it) that then gets no items is restarted 230 steps later
    # (0.99^230 = 0.1); one that keeps a tenth of its share stays.
    dead_ratio: float = 0.1
    use_category: bool = True  # level 1 forced to the category code for items with a known category
    use_query: bool = True  # the InfoNCE term on (query, item) pairs
    epochs: int = 20  # passes over the items; but at least min_steps steps
    # Small catalogs (1k items = 8 steps an epoch) get more passes: EMA codebooks need a few
    # hundred steps to settle and dead codes ~230 steps to be found.
    min_steps: int = 1500
    batch_size: int = 128  # items per step; also the number of pairs in each InfoNCE batch (paper b)
    lr: float = 1e-3  # Adam, encoder and decoder (codebooks follow by EMA)
    seed: int = 0  # initialisation, batch order, pair sampling and restarts
    # Torch threads while training: on 128 x 64 batches extra threads cost more than they save
    # (measured 0.3 ms per MLP step on one thread against 6 ms on two of a loaded 2-core host).
    threads: int = 1
    progress: bool = True  # a progress bar per epoch (drawn only when stderr is a terminal)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class EmaCodebook(nn.Module):
    """``K`` code vectors, each the EMA mean of the residuals assigned to it (no gradient)."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.embed: torch.Tensor
        self.cluster_size: torch.Tensor
        self.embed_sum: torch.Tensor
        self.register_buffer("embed", torch.zeros(size, dim))  # (K, d)
        self.register_buffer("cluster_size", torch.zeros(size))  # (K,) EMA items per step
        self.register_buffer("embed_sum", torch.zeros(size, dim))  # (K, d) EMA sum of residuals

    @property
    def size(self) -> int:
        return int(self.embed.shape[0])

    def reset(self, vectors: torch.Tensor, count: float) -> None:
        """Start every code at ``vectors`` (K, d) as if it had had ``count`` items per step."""
        self.embed.copy_(vectors)
        self.cluster_size.fill_(count)
        self.embed_sum.copy_(vectors * count)

    def distances(self, r: torch.Tensor) -> torch.Tensor:
        """(B, d) → (B, K) squared distances to every code."""
        return (r * r).sum(1, keepdim=True) - 2 * r @ self.embed.T + (self.embed * self.embed).sum(1)

    def nearest(self, r: torch.Tensor) -> torch.Tensor:
        """(B, d) → (B,) int64 index of the nearest code (lowest index on ties)."""
        return self.distances(r).argmin(dim=1)

    def update(self, r: torch.Tensor, codes: torch.Tensor, decay: float) -> None:
        """EMA step on residuals (B, d) assigned to ``codes`` (B,). A code without items keeps its
        vector (count and sum decay together)."""
        onehot = F.one_hot(codes, self.size).to(r.dtype)  # (B, K)
        self.cluster_size.mul_(decay).add_(onehot.sum(0), alpha=1 - decay)
        self.embed_sum.mul_(decay).add_(onehot.T @ r, alpha=1 - decay)
        live = self.cluster_size > 1e-12
        self.embed[live] = self.embed_sum[live] / self.cluster_size[live, None]

    def restart(
        self, candidates: torch.Tensor, dead: torch.Tensor, count: float, generator: torch.Generator
    ) -> int:
        """Move the ``dead`` (K,) bool codes onto residuals among ``candidates`` (C, d), drawn
        without replacement with probability proportional to their squared distance to their
        nearest code (so restarted codes split badly quantised regions). Each restarted code
        starts with ``count``. Returns how many were restarted (at most C)."""
        dead_ids = dead.nonzero().squeeze(1)
        n = min(len(dead_ids), len(candidates))
        if n == 0:
            return 0
        weight = self.distances(candidates).min(dim=1).values.clamp(min=0)  # (C,)
        if float(weight.sum()) <= 0:
            weight = torch.ones_like(weight)
        # Positive floor: multinomial without replacement needs n rows of non-zero weight.
        weight = weight + 1e-12 * float(weight.max())
        picked = torch.multinomial(weight, n, replacement=False, generator=generator)
        ids = dead_ids[self.cluster_size[dead_ids].argsort(stable=True)[:n]]  # deadest first
        self.embed[ids] = candidates[picked]
        self.cluster_size[ids] = count
        self.embed_sum[ids] = candidates[picked] * count
        return n


class RqvaeOutput(NamedTuple):
    x_hat: torch.Tensor  # (B, D) reconstruction, in the normalised input space
    z: torch.Tensor  # (B, d) encoder output
    codes: torch.Tensor  # (B, 3) int64
    residuals: torch.Tensor  # (3, B, d) what each level quantised (level 1: z)
    chosen: torch.Tensor  # (3, B, d) the code vector each level chose (no gradient)


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.GELU(), nn.Linear(hidden, outputs))


class RQVAE(nn.Module):
    """Encoder MLP → three residual EMA codebooks → decoder MLP. ``categories`` arguments are
    (B,) int64: a level-1 code < ``n_categories`` for a known category, -1 for unknown."""

    def __init__(self, config: RqvaeConfig, input_dim: int, n_categories: int) -> None:
        super().__init__()
        if len(config.level_sizes) != LEVELS or min(config.level_sizes) < 1:
            raise ValueError(f"an RQ-VAE needs {LEVELS} positive level sizes, got {config.level_sizes}")
        if config.use_category and n_categories > config.level_sizes[0]:
            raise ValueError(
                f"{n_categories} categories do not fit a level-1 codebook of {config.level_sizes[0]}"
            )
        self.config = config
        self.input_dim = input_dim
        self.n_categories = n_categories if config.use_category else 0
        self.encoder = mlp(input_dim, config.hidden, config.latent_dim)
        self.decoder = mlp(config.latent_dim, config.hidden, input_dim)
        self.codebooks = nn.ModuleList(EmaCodebook(k, config.latent_dim) for k in config.level_sizes)
        # Inputs are centred and scaled to unit mean square, so the reconstruction term (and with
        # it gamma) means the same whatever the scale of the content vectors.
        self.shift: torch.Tensor
        self.scale: torch.Tensor
        self.register_buffer("shift", torch.zeros(input_dim))  # (D,)
        self.register_buffer("scale", torch.ones(()))

    def codebook(self, level: int) -> EmaCodebook:
        book = self.codebooks[level]
        assert isinstance(book, EmaCodebook)
        return book

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) item or query vectors → (B, d) latents."""
        return self.encoder(self.normalise(x))

    def forced(self, categories: torch.Tensor) -> torch.Tensor:
        """(B,) → (B,) bool: rows whose level-1 code is their category."""
        if self.n_categories == 0:
            return torch.zeros_like(categories, dtype=torch.bool)
        return categories >= 0

    def quantize(
        self, z: torch.Tensor, categories: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, d), (B,) → codes (B, 3), residuals (3, B, d), chosen code vectors (3, B, d)."""
        forced = self.forced(categories)
        r = z
        codes, residuals, chosen = [], [], []
        for level in range(LEVELS):
            book = self.codebook(level)
            code = book.nearest(r.detach())  # (B,)
            if level == 0:
                code = torch.where(forced, categories, code)
            vector = book.embed[code]  # (B, d)
            codes.append(code)
            residuals.append(r)
            chosen.append(vector)
            r = r - vector
        return torch.stack(codes, 1), torch.stack(residuals), torch.stack(chosen)

    def forward(self, x: torch.Tensor, categories: torch.Tensor) -> RqvaeOutput:
        """(B, D), (B,) → reconstruction, latents, codes and per-level residuals."""
        z = self.encode(x)  # (B, d)
        codes, residuals, chosen = self.quantize(z, categories)
        quantised = chosen.sum(0)  # (B, d)
        z_q = z + (quantised - z).detach()  # straight-through: the decoder's gradient reaches z
        return RqvaeOutput(self.decoder(z_q), z, codes, residuals, chosen)

    def dead_threshold(self, level: int) -> float:
        """EMA count (items per step) under which a code of ``level`` is dead: ``dead_ratio``
        of a uniform code's share of a batch."""
        return self.config.dead_ratio * self.config.batch_size / self.codebook(level).size

    @torch.no_grad()
    def update_codebooks(self, out: RqvaeOutput, categories: torch.Tensor, generator: torch.Generator) -> int:
        """EMA step of every level on one batch's residuals, then dead-code restart. Level-1
        codes reserved for categories are never restarted, and free level-1 codes restart only
        on latents of items of unknown category (the only ones that can reach them). Returns
        the number of codes restarted."""
        decay = self.config.ema_decay
        forced = self.forced(categories)
        restarted = 0
        for level in range(LEVELS):
            book = self.codebook(level)
            r = out.residuals[level].detach()
            book.update(r, out.codes[:, level], decay)
            share = self.config.batch_size / book.size
            dead = book.cluster_size < self.dead_threshold(level)
            candidates = r
            if level == 0:
                dead[: self.n_categories] = False
                candidates = r[~forced]
            restarted += book.restart(candidates, dead, share, generator)
        return restarted

    def checkpoint(self) -> dict[str, Any]:
        """Everything needed to rebuild the model (tensors and plain values; ``torch.save``-able)."""
        return {
            "config": self.config.to_dict(),
            "input_dim": self.input_dim,
            "n_categories": self.n_categories,
            "state": self.state_dict(),
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> RQVAE:
        config = dict(checkpoint["config"])
        config["level_sizes"] = tuple(config["level_sizes"])
        model = cls(RqvaeConfig(**config), checkpoint["input_dim"], checkpoint["n_categories"])
        model.load_state_dict(checkpoint["state"])
        return model.eval()


def info_nce(
    items: torch.Tensor,
    queries: torch.Tensor,
    item_ids: torch.Tensor,
    query_ids: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Bidirectional in-batch InfoNCE on cosine similarity between item latents (P, d) and the
    latents of their queries (P, d): row i's positive is column i. Another row with the same
    item (``item_ids``) or the same query (``query_ids``) is no negative in either direction."""
    logits = F.normalize(items, dim=-1) @ F.normalize(queries, dim=-1).T / temperature  # (P, P)
    same = (item_ids[:, None] == item_ids[None, :]) | (query_ids[:, None] == query_ids[None, :])
    logits = logits.masked_fill(same & ~torch.eye(len(items), dtype=torch.bool), float("-inf"))
    target = torch.arange(len(items))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def check_inputs(items: np.ndarray, categories: np.ndarray, pairs: np.ndarray, queries: np.ndarray) -> None:
    if items.ndim != 2 or len(items) == 0:
        raise ValueError(f"items need shape (N, D) with N > 0, got {items.shape}")
    if categories.shape != (len(items),):
        raise ValueError(f"categories need shape ({len(items)},), got {categories.shape}")
    if len(categories) and categories.min() < -1:
        raise ValueError("categories are a level-1 code >= 0 or -1 for unknown")
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"pairs need shape (P, 2), got {pairs.shape}")
    if queries.ndim != 2 or (len(queries) and queries.shape[1] != items.shape[1]):
        raise ValueError(f"queries need shape (Q, {items.shape[1]}), got {queries.shape}")
    if len(pairs) and (pairs.min(0) < 0).any():
        raise ValueError("pairs hold negative rows")
    if len(pairs) and (pairs[:, 0].max() >= len(queries) or pairs[:, 1].max() >= len(items)):
        raise ValueError("pairs point past the queries or the items")


def kmeans_pp(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """(n, d) → (k, d) k-means++ seeds (squared-distance sampling); points repeat when n < k."""
    centers = torch.empty(k, points.shape[1])
    first = int(torch.randint(len(points), (1,), generator=generator))
    centers[0] = points[first]
    closest = ((points - centers[0]) ** 2).sum(1)  # (n,)
    for i in range(1, k):
        weight = closest if float(closest.sum()) > 0 else torch.ones_like(closest)
        pick = int(torch.multinomial(weight, 1, generator=generator))
        centers[i] = points[pick]
        closest = torch.minimum(closest, ((points - centers[i]) ** 2).sum(1))
    return centers


@torch.no_grad()
def init_rqvae(items: np.ndarray, categories: np.ndarray, config: RqvaeConfig) -> RQVAE:
    """A fresh model whose codebooks start from the data, deterministic for ``config.seed``:
    each category's level-1 code at the mean latent of its items, free level-1 codes and
    levels 2-3 by k-means++ on the residuals the levels before them leave."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    n_categories = int(categories.max()) + 1 if len(categories) else 0
    model = RQVAE(config, items.shape[1], max(n_categories, 0))
    x = torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32))  # (N, D)
    model.shift.copy_(x.mean(0))
    model.scale.copy_(((x - model.shift) ** 2).mean().sqrt().clamp(min=1e-8))
    cats = torch.from_numpy(np.asarray(categories, dtype=np.int64))
    forced = model.forced(cats)
    r = model.encode(x)  # (N, d)
    for level in range(LEVELS):
        book = model.codebook(level)
        share = config.batch_size / book.size
        if level == 0 and model.n_categories:
            vectors = torch.zeros(book.size, config.latent_dim)
            sums = torch.zeros(model.n_categories, config.latent_dim).index_add_(0, cats[forced], r[forced])
            counts = torch.bincount(cats[forced], minlength=model.n_categories)
            vectors[: model.n_categories] = sums / counts.clamp(min=1)[:, None]
            free = book.size - model.n_categories
            pool = r[~forced] if (~forced).any() else r
            # A category without items starts at a data point, not at the origin.
            empty = (counts == 0).nonzero().squeeze(1)
            if len(empty):
                vectors[empty] = kmeans_pp(pool, len(empty), generator)
            if free:
                vectors[model.n_categories :] = kmeans_pp(pool, free, generator)
        else:
            vectors = kmeans_pp(r, book.size, generator)
        book.reset(vectors, share)
        code = book.nearest(r)
        if level == 0:
            code = torch.where(forced, cats, code)
        r = r - book.embed[code]
    return model


def rqvae_losses(model: RQVAE, out: RqvaeOutput, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruction (mean squared error in the normalised space) and commitment (per level
    mean squared distance of the residual to its code, summed over the levels): both means."""
    reconstruction = F.mse_loss(out.x_hat, model.normalise(x))
    commitment = ((out.residuals - out.chosen) ** 2).mean(dim=(1, 2)).sum()
    return reconstruction, commitment


def train_rqvae(
    items: np.ndarray,
    categories: np.ndarray,
    pairs: np.ndarray,
    queries: np.ndarray,
    config: RqvaeConfig,
) -> RQVAE:
    """Train the tokenizer on item content vectors (N, D) float32 in label order, their
    categories (N,) int64 (level-1 code, -1 unknown), search pairs (P, 2) int64 rows
    (query row, item label) and the query vectors (Q, D) float32 they point into.

    Deterministic for ``config.seed`` on the CPU. Logs the losses and codebook health per
    epoch. Raises ``ValueError`` on inconsistent shapes or when the categories do not fit K1.
    Returns the model in eval mode; ``assign_codes`` gives the codes.
    """
    items = np.asarray(items, dtype=np.float32)
    categories = np.asarray(categories, dtype=np.int64)
    pairs = np.asarray(pairs, dtype=np.int64)
    queries = np.asarray(queries, dtype=np.float32)
    if pairs.size == 0:  # no search log: the InfoNCE term is off
        pairs = pairs.reshape(0, 2)
        queries = queries.reshape(0, items.shape[-1])
    check_inputs(items, categories, pairs, queries)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(items, categories, pairs, queries, config)
    finally:
        torch.set_num_threads(threads)


def _train(
    items: np.ndarray, categories: np.ndarray, pairs: np.ndarray, queries: np.ndarray, config: RqvaeConfig
) -> RQVAE:
    model = init_rqvae(items, categories, config)
    generator = torch.Generator().manual_seed(config.seed)
    # Pairs are drawn from their own stream, so use_query changes the loss and nothing else.
    pair_generator = torch.Generator().manual_seed(config.seed + 1)
    x = torch.from_numpy(items)
    cats = torch.from_numpy(categories)
    q = torch.from_numpy(queries)
    pair_t = torch.from_numpy(pairs)
    use_query = config.use_query and len(pairs) > 0 and config.gamma > 0
    optimizer = torch.optim.Adam([*model.encoder.parameters(), *model.decoder.parameters()], lr=config.lr)
    steps_per_epoch = math.ceil(len(items) / config.batch_size)
    epochs = max(config.epochs, math.ceil(config.min_steps / steps_per_epoch))
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(items), generator=generator)
        totals = np.zeros(4)
        restarted = 0
        epoch_codes = []
        bar = progress_bar(
            order.split(config.batch_size), config.progress, desc=f"rqvae {epoch + 1}/{epochs}"
        )
        for batch in bar:
            out = model(x[batch], cats[batch])
            reconstruction, commitment = rqvae_losses(model, out, x[batch])
            loss = reconstruction + config.beta * commitment
            contrast = torch.zeros(())
            if use_query:
                rows = pair_t[torch.randint(len(pairs), (config.batch_size,), generator=pair_generator)]
                contrast = info_nce(
                    model.encode(x[rows[:, 1]]),
                    model.encode(q[rows[:, 0]]),
                    rows[:, 1],
                    rows[:, 0],
                    config.temperature,
                )
                loss = loss + config.gamma * contrast
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            restarted += model.update_codebooks(out, cats[batch], generator)
            parts = (loss.item(), reconstruction.item(), commitment.item(), contrast.item())
            totals += np.asarray(parts) * len(batch)
            epoch_codes.append(out.codes)
        totals /= len(items)
        stats = codebook_stats(torch.cat(epoch_codes).numpy(), config.level_sizes)
        log.log(
            logging.INFO if epoch + 1 == epochs else logging.DEBUG,  # one line per run at INFO
            "rqvae epoch %d/%d: loss %.4f (recon %.4f, commit %.4f, infonce %.4f), usage %s, "
            "unique SIDs %.3f, largest cluster %d, %d codes restarted",
            epoch + 1,
            epochs,
            *totals,
            "/".join(f"{stats[f'level{level + 1}_usage']:.2f}" for level in range(LEVELS)),
            stats["unique_sid_fraction"],
            stats["largest_cluster"],
            restarted,
        )
    return model.eval()


@torch.no_grad()
def assign_codes(model: RQVAE, items: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """(N, D) float32 item vectors (any items of the training space, new ones too) and their
    categories (N,) int64 → (N, 3) int64 codes, level 1 = the category where known. Raises
    ``ValueError`` for a category the model has no reserved code for (map it to -1 first)."""
    items = np.asarray(items, dtype=np.float32)
    categories = np.asarray(categories, dtype=np.int64)
    if items.ndim != 2 or items.shape[1] != model.input_dim or categories.shape != (len(items),):
        raise ValueError(
            f"need items (N, {model.input_dim}) and categories (N,), got {items.shape}, {categories.shape}"
        )
    if model.n_categories and len(categories) and categories.max() >= model.n_categories:
        raise ValueError(
            f"category {int(categories.max())} has no level-1 code (the model reserves "
            f"{model.n_categories}); pass -1 for a category it was not trained with"
        )
    model.eval()
    parts = [
        model.quantize(
            model.encode(torch.from_numpy(items[i : i + ASSIGN_CHUNK])),
            torch.from_numpy(categories[i : i + ASSIGN_CHUNK]),
        )[0].numpy()
        for i in range(0, len(items), ASSIGN_CHUNK)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, LEVELS), np.int64)


def codebook_stats(codes: np.ndarray, sizes: tuple[int, ...]) -> dict[str, float]:
    """Codebook health of (N, L) codes over codebooks of ``sizes`` (L,): per level the share of
    codes used (``level{l}_usage``) and the entropy of the code distribution in bits
    (``level{l}_entropy``, at most log2 K), then over whole L-level SIDs ``unique_sids``,
    ``unique_sid_fraction`` (of items), ``largest_cluster`` (items of the most common SID) and
    ``items_per_cluster`` (mean over used SIDs)."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2 or codes.shape[1] != len(sizes):
        raise ValueError(f"codes need shape (N, {len(sizes)}), got {codes.shape}")
    stats: dict[str, float] = {}
    n = len(codes)
    for level, size in enumerate(sizes):
        counts = np.bincount(codes[:, level], minlength=size)
        p = counts[counts > 0] / max(n, 1)
        stats[f"level{level + 1}_usage"] = float((counts > 0).sum() / size)
        stats[f"level{level + 1}_entropy"] = float(-(p * np.log2(p)).sum()) if n else 0.0
    _, cluster_sizes = np.unique(codes, axis=0, return_counts=True)
    stats["unique_sids"] = float(len(cluster_sizes))
    stats["unique_sid_fraction"] = float(len(cluster_sizes) / n) if n else 0.0
    stats["largest_cluster"] = float(cluster_sizes.max()) if n else 0.0
    stats["items_per_cluster"] = float(cluster_sizes.mean()) if n else 0.0
    return stats
