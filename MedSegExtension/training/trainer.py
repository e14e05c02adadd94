"""The training loop, checkpoints, validation, and :func:`train`, the whole ``medseg train`` as a function.

Two levels:

- :func:`train` takes a config (file, dict or :class:`TrainConfig`), checks and prepares the
  data, trains, and writes the model folder with :func:`save_model`;
- :class:`TrainingLoop` is the bare loop (optimizer, schedule, AMP, DDP, validation every N
  steps, best/last checkpoints, resume, time budget, early stop, cancel), driven by any
  ``batches(start_step)`` iterator of ``{"image", "target", "weight"}`` dicts; the sparse
  annotation mode drives it with its own sampler and weight maps.

Reproducibility: every batch is a function of (seed, rank, step) and the torch RNG is reseeded
from (seed, rank, step) before each step, so on the CPU a run interrupted and resumed from a
checkpoint ends with exactly the weights of an uninterrupted run. The checkpoint also holds
the RNG states, for code that draws from the global generators.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..errors import CancelledError, InputError, MedSegError
from ..io.atomic import atomic_output
from ..models.card import CARD_FILE, ModelCard
from ..progress import CancelToken, ProgressCallback, ScaledProgress, no_progress
from .config import TrainConfig, config_from_dict, load_config
from .distributed import DistInfo, any_true, barrier, init_distributed, shutdown
from .losses import build_loss

CHECKPOINT_FORMAT = 1
Batches = Callable[[int], Iterable[dict[str, torch.Tensor]]]
Validator = Callable[[nn.Module], tuple[float, dict[str, Any]]]


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


def step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(rank), int(step), 0x5EED]).generate_state(1)[0])


def lr_factor(schedule: str, step: int, steps: int, warmup: int = 0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(max(step - warmup, 0) / max(steps - warmup, 1), 1.0)
    if schedule == "poly":
        return (1.0 - progress) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def use_amp(choice: bool | str, device: torch.device) -> bool:
    """bf16 autocast: on CUDA only (``auto``), never on the CPU or MPS."""
    if device.type != "cuda":
        return False
    if choice == "auto":
        return bool(torch.cuda.is_bf16_supported())
    return bool(choice)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cuda", dtype=torch.bfloat16) if enabled and device.type == "cuda" else contextlib.nullcontext()


def _format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _rng_states(device: torch.device) -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


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
        parameters = [p for p in self.module.parameters() if p.requires_grad]
        if options.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                parameters, lr=options.lr, momentum=0.99, nesterov=True, weight_decay=options.weight_decay)
        elif options.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(parameters, lr=options.lr, weight_decay=options.weight_decay)
        else:
            raise InputError(f"unknown optimizer {options.optimizer!r} (use adamw or sgd)")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(options.schedule, s, options.steps, options.warmup_steps))
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
            "format": CHECKPOINT_FORMAT,
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
            "rng": _rng_states(self.device),
            "config_hash": self.config_hash,
            "extra": self.extra_state,
        }

    def save_checkpoint(self, name: str = "last.pt") -> Path | None:
        """Write a checkpoint atomically (rank 0 only); returns its path."""
        if self.checkpoint_dir is None or not self.dist.is_main:
            return None
        path = self.checkpoint_dir / name
        with atomic_output(path) as tmp:
            torch.save(self.state_dict(), tmp)
        return path

    def resume(self, path: str | Path) -> int:
        """Restore everything from a ``last.pt``; returns the step training continues from."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no checkpoint to resume from")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # torch raises many types for a bad file
            raise InputError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise InputError(f"{path}: not a MedSeg training checkpoint")
        if self.config_hash and state.get("config_hash") and state["config_hash"] != self.config_hash:
            raise InputError(f"{path}: checkpoint was made with a different config (model, data or training "
                             f"settings changed); use --restart to start over")
        try:
            self.module.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise InputError(f"{path}: checkpoint does not fit this network ({str(exc).splitlines()[0]})") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.best_score, self.best_step = state["best_score"], int(state["best_step"])
        self.best_metrics, self.last_metrics = state["best_metrics"], state["last_metrics"]
        self.validated_step, self.bad_validations = int(state["validated_step"]), int(state["bad_validations"])
        self.history, self.previous_seconds = list(state["history"]), float(state["seconds"])
        self.ema_loss = state["ema_loss"]
        self.extra_state.update(state.get("extra") or {})
        _set_rng_states(state["rng"], self.device)
        best = path.parent / "best.pt"
        if self.best_score is not None and best.is_file():
            self._best_state = torch.load(best, map_location="cpu", weights_only=True)["model"]
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
                with atomic_output(self.checkpoint_dir / "best.pt") as tmp:
                    torch.save({"format": CHECKPOINT_FORMAT, "step": self.step, "score": score,
                                "metrics": metrics, "model": self._best_state}, tmp)
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
        self._started = time.monotonic()
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
                             f"{o.early_stop_patience} validations" if early else f"time budget of {o.max_seconds} s"))
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
        with autocast(self.device, self.amp):
            outputs = self.model(image)
        loss = self.loss(outputs, target, weight)
        loss.backward()
        if self.options.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.options.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())


# ------------------------------------------------------------------ validation


def dice_scores(prediction: np.ndarray, reference: np.ndarray, num_classes: int) -> list[float]:
    """Dice of channels 1..num_classes-1; NaN where a class is absent from both."""
    scores = []
    for channel in range(1, num_classes):
        p, r = prediction == channel, reference == channel
        total = int(p.sum()) + int(r.sum())
        scores.append(float("nan") if total == 0 else 2.0 * int((p & r).sum()) / total)
    return scores


def make_validator(cases: list[Any], card: ModelCard, patch_size_kji: tuple[int, int, int], device: torch.device,
                   amp: bool = False, overlap: float = 0.25, batch_size: int = 2) -> Validator:
    """Sliding-window (MONAI, Gaussian blending) prediction of each validation case on the model grid.

    The score is the mean over labels of the per-label Dice averaged over cases (cases where a
    label is absent from both prediction and reference do not count for it).
    """
    from monai.inferers import sliding_window_inference

    names = [label.name for label in card.labels]

    def validate(network: nn.Module) -> tuple[float, dict[str, Any]]:
        network.eval()
        per_case = []
        with torch.no_grad(), autocast(device, amp):
            for case in cases:
                image = torch.from_numpy(case.image)[None]  # stays on the CPU; windows go to the device
                logits = sliding_window_inference(image, patch_size_kji, batch_size, network, overlap=overlap,
                                                  mode="gaussian", sw_device=device, device="cpu")
                prediction = logits.argmax(1)[0].cpu().numpy()
                per_case.append(dice_scores(prediction, case.labels, card.num_classes))
        table = np.array(per_case, dtype=np.float64).reshape(len(cases), len(names))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a label absent from every case: NaN
            per_label = np.nanmean(table, axis=0) if len(cases) else np.full(len(names), np.nan)
        valid = per_label[np.isfinite(per_label)]
        score = float(valid.mean()) if valid.size else 0.0
        dice = {name: (None if not math.isfinite(v) else round(float(v), 4)) for name, v in zip(names, per_label, strict=False)}
        return score, {"mean_dice": round(score, 4), "dice": dice}

    return validate


# ------------------------------------------------------------------ train()


def resolve_output(config: TrainConfig, bundled: bool = False) -> tuple[Path, Path]:
    """(model folder, checkpoint folder), after the rules on where training may write.

    Without ``bundled`` the model goes to ``output`` or the user models dir, never into the
    bundled models dir. With ``bundled`` (the retrain command) it goes to the bundled dir and
    the checkpoints stay in the user's MedSeg folder. An existing model folder is only
    replaced by a model of the same name.
    """
    from ..models.registry import bundled_models_dir, medseg_home, user_models_dir

    name = config.card.name
    bundled_root = bundled_models_dir().resolve()
    if bundled:
        folder = config.output or bundled_root / name
        if folder.resolve().parent != bundled_root:
            raise InputError(f"{config.source}: with --bundled the model goes to {bundled_root / name}; "
                             f"remove 'output' from the config")
        checkpoints = config.checkpoint_dir or medseg_home() / "checkpoints" / name
    else:
        folder = config.output or user_models_dir() / name
        resolved = folder.resolve()
        if resolved == bundled_root or bundled_root in resolved.parents:
            raise InputError(f"{folder}: is inside the bundled models folder {bundled_root}; training writes there "
                             f"only with `medseg train CONFIG --bundled` (the retrain command)")
        if name in _bundled_names(bundled_root):
            raise InputError(f"{config.source}: model name {name!r} belongs to a bundled model; give your model "
                             f"another name (or retrain the bundled one with --bundled)")
        checkpoints = config.checkpoint_dir or folder / "checkpoints"
    if (folder / CARD_FILE).is_file():
        existing = ModelCard.load(folder)
        if existing.name != name:
            raise InputError(f"{folder}: holds model {existing.name!r}; refusing to overwrite it with model "
                             f"{name!r} (choose another output folder or model name)")
    return folder, checkpoints


def _bundled_names(root: Path) -> set[str]:
    from ..errors import ModelError

    names = set()
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if (folder / CARD_FILE).is_file():
            try:
                names.add(ModelCard.load(folder).name)
            except ModelError:
                names.add(folder.name)
    return names


def _as_config(config: TrainConfig | dict[str, Any] | str | Path) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, dict):
        return config_from_dict(config, Path.cwd(), "config")
    return load_config(config)


def train(
    config: TrainConfig | dict[str, Any] | str | Path,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    *,
    resume: bool = False,
    restart: bool = False,
    bundled: bool = False,
    log: Callable[[str], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> ModelCard:
    """Train the model a config describes and write its folder; returns the saved card.

    ``resume`` continues from ``<checkpoints>/last.pt``; without it an existing ``last.pt`` is an
    error unless ``restart``. Under ``torchrun`` each process calls this; rank 0 writes.
    Raises :class:`InputError` (all data problems, one line each) before any training.
    """
    from ..inference.devices import resolve_device
    from ..models.registry import save_model
    from ..networks import build_network
    from .dataset import (
        PatchBatches,
        check_cases,
        iterate_batches,
        make_synthesizer,
        prepare_cases,
        split_validation,
    )

    cfg = _as_config(config)
    t, card_template = cfg.training, cfg.card
    progress = progress or no_progress
    cancel = cancel or CancelToken()
    log = log or (lambda message: None)
    device = resolve_device(t.device)
    info = init_distributed(device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    if not info.is_main:
        progress, log = no_progress, (lambda message: None)
    try:
        folder, checkpoint_dir = resolve_output(cfg, bundled)
        last = checkpoint_dir / "last.pt"
        if resume and not last.is_file():
            raise InputError(f"{last}: nothing to resume (no checkpoint); run without --resume")
        if not resume and last.is_file() and not restart:
            raise InputError(f"{last}: a checkpoint from an earlier run exists; pass --resume to continue it "
                             f"or --restart to start over")

        train_specs, val_specs = (cfg.data.cases, cfg.data.val_cases) if cfg.data.val_cases else split_validation(
            cfg.data.cases, cfg.data.val_fraction, t.seed)
        problems = check_cases(list(train_specs) + list(val_specs), card_template, cfg.data, cancel)
        if problems:
            raise InputError("\n".join(problems))
        synthesizer = make_synthesizer(cfg.data, card_template, t.seed) if any(c.synthesize for c in train_specs + val_specs) else None
        preparing = ScaledProgress(progress, 0.0, 0.05)
        train_cases = prepare_cases(train_specs, card_template, cfg.data, progress=ScaledProgress(preparing, 0, 0.8),
                                    cancel=cancel, check=False)
        val_cases = prepare_cases(val_specs, card_template, cfg.data, progress=ScaledProgress(preparing, 0.8, 1.0),
                                  cancel=cancel, synthesizer_for_validation=synthesizer, seed=t.seed, check=False)
        if not val_cases:
            log("no validation cases: the final weights are saved (give data.val_cases or data.val_fraction)")

        torch.manual_seed(t.seed)
        network = build_network(card_template.input_channels, card_template.num_classes, card_template.network)
        if t.init_from:
            _initialize_from(network, t.init_from, log)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        loss = build_loss(t.loss)
        patch = t.patch_size_kji
        dataset = PatchBatches(train_cases, card_template, patch, t.batch_size,
                               foreground_fraction=t.foreground_fraction, augmentation=t.augmentation,
                               seed=t.seed, rank=info.rank, steps=t.steps, synthesizer=synthesizer)
        amp = use_amp(t.amp, device)
        validate = make_validator(val_cases, card_template, patch, device, amp, t.val_overlap) if val_cases else None
        options = LoopOptions(**{f.name: getattr(t, f.name) for f in dataclasses.fields(LoopOptions)})
        loop = TrainingLoop(
            network, loss,
            lambda start: iterate_batches(dataset, start, t.steps, t.num_workers, pin_memory=device.type == "cuda"),
            options, device=device, validate=validate, checkpoint_dir=checkpoint_dir, dist_info=info,
            progress=ScaledProgress(progress, 0.05, 1.0), cancel=cancel, log=log, config_hash=cfg.config_hash(),
            on_step=on_step,
        )
        if resume:
            start = loop.resume(last)
            log(f"resuming from step {start} ({last})")
        elif info.is_main:  # --restart: no stale best.pt may outlive the run it came from
            for stale in (last, checkpoint_dir / "best.pt"):
                stale.unlink(missing_ok=True)
        result = loop.run()

        card = ModelCard.from_dict(card_template.to_dict(), source=cfg.source)
        card.training = _provenance(cfg, result, device, info, amp, train_specs, val_specs)
        if info.is_main:
            resolve_output(cfg, bundled)  # the folder may have changed during a long run
            network.load_state_dict(loop.best_state_dict())
            save_model(card, network, folder)
            progress(1.0, f"model {card.name!r} saved in {folder}")
        else:
            card.folder = folder
        barrier(info)
        return card
    finally:
        shutdown(info)


def _initialize_from(network: nn.Module, name_or_folder: str, log: Callable[[str], None]) -> None:
    """Start from another model's weights (fine-tuning); tensors whose shapes differ stay random."""
    from ..models.registry import ModelRegistry, load_network

    source = load_network(ModelRegistry().find(name_or_folder), "cpu").state_dict()
    own = network.state_dict()
    matching = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise InputError(f"training.init_from: model {name_or_folder!r} shares no weights with this network "
                         f"(different architecture or channels)")
    network.load_state_dict(matching, strict=False)
    skipped = len(own) - len(matching)
    log(f"initialized from {name_or_folder}: {len(matching)} tensors loaded"
        + (f", {skipped} left random (different shape, e.g. another label set)" if skipped else ""))


def _provenance(cfg: TrainConfig, result: LoopResult, device: torch.device, info: DistInfo, amp: bool,
                train_specs: list[Any], val_specs: list[Any]) -> dict[str, Any]:
    t = cfg.training
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {
        "medseg_version": __version__,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.source,
        "config_hash": cfg.config_hash(),
        "seed": t.seed,
        "init_from": t.init_from,
        "steps": result.step,
        "planned_steps": t.steps,
        "stopped": result.stopped,
        "seconds": round(result.total_seconds, 1),
        "device": device_name,
        "processes": info.world_size,
        "amp_bf16": amp,
        "batch_size": t.batch_size,
        "patch_size": list(t.patch_size or ()),
        "optimizer": t.optimizer,
        "lr": t.lr,
        "schedule": t.schedule,
        "loss": t.loss,
        "foreground_fraction": t.foreground_fraction,
        "augmentation": dataclasses.asdict(t.augmentation),
        "label_map": {str(k): v for k, v in cfg.data.label_map.items()},
        "weights": "best validation" if result.best_score is not None else "last step",
        "best_step": result.best_step,
        "validation": result.best_metrics,
        "final_validation": result.last_metrics,
        "train_cases": [c.describe() for c in train_specs],
        "val_cases": [c.describe() for c in val_specs],
    }
