"""Training: configs, losses with per-voxel weights, augmentation, patch sampling, the loop, DDP.

Entry points (imported lazily, so ``import MedSegExtension.training.synthesis`` stays light):

- :func:`train` (``medseg train CONFIG``) and :class:`TrainingLoop` for callers with their
  own batches (the sparse-annotation mode);
- :func:`load_config` / :func:`config_from_dict`;
- :func:`build_loss` and the loss classes in :mod:`.losses`.

Modules, lowest first (each imports only those before it): :mod:`.distributed` (DDP
process group), :mod:`.rng` (seeds, RNG states as tensors), :mod:`.optimization` (optimizer,
schedule, AMP), :mod:`.checkpoints` (``weights_only`` reads), :mod:`.validation`,
:mod:`.loop` (:class:`TrainingLoop`), :mod:`.output` (where a model may be written),
:mod:`.trainer` (:func:`train`), :mod:`.launch` (local multi-process runs of :func:`train`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "train": "trainer",
    "TrainingLoop": "loop",
    "LoopOptions": "loop",
    "LoopResult": "loop",
    "make_validator": "validation",
    "resolve_output": "output",
    "load_config": "config",
    "config_from_dict": "config",
    "TrainConfig": "config",
    "build_loss": "losses",
    "PatchBatches": "dataset",
    "TrainingCase": "dataset",
    "AugmentationConfig": "augmentation",
    "Augmenter": "augmentation",
    "PatchSampler": "sampling",
    "launch_local": "launch",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
