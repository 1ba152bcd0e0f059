"""Run one function over many items on a few threads, stopping at the first failure."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_in_order(fn: Callable[[T], R], items: Iterable[T], workers: int, *,
                 name: str = "orthanc") -> list[R]:
    """``[fn(x) for x in items]`` on ``workers`` threads, results in the order of ``items``.

    The first exception cancels the calls not yet started, waits for the running ones and is
    raised: when the server has gone, the remaining items would only fail one by one.
    """
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        futures = [pool.submit(fn, x) for x in items]
        try:
            return [f.result() for f in futures]
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
