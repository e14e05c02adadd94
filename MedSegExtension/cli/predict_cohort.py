"""``medseg predict DIR -o OUTDIR`` and ``medseg predict --list cases.txt -o OUTDIR``: a cohort, one model load."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import InputError
from ..inference.cohort import (
    cases_from_folder,
    cases_from_list,
    check_unique_names,
    run_cohort,
    shard,
    shard_from_env,
    summary_line,
)
from ..io.atomic import compound_suffix
from ..progress import CancelToken


def is_cohort(args: argparse.Namespace, output_suffixes: tuple[str, ...]) -> bool:
    """A list file, or one folder segmented into an output folder (a DICOM folder into a file is one case)."""
    if args.list:
        return True
    return len(args.inputs) == 1 and Path(args.inputs[0]).is_dir() and compound_suffix(Path(args.output)) not in output_suffixes


def _device(choice: str) -> str:
    """Under torchrun on a multi-GPU node, ``auto`` means this process's own GPU (``LOCAL_RANK``)."""
    local_rank = os.environ.get("LOCAL_RANK")
    if choice != "auto" or local_rank is None:
        return choice
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(local_rank) % torch.cuda.device_count()}"
    return choice


def run_cohort_command(args: argparse.Namespace, cancel: CancelToken, options, card, read_inputs, write_result) -> int:
    from ..inference.pipeline import Segmenter

    if args.inputs and args.list:
        raise InputError("give either input files/a folder or --list, not both")
    if args.transform or args.probabilities or args.uncertainty or args.series:
        raise InputError("--transform, --series, --probabilities and --uncertainty apply to one case, not a cohort")
    output_dir = Path(args.output)
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"{output_dir}: a cohort's output must be a folder")
    cases = cases_from_list(Path(args.list)) if args.list else cases_from_folder(Path(args.inputs[0]))
    check_unique_names(cases)
    rank, world = shard_from_env()
    mine = shard(cases, rank, world)
    label = f" rank {rank}/{world}" if world > 1 else ""
    options.device = _device(options.device)
    segmenter = Segmenter(card, options.device)
    print(f"cohort{label}: {len(mine)} of {len(cases)} cases, model {card.name} {card.version} on {segmenter.device}",
          flush=True)

    def segment_case(case, output: Path) -> None:
        images = read_inputs([str(p) for p in case.inputs], None)
        result = segmenter(images, options, cancel=cancel)
        cancel.raise_if_cancelled()
        write_result(result, card, str(output), None, None)

    summary = run_cohort(mine, output_dir, args.output_suffix, segment_case,
                         log=lambda line: print(line, flush=True), cancelled=lambda: cancel.cancelled,
                         shard_label=label)
    print(summary_line(summary, label), flush=True)
    if summary.failed:
        raise InputError(f"{len(summary.failed)} case(s) failed: {', '.join(name for name, _ in summary.failed)}")
    return 0
