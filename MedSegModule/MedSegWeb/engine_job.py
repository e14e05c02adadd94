"""A module engine run (segmentation, evaluation) followed from the web server's event loop:
:class:`~MedSegModuleLib.engine_run.EngineRun` (the engine in a subprocess) polled with
``await asyncio.sleep``, so the app answers other requests (and Cancel) while it runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from MedSegModuleLib.engine_run import EngineRun

POLL_SECONDS = 0.2


async def follow(
    run: EngineRun,
    on_progress: Callable[[float, str], None],
    register_cancel: Callable[[Callable[[], None]], None],
) -> Any:
    """Start ``run``, report progress until it ends, return :meth:`EngineRun.finish` (or raise its error).

    ``register_cancel`` receives the function that cancels this run (the Cancel button calls it).
    """
    run.start()
    register_cancel(run.cancel)
    try:
        while not run.done:
            for event in run.poll():
                if event.kind == "progress":
                    on_progress(run.fraction, event.message)
            await asyncio.sleep(POLL_SECONDS)
        run.poll()
    except BaseException:
        run.abort()
        raise
    return run.finish()
