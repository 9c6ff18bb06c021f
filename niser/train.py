"""Training and evaluation of NISER: seeded, checkpointed, CPU by default, CUDA when available.

Model selection never looks at the test set. ``train`` fits on ``data.train`` and, after every
epoch, measures Recall@20 on ``data.valid`` (carved from the training period: the most recent
sessions, see ``niser.data.carve_validation``, when the data brings none). The epoch with the
best validation Recall@20 so far (strictly better than every earlier epoch) is kept; training
stops after ``patience`` epochs in a row without a better one, or after ``epochs``. The model
returned holds the chosen epoch's weights, and the test set is evaluated once, for that epoch.
With ``refit`` the chosen number of epochs is then trained again from the same seed on every
training sample (the fitted and the validation ones: the newest sessions, nearest the test
period), and that model is the one tested and returned; its validation metrics stay those of the
selection run (the refit model has seen the validation sessions).

Precision (``TrainConfig.precision``, see ``niser.precision``): the training scoring product runs
in bf16 where the hardware has bf16 units (``auto``); the loss, softmax and weights stay float32.
Validation and test use the float32 top-k on either path (``NISER.topk``; on the bf16 path
evaluation batches take their candidates from a bf16 product, ``niser.scoring``).
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from niser.bounds import AtMost
from niser.data import VALID_FRACTION, Samples, SessionData, carve_validation
from niser.graph import build_batch
from niser.metrics import evaluate, metric_names
from niser.model import NISER
from niser.precision import Precision, PrecisionChoice, choose_precision
from niser.scoring import softmax_loss

log = logging.getLogger(__name__)
SELECTION_METRIC = "recall_20"  # validation metric that chooses the epoch
MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 65_536
MAX_DIM = 4096
MAX_POSITIONS = 1024
MAX_GNN_STEPS = 16
MAX_K = 1000
MAX_KS = 16
EPOCHS_WHY = "an epoch of the smallest data takes seconds, 1000 of the real logs take weeks"
Epochs = Annotated[int, AtMost(MAX_EPOCHS, EPOCHS_WHY)]
BatchSize = Annotated[int, AtMost(MAX_BATCH_SIZE, "a batch's scores are batch x n_items floats "
                                                  "(65,536 x 40,000 items is 10 GB)")]
Dim = Annotated[int, AtMost(MAX_DIM, "the item embeddings are n_items x dim floats, four copies "
                                     "of them with the gradients and Adam's moments")]


class TrainConfig(BaseModel):
    """Every training hyperparameter; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    epochs: Epochs = Field(5, ge=1, description="Passes over the augmented training samples.")
    batch_size: BatchSize = Field(100, ge=1, description="Training samples per optimizer step.")
    dim: Dim = Field(100, ge=2, description="Embedding size d.")
    lr: float = Field(1e-3, gt=0, le=1, description="Adam learning rate.")
    weight_decay: float = Field(1e-5, ge=0, le=1, description="Adam L2 weight decay.")
    lr_step: Epochs = Field(2, ge=1, description="Epochs between learning-rate decays.")
    lr_gamma: float = Field(0.1, gt=0, le=1, description="Learning-rate decay factor.")
    max_positions: Annotated[int, AtMost(MAX_POSITIONS, "sessions are tens of clicks")] = Field(
        12, ge=1, description="Rows of the positional embedding.")
    long_sessions: Literal["truncate", "clamp"] = Field(
        "truncate", description="Sessions longer than max_positions: keep the most recent "
        "clicks (truncate) or keep all and share the oldest position (clamp).")
    sigma: float = Field(16.0, gt=0, description="Scale applied to cosine scores.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on item embeddings.")
    gnn_steps: Annotated[int, AtMost(MAX_GNN_STEPS, "each step is one more GRU pass over every "
                                                    "session graph")] = Field(
        1, ge=1, description="Gated GNN propagation steps.")
    seed: int = Field(0, description="Seed for weights, shuffling and dropout.")
    device: str = Field("auto", description="'auto' (CUDA when available), 'cpu' or 'cuda[:n]'.")
    eval_batch_size: BatchSize = Field(500, ge=1, description="Samples per evaluation batch.")
    ks: Annotated[tuple[Annotated[int, Field(ge=1), AtMost(MAX_K, "a recommender lists tens of "
                                                          "items")], ...],
                  AtMost(MAX_KS, "a metric pair per cut-off", items=True)] = Field(
        (10, 20), min_length=1, description="Cut-offs for Recall@K and MRR@K.")
    patience: Epochs = Field(3, ge=1, description="Stop after this many epochs in a row without "
                             "a better validation Recall@20 (3 >= lr_step by default, so a "
                             "learning-rate decay always gets an epoch to show its effect).")
    precision: Precision = Field("auto", description="Scoring arithmetic: 'auto' (bf16 where "
                                 "the hardware has bf16 units, else fp32), 'fp32' or 'bf16'.")
    refit: bool = Field(False, description="After choosing the epoch count on validation, "
                        "train that many epochs again on every training sample (validation "
                        "sessions included) and test that model.")
    max_batches: int | None = Field(None, ge=1, description="Stop every epoch after this many "
                                    "batches (a timing slice); None trains on every sample.")


def final_metric_names(ks: Sequence[int]) -> list[str]:
    """The metrics ``TrainResult.final`` carries for cut-offs ``ks``: validation ``val_*`` (what
    selection and the registry compare on) and test (reported, never compared)."""
    names = metric_names(ks)
    return [f"val_{n}" for n in names] + names


def check_compared_metric(metric: str, ks: Sequence[int]) -> str:
    """``metric`` when it is a validation metric of ``final_metric_names(ks)``, else
    ``ValueError`` naming ``metric`` and the valid names (a test metric is refused: model
    selection never looks at the test set). Call it before anything is trained."""
    valid = [n for n in final_metric_names(ks) if n.startswith("val_")]
    if metric not in valid:
        why = ("is a test metric, and selection never looks at the test set"
               if metric in final_metric_names(ks) else "is not a metric the evaluation computes")
        raise ValueError(f"metric={metric!r} {why}; valid with ks={tuple(ks)}: "
                         f"{', '.join(valid)}")
    return metric


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


def topk_fn(model: NISER, config: TrainConfig, bf16: bool = False
            ) -> Callable[[Samples, int], np.ndarray]:
    """A scorer for ``evaluate``: the model's float32 top-k item indices for a batch of samples
    (with ``bf16``, candidates chosen by a bf16 product; see ``niser.scoring``)."""
    device = next(model.parameters()).device

    def score(batch: Samples, k: int) -> np.ndarray:
        model.eval()
        g = build_batch(batch.items, batch.offsets, config.max_positions, config.long_sessions)
        _, index = model.topk(k, *g.tensors(device), bf16=bf16)
        return index.cpu().numpy()

    return score


@dataclass
class EpochResult:
    """One epoch: training loss and times, and the validation metrics (empty when skipped)."""

    epoch: int
    loss: float
    train_seconds: float
    samples_per_second: float
    eval_seconds: float
    validation: dict[str, float]

    def as_metrics(self) -> dict[str, float]:
        """Per-epoch MLflow metrics; validation metrics carry the prefix ``val_``."""
        return {"loss": self.loss, "epoch_seconds": self.train_seconds,
                "samples_per_second": self.samples_per_second,
                "eval_seconds": self.eval_seconds,
                **{f"val_{k}": v for k, v in self.validation.items()}}


@dataclass
class TrainResult:
    """The chosen epoch's model, the history, and the test metrics measured once for it."""

    model: NISER
    config: TrainConfig
    history: list[EpochResult] = field(default_factory=list)
    best_epoch: int = 0
    test: dict[str, float] = field(default_factory=dict)
    test_seconds: float = 0.0
    stopped_early: bool = False
    precision: PrecisionChoice = field(
        default_factory=lambda: PrecisionChoice("fp32", "not recorded"))
    split: dict[str, int | str] = field(default_factory=dict)  # the fitting/validation split
    refit_history: list[EpochResult] = field(default_factory=list)  # with config.refit

    @property
    def validation(self) -> dict[str, float]:
        """Validation metrics of the chosen epoch."""
        return self.history[self.best_epoch - 1].validation if self.best_epoch else {}

    @property
    def final(self) -> dict[str, float]:
        """What a registered model carries: test metrics (``recall_20``, ...), the chosen
        epoch's validation metrics (``val_recall_20``, ...) and ``best_epoch``."""
        if not self.best_epoch:
            return {}
        return {**self.test, **{f"val_{k}": v for k, v in self.validation.items()},
                "best_epoch": float(self.best_epoch)}


EpochCallback = Callable[[EpochResult], None]


@dataclass
class _Selection:
    """Early-stopping state: the best epoch so far, its weights, epochs since it."""

    best_epoch: int = 0
    best_value: float = float("-inf")
    best_state: dict[str, torch.Tensor] | None = None
    since_best: int = 0
    stopped: bool = False

    def update(self, epoch: int, value: float | None, model: NISER, patience: int) -> None:
        """Record epoch ``epoch`` with validation ``value`` (None: not validated, so it is kept
        as the latest); stop after ``patience`` epochs in a row without a better one."""
        if value is None or value > self.best_value:
            self.best_epoch, self.since_best = epoch, 0
            self.best_value = float("-inf") if value is None else value
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return
        self.since_best += 1
        self.stopped = self.since_best >= patience


def train(
    data: SessionData,
    config: TrainConfig | None = None,
    on_epoch: EpochCallback | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    evaluate_each_epoch: bool = True,
) -> TrainResult:
    """Train NISER, choose the epoch on validation, evaluate the test set once for it.

    See the module docstring for the selection rule. Without ``evaluate_each_epoch`` no epoch
    is validated until the last, which is then chosen. With ``checkpoint_dir`` the model,
    optimizer, scheduler and selection state are saved after every epoch (``last.pt``);
    ``resume`` continues from it (a run that had stopped early is not trained further).
    """
    config = config or TrainConfig()
    device = resolve_device(config.device)
    precision = choose_precision(config.precision, device)
    log.info("precision: %s (%s)", precision.path, precision.reason)
    torch.set_flush_denormal(True)  # denormals slow CPU training ~2x late in an epoch
    data, source = _with_validation(data)
    assert data.valid is not None
    model, opt, sched = _fresh(data.n_items, config, device)
    result = TrainResult(model, config, precision=precision, split={
        "n_fit_samples": len(data.train), "n_valid_samples": len(data.valid),
        "valid_hash": data.valid.fingerprint(), "valid_source": source})
    sel = _Selection()
    start_epoch = 0
    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
    if ckpt and resume and ckpt.exists():
        start_epoch = _restore(ckpt, device, model, opt, sched, result, sel)
    rng = np.random.default_rng(config.seed)
    for _ in range(start_epoch):
        rng.permutation(len(data.train))  # keep the shuffle sequence of an uninterrupted run
    for epoch in range(start_epoch, config.epochs):
        if sel.stopped:
            break
        t0 = time.perf_counter()
        loss, seen = _train_epoch(model, opt, data.train, config, rng, device, progress, epoch,
                                  precision.bf16)
        sched.step()
        train_s = time.perf_counter() - t0
        validation: dict[str, float] = {}
        eval_s = 0.0
        if evaluate_each_epoch or epoch == config.epochs - 1:
            t1 = time.perf_counter()
            validation = evaluate(topk_fn(model, config, precision.bf16), data.valid, config.ks,
                                  config.eval_batch_size, progress, f"validate {epoch + 1}")
            eval_s = time.perf_counter() - t1
        res = EpochResult(epoch + 1, loss, train_s, seen / train_s, eval_s, validation)
        result.history.append(res)
        sel.update(epoch + 1, validation.get(SELECTION_METRIC) if validation else None, model,
                   config.patience)
        log.info("epoch %d: %s%s", epoch + 1, res.as_metrics(),
                 " (stopping: no better validation epoch)" if sel.stopped else "")
        if ckpt:
            _save(ckpt, model, opt, sched, result, sel, device)
        if on_epoch:
            on_epoch(res)
    if sel.best_state is not None:
        model.load_state_dict(sel.best_state)
    result.best_epoch, result.stopped_early = sel.best_epoch, sel.stopped
    if config.refit and sel.best_epoch:
        every = Samples.concat([data.train, data.valid])
        model = result.model = _refit(every, data.n_items, config, sel.best_epoch, device,
                                      precision.bf16, progress, result.refit_history)
    t2 = time.perf_counter()
    result.test = evaluate(topk_fn(model, config, precision.bf16), data.test, config.ks,
                           config.eval_batch_size, progress, "test")
    result.test_seconds = time.perf_counter() - t2
    log.info("chosen epoch %d of %d; test %s", sel.best_epoch, len(result.history), result.test)
    model.eval()
    return result


def _fresh(n_items: int, config: TrainConfig, device: torch.device
           ) -> tuple[NISER, torch.optim.Optimizer, Any]:
    """A seeded model, its Adam optimizer and step schedule."""
    seed_everything(config.seed)
    model = build_model(n_items, config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                           fused=device.type in ("cpu", "cuda"))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=config.lr_step, gamma=config.lr_gamma)
    return model, opt, sched


def _refit(every: Samples, n_items: int, config: TrainConfig, epochs: int, device: torch.device,
           bf16: bool, progress: bool, history: list[EpochResult]) -> NISER:
    """``epochs`` epochs from the seed on ``every`` (the fitted and validation samples)."""
    model, opt, sched = _fresh(n_items, config, device)
    rng = np.random.default_rng(config.seed)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        loss, seen = _train_epoch(model, opt, every, config, rng, device, progress, epoch, bf16)
        sched.step()
        train_s = time.perf_counter() - t0
        res = EpochResult(epoch + 1, loss, train_s, seen / train_s, 0.0, {})
        history.append(res)
        log.info("refit epoch %d on %d samples: %s", epoch + 1, seen, res.as_metrics())
    return model


def _with_validation(data: SessionData) -> tuple[SessionData, str]:
    if data.valid is not None:
        return data, "data.valid"
    return carve_validation(data), f"last {VALID_FRACTION:.0%} of training sessions"


def _save(ckpt: Path, model: NISER, opt: torch.optim.Optimizer, sched: Any,
          result: TrainResult, sel: _Selection, device: torch.device) -> None:
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "epoch": len(result.history),
                "config": result.config.model_dump(),
                "history": [vars(h) for h in result.history], "selection": vars(sel),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None},
               ckpt)


def _restore(ckpt: Path, device: torch.device, model: NISER, opt: torch.optim.Optimizer,
             sched: Any, result: TrainResult, sel: _Selection) -> int:
    """Load ``ckpt`` into the training objects; returns the epoch to continue from."""
    state = torch.load(ckpt, map_location=device, weights_only=True)  # no code runs on load
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    result.history = [EpochResult(**h) for h in state["history"]]
    for key, value in state["selection"].items():
        setattr(sel, key, copy.deepcopy(value))
    torch.set_rng_state(state["torch_rng"].cpu())  # dropout continues as uninterrupted
    if state.get("cuda_rng") is not None and device.type == "cuda":
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    log.info("resumed from %s at epoch %d", ckpt, state["epoch"])
    return int(state["epoch"])


def _train_epoch(
    model: NISER, opt: torch.optim.Optimizer, train: Samples, config: TrainConfig,
    rng: np.random.Generator, device: torch.device, progress: bool, epoch: int, bf16: bool,
) -> tuple[float, int]:
    """One pass (or ``config.max_batches`` batches); returns the mean loss and samples seen."""
    model.train()
    order = rng.permutation(len(train))
    total = torch.zeros((), device=device)
    steps = seen = 0
    batches = range(0, len(order), config.batch_size)
    if config.max_batches is not None:
        batches = batches[: config.max_batches]
    bar = tqdm(batches, desc=f"epoch {epoch + 1}", disable=not progress, leave=False,
               mininterval=2.0)
    for start in bar:
        batch = train.subset(order[start : start + config.batch_size])
        g = build_batch(batch.items, batch.offsets, config.max_positions, config.long_sessions)
        targets = torch.from_numpy(batch.targets).to(device)
        model.renormalize_()
        table = model.item_table()  # (N + 1, d): the weight itself in training
        rows = table.detach().requires_grad_()  # the lookups' view: a sparse gradient of its own
        query = model.sigma * model.session_embedding(rows, *g.tensors(device))  # (B, d)
        loss = softmax_loss(query, table, targets, bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        assert table.grad is not None and rows.grad is not None
        table.grad.add_(rows.grad)  # the looked-up rows into the dense scoring gradient, in place
        opt.step()
        total += loss.detach()
        steps += 1
        seen += len(batch)
        if progress and steps % 200 == 0:
            bar.set_postfix(loss=f"{total.item() / steps:.3f}")
    return float(total.item()) / max(steps, 1), seen
