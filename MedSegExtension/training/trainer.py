""":func:`train`, the whole ``medseg train`` as a function: check and prepare the data, train, save.

The loop itself is :class:`~.loop.TrainingLoop` (also imported from here, as are the names
callers used when this module held everything); validation: :mod:`.validation`; checkpoints
(read with ``weights_only``): :mod:`.checkpoints`; where a model may be written: :mod:`.output`.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..errors import InputError
from ..models.card import ModelCard
from ..progress import CancelToken, ProgressCallback, ScaledProgress, no_progress
from .checkpoints import BEST_CHECKPOINT, LAST_CHECKPOINT, read_checkpoint
from .config import TrainConfig, config_from_dict, load_config
from .distributed import DistInfo, barrier, init_distributed, shutdown
from .hard_negative import with_hard_negative
from .loop import LoopOptions, LoopResult, TrainingLoop
from .losses import build_loss
from .optimization import use_amp
from .output import resolve_output
from .sample_quality import build_sample_weighting
from .validation import make_validator

__all__ = ["LoopOptions", "LoopResult", "TrainingLoop", "make_validator", "resolve_output", "train"]


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
        last = checkpoint_dir / LAST_CHECKPOINT
        if resume and not last.is_file():
            raise InputError(f"{last}: nothing to resume (no checkpoint); run without --resume")
        if not resume and last.is_file() and not restart:
            raise InputError(f"{last}: a checkpoint from an earlier run exists; pass --resume to continue it "
                             f"or --restart to start over")
        checkpoint = read_checkpoint(last) if resume else None  # weights_only; before any data is read

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
        network = build_network(card_template.input_channels, card_template.num_classes, card_template.network,
                                card_template.channel_swap_for_lr_flip())
        if t.init_from:
            _initialize_from(network, t.init_from, log)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        loss = with_hard_negative(build_loss(t.loss), t.hard_negative, t.steps)
        weighting = build_sample_weighting(t.sample_weighting, card_template.input_channels, card_template.num_classes,
                                           t.ocm_lambda, t.qam_lr)
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
            on_step=on_step, sample_weighting=weighting,
        )
        if resume:
            start = loop.resume(last, checkpoint)
            log(f"resuming from step {start} ({last})")
        elif info.is_main:  # --restart: no stale best.pt may outlive the run it came from
            for stale in (last, checkpoint_dir / BEST_CHECKPOINT):
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
        "sample_weighting": t.sample_weighting,
        **({"hard_negative": t.hard_negative} if t.hard_negative else {}),
        **({"ocm_lambda": t.ocm_lambda} if t.sample_weighting == "qam_ocm" else {}),
        **({"qam_lr": t.qam_lr} if t.sample_weighting != "none" else {}),
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
