"""Many processes: who am I, which videos are mine, and waiting for the others' work before the merge.

Launch with ``torchrun --nproc_per_node N cli.py eval ...`` or ``accelerate launch --multi_gpu
--num_processes N cli.py eval ...``; accelerate's ``PartialState`` reads the rank and world size either
way. On a machine without CUDA it must be ``PartialState(cpu=True)`` (gloo): a plain ``PartialState()``
there makes every process think it is alone and run everything. On GPUs each process gets its own device.

The unit of work is a video: all its questions x methods x budgets run in one process, so the frame, token
and prefix caches serve them (lmms-eval shards questions round-robin, so one video's questions are decoded
and encoded on several ranks). Videos go longest first to the least-loaded process (its summed seconds).
The only collective is a barrier at the start. Each process appends to its own file and, when its share
is written, leaves a marker; rank 0 polls for every marker, then merges, so a rank that finishes hours
before the others never times out in a barrier.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from evaluation import store


class Process:
    """This process's ``rank`` and the ``world`` size (0 and 1 when not launched by torchrun / accelerate)."""

    def __init__(self) -> None:
        import torch
        from accelerate import PartialState

        self._state = PartialState(cpu=not torch.cuda.is_available())
        self.rank, self.world = self._state.process_index, self._state.num_processes

    def start(self, out: Path) -> None:
        """Remove this process's finished marker of an earlier run, then wait for every process to have
        done the same (the only collective, at the start when all are alive), so no stale marker is read."""
        _marker(out, self.rank).unlink(missing_ok=True)
        if self.world > 1:
            self._state.wait_for_everyone()

    def finish(self, out: Path) -> None:
        """Mark this process's share as written (every record is on disk before the marker)."""
        _marker(out, self.rank).write_text("done\n")

    def wait_for_others(self, out: Path, *, poll_s: float = 0.5, log=None, log_every_s: float = 60.0) -> None:
        """Return once every process has finished (polls the markers: no barrier timeout however long)."""
        last_log = time.monotonic()
        while missing := [r for r in range(self.world) if not _marker(out, r).exists()]:
            if log is not None and time.monotonic() - last_log >= log_every_s:
                log(f"waiting for process(es) {', '.join(map(str, missing))} to finish")
                last_log = time.monotonic()
            time.sleep(poll_s)


def _marker(out: Path, rank: int) -> Path:
    folder = out / store.PARTS
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"rank-{rank}.done"


def assign(videos: Sequence[tuple[str, float]], world: int) -> list[list[str]]:
    """Videos per rank: longest first, each to the rank with the fewest seconds so far (then the fewest
    videos, then the lowest rank). ``videos`` are (name, seconds); the same input gives the same answer in
    every process."""
    order = sorted(range(len(videos)), key=lambda i: (-videos[i][1], i))
    ranks: list[list[str]] = [[] for _ in range(world)]
    loads = [0.0] * world
    for i in order:
        rank = min(range(world), key=lambda r: (loads[r], len(ranks[r]), r))
        ranks[rank].append(videos[i][0])
        loads[rank] += videos[i][1]
    return ranks
