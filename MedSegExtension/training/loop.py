"""The training loop: :class:`TrainingLoop` drives any ``batches(start_step)`` iterator.

It owns the optimizer, schedule, AMP, DDP, validation every N steps, best/last checkpoints,
resume, the time budget, early stop and cancel. :func:`~.trainer.train` drives it with patches
of prepared cases; the sparse annotation mode drives it with its own sampler and weight maps.
Batches are ``{"image", "target", "weight"}`` dicts; reproducibility across an interruption:
:mod:`.rng`; what a checkpoint may hold: :mod:`.checkpoints`. With a ``sample_weighting``
module (:mod:`.sample_quality`, QAM/OCM) the loss is taken per sample and weighted by it; the
module trains jointly (its own parameter group and learning rate) and is saved in ``last.pt``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..errors import CancelledError, InputError, MedSegError, first_line
from ..progress import CancelToken, ProgressCallback, no_progress
from .checkpoints import BEST_CHECKPOINT, LAST_CHECKPOINT, read_checkpoint, write_checkpoint
from .distributed import DistInfo, any_true, barrier
from .optimization import autocast, build_optimizer, build_scheduler, use_amp
from .rng import rng_states, set_rng_states, step_seed
from .sample_quality import SampleQualityWeighting
from .validation import Validator

Batches = Callable[[int], Iterable[dict[str, torch.Tensor]]]


@dataclass
class LoopOptions:
    """Optimization settings of :class:`TrainingLoop` (the ``training`` config section's subset)."""

    steps: int
    lr: float = 5e-4
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str = "poly"
    warmup_steps: int = 0
    grad_clip: float | None = 12.0
    val_every: int = 250
    checkpoint_every: int | None = None
    early_stop_patience: int | None = None
    max_seconds: float | None = None
    max_cpu_seconds: float | None = None  # time.process_time() of this session: all its threads
    seed: int = 0
    amp: bool | str = "auto"


@dataclass
class LoopResult:
    step: int
    seconds: float  # this session
    total_seconds: float  # all sessions of a resumed run
    stopped: str  # "steps", "time" or "early_stop"
    best_score: float | None
    best_step: int
    best_metrics: dict[str, Any] | None
    last_metrics: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)


def _format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class TrainingLoop:
    """Optimizes ``network`` with ``loss`` on ``batches(start_step)`` for ``options.steps`` steps.

    ``validate(network) -> (score, metrics)`` (higher is better) runs on rank 0 every
    ``val_every`` steps and at the end; the best weights are kept in memory and in
    ``checkpoint_dir/best.pt``. ``checkpoint_dir/last.pt`` holds everything needed to resume
    (model, optimizer, scheduler, step, best score, RNG states) and is written atomically every
    ``checkpoint_every`` steps, at the end, and on cancel.
    """

    def __init__(
        self,
        network: nn.Module,
        loss: Callable[..., torch.Tensor],
        batches: Batches,
        options: LoopOptions,
        *,
        device: torch.device | str = "cpu",
        validate: Validator | None = None,
        checkpoint_dir: str | Path | None = None,
        dist_info: DistInfo | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        log: Callable[[str], None] | None = None,
        config_hash: str = "",
        on_step: Callable[[int, float], None] | None = None,
        extra_state: dict[str, Any] | None = None,
        sample_weighting: SampleQualityWeighting | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.dist = dist_info or DistInfo()
        self.options = options
        self.module = network.to(self.device)
        self.model: nn.Module = self.module
        if self.dist.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.module, device_ids=device_ids)
        self.loss, self.batches, self.validate = loss, batches, validate
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.progress = progress or no_progress
        self.cancel = cancel or CancelToken()
        self.log = log or (lambda message: None)
        self.config_hash, self.on_step = config_hash, on_step
        self.extra_state = extra_state if extra_state is not None else {}
        self.amp = use_amp(options.amp, self.device)
        parameters: list[Any] = [p for p in self.module.parameters() if p.requires_grad]
        self.sample_weighting = sample_weighting
        self.weigh_samples: nn.Module | None = None
        if sample_weighting is not None:
            self.weigh_samples = sample_weighting.to(self.device)
            if self.dist.enabled:
                self.weigh_samples = nn.parallel.DistributedDataParallel(
                    sample_weighting, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            parameters = [{"params": parameters},
                          {"params": list(sample_weighting.parameters()), "lr": sample_weighting.lr}]
        self.optimizer = build_optimizer(options.optimizer, parameters, options.lr, options.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, options.schedule, options.steps, options.warmup_steps)
        self.step = 0
        self.best_score: float | None = None
        self.best_step = 0
        self.best_metrics: dict[str, Any] | None = None
        self.last_metrics: dict[str, Any] | None = None
        self.validated_step = -1
        self.bad_validations = 0
        self.history: list[dict[str, Any]] = []
        self.previous_seconds = 0.0
        self.ema_loss: float | None = None
        self._best_state: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "medseg_version": __version__,
            "step": self.step,
            "model": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best_score": self.best_score,
            "best_step": self.best_step,
            "best_metrics": self.best_metrics,
            "last_metrics": self.last_metrics,
            "validated_step": self.validated_step,
            "bad_validations": self.bad_validations,
            "history": self.history,
            "seconds": self.previous_seconds + self._session_seconds(),
            "ema_loss": self.ema_loss,
            "rng": rng_states(self.device),
            "config_hash": self.config_hash,
            "extra": self.extra_state,
            **({} if self.sample_weighting is None else {"sample_weighting": {
                k: v.detach().cpu() for k, v in self.sample_weighting.state_dict().items()}}),
        }

    def save_checkpoint(self, name: str = LAST_CHECKPOINT) -> Path | None:
        """Write a checkpoint atomically (rank 0 only); returns its path."""
        if self.checkpoint_dir is None or not self.dist.is_main:
            return None
        return write_checkpoint(self.checkpoint_dir / name, self.state_dict())

    def resume(self, path: str | Path, state: dict[str, Any] | None = None) -> int:
        """Restore everything from a ``last.pt`` (or its ``state``, already read); returns the step training continues from."""
        path = Path(path)
        if state is None:
            state = read_checkpoint(path)  # weights_only: a planted file cannot run code
        if self.config_hash and state.get("config_hash") and state["config_hash"] != self.config_hash:
            raise InputError(f"{path}: checkpoint was made with a different config (model, data or training "
                             f"settings changed); use --restart to start over")
        try:
            try:
                self.module.load_state_dict(state["model"])
            except RuntimeError as exc:
                raise InputError(f"{path}: checkpoint does not fit this network ({first_line(exc)})") from None
            if self.sample_weighting is not None:
                self.sample_weighting.load_state_dict(state["sample_weighting"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.step = int(state["step"])
            self.best_score, self.best_step = state["best_score"], int(state["best_step"])
            self.best_metrics, self.last_metrics = state["best_metrics"], state["last_metrics"]
            self.validated_step, self.bad_validations = int(state["validated_step"]), int(state["bad_validations"])
            self.history, self.previous_seconds = list(state["history"]), float(state["seconds"])
            self.ema_loss = state["ema_loss"]
            self.extra_state.update(state.get("extra") or {})
            set_rng_states(state["rng"], self.device)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            raise InputError(f"{path}: incomplete or damaged checkpoint ({type(exc).__name__}: {first_line(exc)}); "
                             f"use --restart") from None
        best = path.parent / BEST_CHECKPOINT
        if self.best_score is not None and best.is_file():
            self._best_state = read_checkpoint(best)["model"]
        return self.step

    def best_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights of the best validation (the last weights when nothing was validated)."""
        if self._best_state is not None:
            return self._best_state
        return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}

    # ------------------------------------------------------------ the loop

    def _session_seconds(self) -> float:
        return time.monotonic() - self._started if hasattr(self, "_started") else 0.0

    def _run_validation(self) -> bool:
        """Validate (rank 0); True when the early-stop patience has run out."""
        self.validated_step = self.step
        if self.validate is None or not self.dist.is_main:
            return False
        score, metrics = self.validate(self.module)
        self.module.train()
        metrics = {"step": self.step, "score": score, **metrics}
        self.last_metrics = metrics
        self.history.append({"step": self.step, "loss": self.ema_loss, "score": score})
        improved = self.best_score is None or score > self.best_score
        if improved:
            self.best_score, self.best_step, self.best_metrics = score, self.step, metrics
            self.bad_validations = 0
            self._best_state = {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}
            if self.checkpoint_dir is not None:
                write_checkpoint(self.checkpoint_dir / BEST_CHECKPOINT,
                                 {"step": self.step, "score": score, "metrics": metrics, "model": self._best_state})
        else:
            self.bad_validations += 1
        self.log(f"step {self.step}: validation score {score:.4f}" + (" (best)" if improved else
                                                                      f" (best {self.best_score:.4f} at {self.best_step})"))
        patience = self.options.early_stop_patience
        return bool(patience and self.bad_validations >= patience)

    def _report(self, loss: float) -> None:
        steps, o = self.options.steps, self.options
        elapsed = self._session_seconds()
        done = self.step - self._start_step
        fraction = self.step / steps
        eta = elapsed / done * (steps - self.step) if done else float("nan")
        if o.max_seconds:
            fraction = max(fraction, min(elapsed / o.max_seconds, 1.0))
            eta = min(eta, o.max_seconds - elapsed) if done else o.max_seconds - elapsed
        best = f" best {self.best_score:.3f}" if self.best_score is not None else ""
        eta_text = f" ETA {_format_seconds(eta)}" if math.isfinite(eta) else ""
        self.progress(fraction, f"step {self.step}/{steps} loss {loss:.4f}{eta_text}{best}")

    def run(self) -> LoopResult:
        """Train from the current step to ``options.steps`` (or the time budget / early stop)."""
        o = self.options
        self._started, self._cpu_started = time.monotonic(), time.process_time()
        self._start_step = self.step
        stopped = "steps"
        iterator: Iterator[dict[str, torch.Tensor]] = iter(self.batches(self.step))
        self.model.train()
        try:
            while self.step < o.steps:
                cancelled = self.cancel.cancelled
                (cancelled,) = any_true([cancelled], self.dist, self.device)
                if cancelled:
                    saved = self.save_checkpoint()
                    where = f"; checkpoint {saved} saved, continue with --resume" if saved else ""
                    raise CancelledError(f"training cancelled at step {self.step}{where}")
                batch = next(iterator)
                loss_value = self._train_step(batch)
                self.step += 1
                self.ema_loss = loss_value if self.ema_loss is None else 0.9 * self.ema_loss + 0.1 * loss_value
                early = False
                if self.step % o.val_every == 0 or self.step == o.steps:
                    early = self._run_validation()
                out_of_time = bool(o.max_seconds) and self._session_seconds() >= float(o.max_seconds or 0)
                out_of_time = out_of_time or (bool(o.max_cpu_seconds) and
                                              time.process_time() - self._cpu_started >= float(o.max_cpu_seconds or 0))
                nonfinite = not math.isfinite(loss_value)
                early, out_of_time, nonfinite = any_true([early, out_of_time, nonfinite], self.dist, self.device)
                if nonfinite:
                    raise MedSegError(f"training diverged: the loss is {loss_value} at step {self.step} "
                                      f"(lower training.lr, or check the images' intensities)")
                if o.checkpoint_every and self.step % o.checkpoint_every == 0 and self.step < o.steps:
                    self.save_checkpoint()
                self._report(self.ema_loss)
                if self.on_step is not None:
                    self.on_step(self.step, loss_value)
                if early or out_of_time:
                    stopped = "early_stop" if early else "time"
                    self.log(f"stopping at step {self.step}: " + ("no improvement in "
                             f"{o.early_stop_patience} validations" if early else "time budget of "
                             + (f"{o.max_seconds} s" if o.max_seconds else f"{o.max_cpu_seconds} CPU s")))
                    break
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        if self.validated_step != self.step:
            self._run_validation()
        self.save_checkpoint()
        barrier(self.dist)
        seconds = self._session_seconds()
        return LoopResult(self.step, seconds, self.previous_seconds + seconds, stopped, self.best_score,
                          self.best_step, self.best_metrics, self.last_metrics, list(self.history))

    def _train_step(self, batch: dict[str, torch.Tensor]) -> float:
        torch.manual_seed(step_seed(self.options.seed, self.dist.rank, self.step))
        non_blocking = self.device.type == "cuda"
        image = batch["image"].to(self.device, non_blocking=non_blocking)
        target = batch["target"].to(self.device, non_blocking=non_blocking)
        weight = batch.get("weight")
        weight = None if weight is None else weight.to(self.device, non_blocking=non_blocking)
        self.optimizer.zero_grad(set_to_none=True)
        set_step = getattr(self.loss, "set_step", None)
        if set_step is not None:  # a loss that changes during training (training.hard_negative)
            set_step(self.step)
        with autocast(self.device, self.amp):
            outputs = self.model(image)
        if self.weigh_samples is None:
            loss = self.loss(outputs, target, weight)
        else:
            loss = self.weigh_samples(image, target, self.loss(outputs, target, weight, reduction="none"), weight)
        loss.backward()
        if self.options.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.options.grad_clip)
            if self.sample_weighting is not None:
                torch.nn.utils.clip_grad_norm_(self.sample_weighting.parameters(), self.options.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())
