"""``medseg train CONFIG``: train a model from image/label pairs described by a YAML or JSON config.

Multi-GPU: ``torchrun --nproc_per_node N -m MedSegExtension train CONFIG`` (rank 0 shows progress
and writes the model). Ctrl-C saves ``last.pt``; ``--resume`` continues from it.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import InputError
from ..progress import CancelToken
from .progress_display import ProgressDisplay


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model from a config file (YAML or JSON)",
        description="Train a 3D U-Net from image/label pairs. See docs/training.md for the config reference.",
    )
    parser.add_argument("config", help="training config (.yaml, .yml or .json)")
    parser.add_argument("--resume", action="store_true", help="continue from <checkpoints>/last.pt")
    parser.add_argument("--restart", action="store_true", help="start over even if a checkpoint exists")
    parser.add_argument("--bundled", action="store_true",
                        help="retrain a bundled model: write it into Resources/Models/<name> (maintainers)")
    parser.add_argument("--output", help="model folder to write (overrides the config's 'output')")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (overrides training.device)")
    parser.add_argument("--steps", type=int, help="number of training steps (overrides training.steps)")
    parser.add_argument("--max-seconds", type=float, help="time budget in seconds (overrides training.max_seconds)")
    parser.add_argument("--progress", choices=("auto", "bar", "json", "none"), default="auto",
                        help="progress display on stderr (default: a bar on a terminal)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, cancel: CancelToken) -> int:
    from ..training.config import load_config
    from ..training.distributed import from_environment
    from ..training.trainer import train

    overrides: dict[str, Any] = {}
    if args.output:
        overrides["output"] = args.output
    if args.device:
        overrides["training.device"] = args.device
    if args.steps is not None:
        overrides["training.steps"] = args.steps
    if args.max_seconds is not None:
        overrides["training.max_seconds"] = args.max_seconds
    check_budgets(args)
    config = load_config(args.config, overrides)
    check_model_is_new(config, args)
    main_process = from_environment().is_main
    display = ProgressDisplay(args.progress if main_process else "none")
    try:
        card = train(config, display, cancel, resume=args.resume, restart=args.restart, bundled=args.bundled,
                     log=display.log if main_process else None)
    finally:
        display.close()
    if main_process:
        validation = card.training.get("validation") or {}
        dice = validation.get("dice") or {}
        scores = ", ".join(f"{name} {value:.3f}" for name, value in dice.items() if value is not None)
        print(f"model {card.name!r} written to {card.folder}")
        print(f"{card.training.get('steps')} steps in {card.training.get('seconds')} s on {card.training.get('device')}"
              + (f"; validation Dice (step {card.training.get('best_step')}): {scores}" if scores else ""))
    return 0


def check_budgets(args: argparse.Namespace) -> None:
    """``--steps 0`` or ``--max-seconds 0`` would train nothing (or silently the default): refused."""
    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps {args.steps}: must be at least 1")
    if args.max_seconds is not None and not args.max_seconds > 0:
        raise InputError(f"--max-seconds {args.max_seconds:g}: must be a positive number of seconds")


def check_model_is_new(config: Any, args: argparse.Namespace) -> None:
    """Refuse, before training, to write where a model exists that is not this run's own.

    Unlike ``finetune`` (which saves NAME-v2, NAME-v3…), ``train`` writes the folder its config
    names and keeps its checkpoints there for ``--resume``, so another version would split them:
    the user picks another ``name`` or ``output``. A model is replaced only by its own run
    continued (``--resume``) or started over (``--restart``) from the checkpoint beside it, and
    by ``--bundled`` (the retrain command).
    """
    from ..models.card import CARD_FILE
    from ..training import resolve_output

    folder, checkpoints = resolve_output(config, args.bundled)
    own_run = (checkpoints / "last.pt").is_file()  # then the trainer asks for --resume or --restart
    if not args.bundled and not own_run and (folder / CARD_FILE).is_file():
        raise InputError(f"{folder}: a model named {config.card.name!r} exists there; MedSeg never replaces it "
                         f"(give the config another model name or 'output', or remove that folder)")
