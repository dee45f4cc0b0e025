"""Parallel, resumable batch jobs that write one dataset item per task (``data synth``, ``data render``).

* Items whose folder already holds a finished marker (store.is_complete) are skipped, so a killed job resumes.
* Each worker process runs an initialiser once (the renderers make their GL context there: one per process).
* A task that raises is logged to a JSON-lines failure log and skipped; the job goes on.
* Sharding splits one task list over several machines or jobs: shard ``i/n`` takes every n-th task.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from diffusiongs.data.store import is_complete
from diffusiongs.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """One item to make: its id, its output folder and whatever the work function needs (picklable)."""

    item_id: str
    directory: Path
    payload: Any


@dataclass(frozen=True)
class TaskResult:
    item_id: str
    views: int
    error: str | None = None
    details: str | None = None


@dataclass(frozen=True)
class JobReport:
    """What a job did: items made, skipped as already finished, failed; views written; wall time."""

    done: int
    skipped: int
    failed: int
    views: int
    seconds: float

    @property
    def views_per_second(self) -> float:
        return self.views / self.seconds if self.seconds > 0 else 0.0


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError as err:
        raise InputError(f"--shard {text!r}: expected i/n, e.g. 0/4") from err
    if not 0 <= index < count:
        raise InputError(f"--shard {text!r}: need 0 <= i < n")
    return index, count


def select_shard(tasks: Sequence[Task], shard: tuple[int, int]) -> list[Task]:
    """Every n-th task (by sorted item id, so that all shards agree whatever the input order)."""
    index, count = shard
    return [t for k, t in enumerate(sorted(tasks, key=lambda t: t.item_id)) if k % count == index]


def failure_log_path(root: Path, shard: tuple[int, int]) -> Path:
    """``root/failures.jsonl``, or one log per shard so that shards running at once never share a file."""
    index, count = shard
    return root / ("failures.jsonl" if count == 1 else f"failures.shard{index}of{count}.jsonl")


def _guarded(work: Callable[[Task], int], task: Task) -> TaskResult:
    try:
        return TaskResult(task.item_id, work(task))
    except Exception as err:  # one broken item must not stop the job: report it and move on
        return TaskResult(task.item_id, 0, f"{type(err).__name__}: {err}", traceback.format_exc())


def _worker_init(initializer: Callable[..., None], initargs: tuple) -> None:
    initializer(*initargs)


def _worker_run(args: tuple[Callable[[Task], int], Task]) -> TaskResult:
    return _guarded(*args)


def run_tasks(tasks: Sequence[Task], work: Callable[[Task], int], initializer: Callable[..., None],
              initargs: tuple, workers: int, failure_log: Path, description: str,
              progress: bool = True) -> JobReport:
    """Run ``work`` on every unfinished task, in ``workers`` processes (in this process when ``workers`` is 1).

    Args:
        work: a module-level function (worker processes are spawned and import it) returning the views written.
        initializer: called once per process with ``initargs`` before its first task.
        failure_log: JSON lines ``{"item", "error", "traceback"}`` are appended for every failed task.
    """
    pending = [t for t in tasks if not is_complete(t.directory)]
    skipped = len(tasks) - len(pending)
    if skipped:
        log.info("%s: %d of %d items already finished, skipping them", description, skipped, len(tasks))
    start = time.perf_counter()
    done = failed = views = 0
    bar = tqdm(total=len(pending), desc=description, unit="item", disable=not progress or not pending)
    with _results(pending, work, initializer, initargs, workers) as results:
        for result in results:
            if result.error is None:
                done += 1
                views += result.views
            else:
                failed += 1
                log.warning("%s: %s failed: %s", description, result.item_id, result.error)
                failure_log.parent.mkdir(parents=True, exist_ok=True)
                with failure_log.open("a") as f:
                    f.write(json.dumps({"item": result.item_id, "error": result.error,
                                        "traceback": result.details}) + "\n")
            bar.update(1)
            bar.set_postfix(views_per_s=f"{views / max(time.perf_counter() - start, 1e-9):.1f}", failed=failed)
    bar.close()
    return JobReport(done, skipped, failed, views, time.perf_counter() - start)


class _results:
    """Context manager yielding TaskResults from a process pool (or in-process), closing the pool on exit."""

    def __init__(self, tasks: list[Task], work, initializer, initargs, workers: int) -> None:
        self.tasks, self.work, self.workers = tasks, work, min(workers, max(1, len(tasks)))
        self.initializer, self.initargs = initializer, initargs
        self.pool = None

    def __enter__(self):
        if not self.tasks:
            return iter(())
        if self.workers <= 1:
            self.initializer(*self.initargs)
            return (_guarded(self.work, t) for t in self.tasks)
        # spawn, not fork: a forked child would share the parent's GL/EGL and torch thread state.
        context = multiprocessing.get_context("spawn")
        self.pool = context.Pool(self.workers, initializer=_worker_init, initargs=(self.initializer, self.initargs))
        return self.pool.imap_unordered(_worker_run, [(self.work, t) for t in self.tasks], chunksize=1)

    def __exit__(self, *exc) -> None:
        if self.pool is None:
            return
        if exc[0] is None:
            self.pool.close()
        else:  # interrupted or failed: finished items are on disk, a rerun resumes
            self.pool.terminate()
        self.pool.join()
