"""SASRec (Kang & McAuley, 2018): a small causal transformer over item histories.

It is the classic sequential baseline, the ranker behind `sasrec` candidate lists, and the source of
user representations for the peer similarity q_t. Trained on the train split on CPU in minutes and
cached under $COARS_FAST_CACHE/sasrec, keyed by the training data and hyper-parameters.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from coars_fast.cache import atomic_write, cache_dir
from coars_fast.data.dataset import MIN_HISTORY, Dataset, Episode
from coars_fast.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SASRecConfig:
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    max_len: int = 10
    lr: float = 1e-3
    batch_size: int = 256
    max_epochs: int = 40
    patience: int = 3  # epochs without a better held-out loss before stopping
    # Training ends by early stopping or max_epochs, never by machine speed. A wall-clock cap is opt-in,
    # and a model it cut short is used for this process only, never cached as finished.
    max_minutes: float | None = None
    holdout: float = 0.05  # share of train episodes held out for early stopping
    seed: int = 0


class Block(nn.Module):
    """Pre-norm self-attention + feed-forward, attention restricted by a boolean mask."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv, self.out = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * hidden, hidden)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, L, H = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        a = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(B, L, H)))
        return x + self.drop(self.ffn(self.norm2(x)))


class SASRec(nn.Module):
    def __init__(self, num_items: int, config: SASRecConfig = SASRecConfig()):
        super().__init__()
        self.num_items, self.config = num_items, config
        self.pad = num_items  # histories are left-padded with this id
        self.item_emb = nn.Embedding(num_items + 1, config.hidden, padding_idx=self.pad)
        nn.init.normal_(self.item_emb.weight, std=config.hidden**-0.5)
        self.pos_emb = nn.Embedding(config.max_len, config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config.hidden, config.heads, config.dropout) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.hidden)
        self.cache_path = None  # the weights file when this model is the cached one (load_or_train)

    def pad_histories(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """Left-pad (and truncate to the most recent max_len) into a [B, max_len] id tensor."""
        L = self.config.max_len
        out = torch.full((len(histories), L), self.pad, dtype=torch.long)
        for row, history in enumerate(histories):
            history = list(history)[-L:]
            if history:
                out[row, L - len(history) :] = torch.tensor(history, dtype=torch.long)
        return out

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        L = ids.shape[1]
        x = self.dropout(self.item_emb(ids) + self.pos_emb.weight[:L])
        # Causal attention over real items; a padded slot sees only itself, so no row is fully masked.
        causal = torch.ones(L, L, dtype=torch.bool).tril()
        real = (ids != self.pad)[:, None, None, :]
        allowed = (causal & real) | torch.eye(L, dtype=torch.bool)
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.item_emb.weight[: self.num_items].T

    @torch.no_grad()
    def encode(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """User representations: the final state after each history, [B, hidden]."""
        self.eval()
        return self.hidden_states(self.pad_histories(histories))[:, -1]

    @torch.no_grad()
    def scores(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """Next-item scores for every item, [B, num_items]."""
        return self.logits(self.encode(histories))

    def rank(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """Every item, best first, per history: [B, num_items]."""
        return torch.argsort(self.scores(histories), dim=1, descending=True).numpy()


def training_key(dataset: Dataset, config: SASRecConfig) -> str:
    digest = hashlib.sha256(f"{dataset.name}|{dataset.num_items}|{sorted(asdict(config).items())}".encode())
    for ep in dataset.split("train"):
        digest.update(f"{ep.history}>{ep.target};".encode())
    return digest.hexdigest()[:16]


def load_or_train(
    dataset: Dataset, config: SASRecConfig = SASRecConfig(), progress: bool = True, retrain: bool = False
) -> SASRec:
    """The cached SASRec for this dataset's train split, training (and caching) it when missing or
    when `retrain`. Beside the weights, `<name>.json` records how its training ended."""
    if not dataset.split("train"):
        raise DataError(
            f"dataset {dataset.name}: no training episodes (every user has fewer than {MIN_HISTORY + 1} "
            "items), so there is nothing to train SASRec on"
        )
    path = cache_dir("sasrec") / f"{dataset.name}-{training_key(dataset, config)}.pt"
    model = SASRec(dataset.num_items, config)
    if path.exists() and not retrain:
        model.load_state_dict(torch.load(path, weights_only=True))
        model.cache_path = path
        log.info("loaded SASRec from %s", path)
        return model.eval()
    ended = train(model, dataset.split("train"), progress=progress)
    if ended["ended"] == "time_limit":
        log.warning(
            "SASRec training stopped at its %s-minute limit after %d epochs: this model is not cached",
            config.max_minutes,
            ended["epochs"],
        )
        return model.eval()
    atomic_write(path, lambda tmp: torch.save(model.state_dict(), tmp))
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(ended)))
    model.cache_path = path
    log.info("saved SASRec to %s (%s after %d epochs)", path, ended["ended"], ended["epochs"])
    return model.eval()


def _tensors(model: SASRec, episodes: Sequence[Episode]) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded histories [N, max_len] and targets [N]. Train episodes are already every position of
    every sequence, so predicting each episode's target covers the data without SASRec's
    all-positions loss (a tenth of the cost)."""
    return model.pad_histories([ep.history for ep in episodes]), torch.tensor([ep.target for ep in episodes])


def train(model: SASRec, episodes: Sequence[Episode], progress: bool = True) -> dict:
    """Fits `model` in place (its best held-out state); returns how training ended: epochs run and
    "early_stopping", "max_epochs" or "time_limit"."""
    cfg = model.config
    torch.manual_seed(cfg.seed)
    histories, targets = _tensors(model, episodes)
    order = torch.randperm(len(episodes))
    n_hold = max(1, int(len(episodes) * cfg.holdout))
    held, fit = order[:n_hold], order[n_hold:]
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    best, best_state, stale, started = float("inf"), None, 0, time.monotonic()
    # the bar counts epochs in fractions, batch by batch: it moves on a slow machine too
    bar = tqdm(
        total=cfg.max_epochs,
        desc="SASRec",
        unit="epoch",
        disable=not progress,
        bar_format="{l_bar}{bar}| {n:.1f}/{total} epochs [{elapsed}<{remaining}{postfix}]",
    )
    ended, epochs = "max_epochs", 0
    for epochs in range(1, cfg.max_epochs + 1):  # noqa: B007 (read after the loop: how many ran)
        model.train()
        batches = fit[torch.randperm(len(fit))].split(cfg.batch_size)
        for batch in batches:
            bar.update(1 / len(batches))
            logits = model.logits(model.hidden_states(histories[batch])[:, -1])
            loss = nn.functional.cross_entropy(logits, targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        held_loss = _held_out_loss(model, histories[held], targets[held])
        bar.set_postfix(train_loss=f"{loss.item():.3f}", held_loss=f"{held_loss:.3f}")
        if held_loss < best - 1e-4:
            best, stale = held_loss, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        if stale >= cfg.patience:
            ended = "early_stopping"
            break
        if cfg.max_minutes is not None and time.monotonic() - started > 60 * cfg.max_minutes:
            ended = "time_limit"
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return {"ended": ended, "epochs": epochs}


@torch.no_grad()
def _held_out_loss(model: SASRec, histories: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean cross-entropy of the held-out targets."""
    model.eval()
    logits = torch.cat([model.logits(model.hidden_states(h)[:, -1]) for h in histories.split(1024)])
    return nn.functional.cross_entropy(logits, targets).item()
