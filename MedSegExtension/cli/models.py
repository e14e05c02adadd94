"""``medseg models``: list bundled and user models."""

from __future__ import annotations

import argparse
import json
import sys

from ..progress import CancelToken


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list bundled and user models", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, cancel: CancelToken) -> int:
    from ..models.registry import ModelRegistry

    registry = ModelRegistry()
    rows = [("bundled", card) for card in registry.bundled_models()] + [("user", card) for card in registry.user_models()]
    for problem in registry.broken.values():  # one unreadable card hides only itself
        print(f"medseg: warning: skipped: {problem}", file=sys.stderr)
    if args.json:
        print(json.dumps([{"source": source, "folder": str(card.folder), **card.to_dict()} for source, card in rows], indent=2))
        return 0
    if not rows:
        print(f"no models found (bundled: {registry.bundled}, user: {registry.user})")
        return 0
    try:
        default = registry.default_name()
    except Exception:
        default = None
    for source, card in rows:
        marker = " (default)" if card.name == default and source == "bundled" else ""
        print(f"{card.name} {card.version} [{source}{marker}] {card.modality}, {card.input_channels} channel(s), "
              f"{len(card.labels)} classes, {'x'.join(f'{s:g}' for s in card.target_spacing)} mm")
        if card.description:
            print(f"    {card.description}")
        print(f"    classes: {', '.join(label.name for label in card.labels)}")
        print(f"    model type: {card.network.summary()}")
        print(f"    folder: {card.folder}")
    return 0
