"""Where a sweep's points run: in this process, in a local process pool, or on Ray.

Each executor maps a picklable module-level function over a list of items and yields
`(index, result)` pairs as the calls finish, in whatever order they finish, so that the caller
can save each result and move a progress bar at once. An exception raised by the function
propagates out of the iterator with a note naming the item, and the work not yet started is
cancelled. Ray is an optional extra: it is imported only inside `ray_map`.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
from typing import Callable, Iterator, Sequence

from ..core.errors import ConfigError

EXECUTORS = ("local", "ray")


def _note(exc: BaseException, index: int, item) -> BaseException:
    exc.add_note(f"while running sweep point {index}: {item!r}")
    return exc


def local_map(fn: Callable, items: Sequence, *, processes: int | None = None
              ) -> Iterator[tuple[int, object]]:
    """A process pool of `processes` workers (default: one per CPU); 1 runs in this process."""
    processes = (os.cpu_count() or 1) if processes is None else processes
    if processes == 1 or len(items) <= 1:
        for i, item in enumerate(items):
            try:
                result = fn(item)
            except Exception as exc:
                raise _note(exc, i, item)
            yield i, result
        return
    pool = cf.ProcessPoolExecutor(max_workers=min(processes, len(items)))
    try:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        for future in cf.as_completed(futures):
            i = futures[future]
            try:
                result = future.result()
            except Exception as exc:
                raise _note(exc, i, items[i])
            yield i, result
    finally:
        # On an error or an interrupt, points not yet started are dropped, not run.
        pool.shutdown(wait=True, cancel_futures=True)


def ray_map(fn: Callable, items: Sequence, *, processes: int | None = None,
            address: str | None = None) -> Iterator[tuple[int, object]]:
    """Run on Ray: the cluster at `address`, a Ray already initialised in this process, or
    else a local instance of `processes` CPUs that is shut down afterwards."""
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray executor needs Ray: pip install 'batchlab[ray]'") from None
    started = False
    if address is not None:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        started = True
    elif not ray.is_initialized():
        # A private, quiet instance on the loopback interface: it needs no network and
        # sends no usage statistics anywhere.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=processes, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False, _node_ip_address="127.0.0.1")
        started = True
    pending: dict = {}
    try:
        task = ray.remote(num_cpus=1)(fn)
        pending = {task.remote(item): i for i, item in enumerate(items)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(done[0])
            try:
                result = ray.get(done[0])
            except Exception as exc:
                raise _note(exc, i, items[i])
            yield i, result
    finally:
        for ref in pending:
            ray.cancel(ref)
        if started:
            ray.shutdown()


def map_unordered(fn: Callable, items: Sequence, *, executor: str = "local",
                  processes: int | None = None, address: str | None = None
                  ) -> Iterator[tuple[int, object]]:
    if processes is not None and (isinstance(processes, bool) or not isinstance(processes, int)
                                  or processes < 1):
        raise ConfigError(f"processes must be a positive int, got {processes!r}")
    if executor == "local":
        if address is not None:
            raise ConfigError("an address applies to the ray executor only (--executor ray)")
        return local_map(fn, items, processes=processes)
    if executor == "ray":
        return ray_map(fn, items, processes=processes, address=address)
    raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
