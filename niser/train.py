"""Training and evaluation of NISER: seeded, checkpointed, CPU by default, CUDA when available."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from niser.data import Samples, SessionData
from niser.graph import build_batch
from niser.metrics import evaluate
from niser.model import NISER

log = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    """Every training hyperparameter; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(5, ge=1, description="Passes over the augmented training samples.")
    batch_size: int = Field(100, ge=1, description="Training samples per optimizer step.")
    dim: int = Field(100, ge=2, description="Embedding size d.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(1e-5, ge=0, description="Adam L2 weight decay.")
    lr_step: int = Field(3, ge=1, description="Epochs between learning-rate decays.")
    lr_gamma: float = Field(0.1, gt=0, le=1, description="Learning-rate decay factor.")
    max_positions: int = Field(12, ge=1, description="Rows of the positional embedding.")
    long_sessions: Literal["truncate", "clamp"] = Field(
        "truncate", description="Sessions longer than max_positions: keep the most recent "
        "clicks (truncate) or keep all and share the oldest position (clamp).")
    sigma: float = Field(16.0, gt=0, description="Scale applied to cosine scores.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on item embeddings.")
    gnn_steps: int = Field(1, ge=1, description="Gated GNN propagation steps.")
    seed: int = Field(0, description="Seed for weights, shuffling and dropout.")
    device: str = Field("auto", description="'auto' (CUDA when available), 'cpu' or 'cuda[:n]'.")
    eval_batch_size: int = Field(500, ge=1, description="Samples per evaluation batch.")
    ks: tuple[int, ...] = Field((10, 20), description="Cut-offs for Recall@K and MRR@K.")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(n_items: int, config: TrainConfig) -> NISER:
    return NISER(n_items, config.dim, config.max_positions, config.sigma, config.dropout,
                 config.gnn_steps)


def topk_fn(model: NISER, config: TrainConfig) -> Callable[[Samples, int], np.ndarray]:
    """A scorer for ``evaluate``: the model's top-k item indices for a batch of samples."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def score(batch: Samples, k: int) -> np.ndarray:
        model.eval()
        g = build_batch(batch.items, batch.offsets, config.max_positions, config.long_sessions)
        scores = model(*g.tensors(device))
        return torch.topk(scores, k, dim=1).indices.cpu().numpy()

    return score


@dataclass
class EpochResult:
    epoch: int
    loss: float
    train_seconds: float
    samples_per_second: float
    eval_seconds: float
    metrics: dict[str, float]

    def as_metrics(self) -> dict[str, float]:
        return {"loss": self.loss, "epoch_seconds": self.train_seconds,
                "samples_per_second": self.samples_per_second,
                "eval_seconds": self.eval_seconds, **self.metrics}


@dataclass
class TrainResult:
    model: NISER
    config: TrainConfig
    history: list[EpochResult] = field(default_factory=list)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1].metrics if self.history else {}


EpochCallback = Callable[[EpochResult], None]


def train(
    data: SessionData,
    config: TrainConfig | None = None,
    on_epoch: EpochCallback | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    evaluate_each_epoch: bool = True,
) -> TrainResult:
    """Train NISER on ``data.train``, evaluating on ``data.test`` after each epoch.

    With ``checkpoint_dir`` the model, optimizer and scheduler are saved after every epoch
    (``last.pt``); ``resume`` continues from it.
    """
    config = config or TrainConfig()
    device = resolve_device(config.device)
    torch.set_flush_denormal(True)  # denormals slow CPU training ~2x late in an epoch
    seed_everything(config.seed)
    model = build_model(data.n_items, config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                           fused=device.type in ("cpu", "cuda"))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=config.lr_step, gamma=config.lr_gamma)
    result = TrainResult(model, config)
    start_epoch = 0
    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
    if ckpt and resume and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch = state["epoch"]
        result.history = [EpochResult(**h) for h in state["history"]]
        if "torch_rng" in state:  # dropout continues as in an uninterrupted run
            torch.set_rng_state(state["torch_rng"].cpu())
        if state.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        log.info("resumed from %s at epoch %d", ckpt, start_epoch)
    rng = np.random.default_rng(config.seed)
    for _ in range(start_epoch):
        rng.permutation(len(data.train))  # keep the shuffle sequence of an uninterrupted run
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        loss = _train_epoch(model, opt, data.train, config, rng, device, progress, epoch)
        sched.step()
        train_s = time.perf_counter() - t0
        metrics: dict[str, float] = {}
        eval_s = 0.0
        if evaluate_each_epoch or epoch == config.epochs - 1:
            t1 = time.perf_counter()
            metrics = evaluate(topk_fn(model, config), data.test, config.ks,
                               config.eval_batch_size, progress, f"evaluate {epoch + 1}")
            eval_s = time.perf_counter() - t1
        res = EpochResult(epoch + 1, loss, train_s, len(data.train) / train_s, eval_s, metrics)
        result.history.append(res)
        log.info("epoch %d: %s", epoch + 1, res.as_metrics())
        if ckpt:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "epoch": epoch + 1,
                        "config": config.model_dump(), "history": [vars(h) for h in result.history],
                        "torch_rng": torch.get_rng_state(),
                        "cuda_rng": (torch.cuda.get_rng_state_all() if device.type == "cuda"
                                     else None)},
                       ckpt)
        if on_epoch:
            on_epoch(res)
    model.eval()
    return result


def _train_epoch(
    model: NISER, opt: torch.optim.Optimizer, train: Samples, config: TrainConfig,
    rng: np.random.Generator, device: torch.device, progress: bool, epoch: int,
) -> float:
    model.train()
    order = rng.permutation(len(train))
    total = torch.zeros((), device=device)
    steps = 0
    batches = range(0, len(order), config.batch_size)
    bar = tqdm(batches, desc=f"epoch {epoch + 1}", disable=not progress, leave=False,
               mininterval=2.0)
    for start in bar:
        batch = train.subset(order[start : start + config.batch_size])
        g = build_batch(batch.items, batch.offsets, config.max_positions, config.long_sessions)
        targets = torch.from_numpy(batch.targets).to(device)
        model.renormalize_()
        scores = model(*g.tensors(device))
        loss = F.cross_entropy(scores, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach()
        steps += 1
        if progress and steps % 200 == 0:
            bar.set_postfix(loss=f"{total.item() / steps:.3f}")
    return float(total.item()) / max(steps, 1)
