"""Run one function over many items on a few threads, stopping at the first failure.

Also the two things every threaded caller needs: how many threads (:func:`worker_count`) and
the error when the server goes away part way (:func:`stopped_answering`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


R = TypeVar("R")


E = TypeVar("E", bound=BaseException)


#: Concurrent requests; loopback and LAN servers saturate at 3-4 (the machine decodes too).
DEFAULT_WORKERS = 4


def worker_count(max_workers: int | None, *, pool_size: int | None = None, jobs: int | None = None,
                 default: int = DEFAULT_WORKERS) -> int:
    """Threads to use: ``max_workers`` (or ``default``), at most the client's connection pool
    and the number of jobs, at least 1.

    Examples
    --------
    >>> worker_count(None), worker_count(8, pool_size=4), worker_count(8, jobs=2), worker_count(0)
    (4, 4, 2, 1)
    """
    n = default if max_workers is None else int(max_workers)
    if pool_size is not None:
        n = min(n, int(pool_size))
    if jobs is not None:
        n = min(n, int(jobs))
    return max(1, n)


def stopped_answering(exc: E, action: str, done: int, total: int, what: str, outcome: str) -> E:
    """The error to raise (``from None``) when the server stopped answering part way through.

    Same type as ``exc`` (an :class:`~orthanc_pandas.errors.OrthancConnectionError`), saying
    how far ``action`` got and what the caller has now.

    Examples
    --------
    >>> err = stopped_answering(ConnectionError("refused"), "headers", 3, 10, "headers were read",
    ...                         "nothing was returned (no partial list).")
    >>> print(err)
    headers: the server stopped answering after 3 of 10 headers were read; nothing was returned (no partial list). Cause: refused
    """
    return type(exc)(f"{action}: the server stopped answering after {done} of {total} {what}; "
                     f"{outcome} Cause: {exc}")


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
