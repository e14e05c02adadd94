"""Many cases through one loaded model: folders and list files, resumable, sharded over processes.

Conventions:

- A cohort is a folder (every volume file in it, and every sub-folder, taken as a DICOM series,
  sorted by name) or a list file (one case a line; several input channels separated by tabs;
  relative paths are relative to the list file; blank lines and ``#`` comments are skipped).
- Each case's output is ``OUTDIR/<input name without suffix><suffix>``; two cases with the same
  name are an error before any work starts.
- Resumable: a case whose output exists is skipped; outputs are written atomically (a temporary
  file renamed when complete), so an interrupted run never leaves a partial one.
- Sharding: the cases are dealt round-robin over ``WORLD_SIZE`` processes by ``RANK`` (what
  ``torchrun`` sets), else over a SLURM array (``SLURM_ARRAY_TASK_ID``/``_COUNT``). The deal is
  over the whole sorted list, before skipping, so every process agrees without talking.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CancelledError, InputError, MedSegError
from ..io.atomic import compound_suffix
from ..io.volumes import VOLUME_SUFFIXES

INPUT_SUFFIXES = tuple(s for s in VOLUME_SUFFIXES if s != ".seg.nrrd")


@dataclass(frozen=True)
class Case:
    name: str  # output stem
    inputs: tuple[Path, ...]  # one path per input channel


@dataclass
class CohortSummary:
    segmented: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (case, one-line reason)
    seconds: float = 0.0


def case_name(path: Path) -> str:
    suffix = compound_suffix(path)
    return path.name[: -len(suffix)] if suffix and path.is_file() else path.name


def cases_from_folder(folder: Path) -> list[Case]:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    cases = [Case(case_name(p), (p,)) for p in entries
             if (p.is_file() and compound_suffix(p) in INPUT_SUFFIXES) or p.is_dir()]
    if not cases:
        raise InputError(f"{folder}: no volume files ({', '.join(INPUT_SUFFIXES)}) or DICOM folders in it")
    return cases


def cases_from_list(list_file: Path) -> list[Case]:
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{list_file}: cannot read the case list ({exc.__class__.__name__})") from None
    cases = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        paths = tuple((list_file.parent / field_).resolve() if not Path(field_).is_absolute() else Path(field_)
                      for field_ in (f.strip() for f in line.split("\t")) if field_)
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise InputError(f"{list_file}:{number}: {missing[0]} does not exist")
        cases.append(Case(case_name(paths[0]), paths))
    if not cases:
        raise InputError(f"{list_file}: the case list is empty")
    return cases


def check_unique_names(cases: Sequence[Case]) -> None:
    seen: dict[str, Path] = {}
    for case in cases:
        if case.name in seen:
            raise InputError(f"{case.inputs[0]} and {seen[case.name]} would both write {case.name}: rename one")
        seen[case.name] = case.inputs[0]


def shard_from_env(environ: dict[str, str] | None = None) -> tuple[int, int]:
    """(rank, world size) from ``RANK``/``WORLD_SIZE``, else a SLURM array, else (0, 1)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env or "RANK" in env:
        rank, world = env.get("RANK", "0"), env.get("WORLD_SIZE", "1")
        source = "RANK/WORLD_SIZE"
    elif "SLURM_ARRAY_TASK_COUNT" in env:
        rank = str(int(env.get("SLURM_ARRAY_TASK_ID", "0")) - int(env.get("SLURM_ARRAY_TASK_MIN", "0")))
        world, source = env["SLURM_ARRAY_TASK_COUNT"], "SLURM_ARRAY_TASK_ID/COUNT"
    else:
        return 0, 1
    try:
        rank_number, world_number = int(rank), int(world)
    except ValueError:
        raise InputError(f"{source}={rank}/{world}: not integers") from None
    if world_number < 1 or not 0 <= rank_number < world_number:
        raise InputError(f"{source}={rank_number}/{world_number}: rank must lie in [0, world size)")
    return rank_number, world_number


def shard(cases: Sequence[Case], rank: int, world: int) -> list[Case]:
    return list(cases[rank::world])


def run_cohort(
    cases: Sequence[Case],
    output_dir: Path,
    suffix: str,
    segment_case: Callable[[Case, Path], None],
    *,
    log: Callable[[str], None] = print,
    cancelled: Callable[[], bool] = lambda: False,
    shard_label: str = "",
) -> CohortSummary:
    """Segment each case with ``segment_case(case, output_path)`` unless its output exists; one line per case.

    A case that fails with a MedSeg error (a bad input file) is reported and the cohort goes on;
    anything else (a bug, out of memory on the CPU) stops it. Cancelling stops before the next case.
    """
    summary = CohortSummary()
    start = time.perf_counter()
    output_dir.mkdir(parents=True, exist_ok=True)
    total = len(cases)
    for number, case in enumerate(cases, start=1):
        if cancelled():
            raise CancelledError("cancelled")
        output = output_dir / f"{case.name}{suffix}"
        prefix = f"[{number}/{total}{shard_label}] {case.name}"
        if output.exists():
            summary.skipped.append(case.name)
            log(f"{prefix}: {output} exists, skipped")
            continue
        case_start = time.perf_counter()
        try:
            segment_case(case, output)
        except CancelledError:
            raise
        except MedSegError as exc:
            summary.failed.append((case.name, str(exc)))
            log(f"{prefix}: failed: {exc}")
            continue
        summary.segmented.append(case.name)
        log(f"{prefix}: wrote {output} in {time.perf_counter() - case_start:.1f} s")
    summary.seconds = time.perf_counter() - start
    return summary


def summary_line(summary: CohortSummary, shard_label: str = "") -> str:
    done = len(summary.segmented)
    rate = f", {summary.seconds / done:.1f} s per case" if done else ""
    return (f"cohort{shard_label}: {done} segmented, {len(summary.skipped)} skipped (done already), "
            f"{len(summary.failed)} failed in {summary.seconds:.1f} s{rate}")
