"""The one way orthanc-pandas runs work on several threads: :func:`fan_out`.

Every thread pool of the library goes through :func:`fan_out`, so every one of them

* is bounded (:func:`worker_count`: never more threads than the client has connections),
* shows progress through :func:`~orthanc_pandas._util.progress.progress_bar`,
* stops promptly on Ctrl-C and on the first error. A stop flag (a :class:`threading.Event`)
  is raised; items not started are cancelled; items running stop at their next
  :func:`checkpoint`. The HTTP client calls :func:`checkpoint` before every request (and
  between the chunks of a streamed answer), so a page loop or a per-item download stops
  after the request it is in, never after the rest of the archive. The ``KeyboardInterrupt``
  (or the first error) is then raised in the caller.

Nested fan-outs are allowed (the inner one's flag is raised with the outer one's), but no
caller nests two pools over one connection pool: see ``map_series``.

Also the two things every threaded caller needs: how many threads (:func:`worker_count`) and
the error when the server goes away part way (:func:`stopped_answering`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from orthanc_pandas._util.progress import progress_bar

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


class FanOutStopped(BaseException):
    """Raised by :func:`checkpoint` in a worker whose fan-out was told to stop.

    A ``BaseException`` (like ``KeyboardInterrupt``), so that per-item ``except Exception``
    handlers (a failed series becomes an ``error`` row, a failed upload a report row) do not
    turn a stop into one more result. :func:`fan_out` swallows it and raises the reason for
    the stop (the ``KeyboardInterrupt`` or the first error) instead.
    """


class StopFlag:
    """A stop flag that is also raised when its parent's is (nested fan-outs).

    Examples
    --------
    >>> outer = StopFlag(); inner = StopFlag(outer)
    >>> outer.set(); inner.is_set()
    True
    """

    def __init__(self, parent: StopFlag | None = None):
        self.event = threading.Event()
        self.parent = parent

    def set(self) -> None:
        self.event.set()

    def is_set(self) -> bool:
        flag: StopFlag | None = self
        while flag is not None:
            if flag.event.is_set():
                return True
            flag = flag.parent
        return False


_local = threading.local()


def current_stop() -> StopFlag | None:
    """The stop flag of the fan-out this thread works for (``None`` outside any fan-out)."""
    return getattr(_local, "stop", None)


def checkpoint() -> None:
    """Raise :class:`FanOutStopped` when the fan-out this thread works for was told to stop.

    Called between requests (by the HTTP client before each one) and between items: cheap, a
    no-op outside a fan-out.

    Examples
    --------
    >>> checkpoint()  # no fan-out here: nothing happens
    """
    stop = getattr(_local, "stop", None)
    if stop is not None and stop.is_set():
        raise FanOutStopped


class _Running:
    """How many items are inside ``fn`` now, to wait for after a stop.

    Counted by the items themselves rather than by joining the pool's threads: a Ctrl-C that
    lands while ``ThreadPoolExecutor.submit`` starts a thread leaves that thread out of the
    pool's list, although it already runs its item (seen with the first page of a read).
    """

    def __init__(self):
        self.count = 0
        self.cond = threading.Condition()

    def __enter__(self):
        with self.cond:
            self.count += 1

    def __exit__(self, *exc) -> None:
        with self.cond:
            self.count -= 1
            self.cond.notify_all()

    def wait_idle(self) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.count == 0)


def _in_worker(stop: StopFlag, running: _Running, fn: Callable[[T], R], item: T) -> R:
    previous = getattr(_local, "stop", None)
    _local.stop = stop
    try:
        with running:
            checkpoint()  # items dequeued after the stop send nothing
            return fn(item)
    finally:
        _local.stop = previous


def fan_out(fn: Callable[[T], R], items: Iterable[T], workers: int, *, progress: Any = False,
            desc: str = "Working", unit: str = "it", total: int | None = None,
            min_total: int = 50, window: int | None = None, name: str = "orthanc") -> list[R]:
    """``[fn(x) for x in items]`` on at most ``workers`` threads, results in the order of
    ``items``; stops promptly on Ctrl-C and on the first error.

    Parameters
    ----------
    fn : callable
        The work for one item. Per-item failures that must not stop the others are caught
        inside ``fn`` (and returned as a result); anything ``fn`` raises stops the fan-out.
    items : iterable
        Consumed lazily: at most ``window`` items are submitted ahead of the results.
    workers : int
        Threads (bound it with :func:`worker_count`). ``<= 1`` runs in the calling thread,
        with a :func:`checkpoint` between items.
    progress : bool or tqdm or None, default False
        Progress bar over the items (see ``progress_bar``); ``False`` when the caller counts
        something else on a bar of its own.
    desc, unit, total, min_total
        For the bar (``total`` defaults to ``len(items)`` where it has one).
    window : int, optional
        Items submitted but not finished, at most (default: ``4 * workers``). Bounds memory
        when items are read lazily (uploads), and the work to cancel on a stop.
    name : str
        Thread name prefix.

    Returns
    -------
    list
        ``fn``'s results, in the order of ``items``.

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C in the calling thread: the stop flag is raised, items not started are
        cancelled, running ones stop at their next :func:`checkpoint` (the request they are in
        completes, no other starts) and are waited for; a second Ctrl-C stops waiting.
    Exception
        The first error of ``fn``, after the same stop.

    Examples
    --------
    >>> fan_out(lambda x: x * x, range(5), 3)
    [0, 1, 4, 9, 16]
    >>> fan_out(lambda x: 1 // x, [1, 0, 2], 2)
    Traceback (most recent call last):
    ...
    ZeroDivisionError: integer division or modulo by zero
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    bar = progress_bar(progress, total=total, desc=desc, unit=unit, min_total=min_total)
    try:
        if workers <= 1 or (total is not None and total <= 1):
            out = []
            for item in items:
                checkpoint()  # an outer fan-out's stop, between items
                out.append(fn(item))
                bar.update(1)
            return out
        return _threaded(fn, items, workers, bar, window or 4 * workers, name)
    finally:
        bar.close()


def _threaded(fn, items, workers: int, bar, window: int, name: str) -> list:
    stop = StopFlag(current_stop())
    running = _Running()
    results: dict[int, Any] = {}
    pending: dict[Future, int] = {}
    source = enumerate(items)
    pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
    try:
        exhausted = False
        while True:
            while not exhausted and len(pending) < window:
                nxt = next(source, None)
                if nxt is None:
                    exhausted = True
                    break
                pending[pool.submit(_in_worker, stop, running, fn, nxt[1])] = nxt[0]
            if not pending:
                break
            # waiting on a lock: Ctrl-C interrupts it in the main thread
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                k = pending.pop(fut)
                results[k] = fut.result()  # the first error leaves the loop here
                bar.update(1)
            if stop.is_set():  # an outer fan-out stopped (we are its worker)
                raise FanOutStopped
    except BaseException:
        stop.set()
        _drain(pool, pending, running)
        raise
    pool.shutdown(wait=True)
    return [results[k] for k in range(len(results))]


def _drain(pool: ThreadPoolExecutor, pending: dict[Future, int], running: _Running) -> None:
    """After a stop: cancel what has not started, wait for the running items to reach their
    next checkpoint (their errors, mostly :class:`FanOutStopped`, are dropped: the reason for
    the stop is what the caller gets). A second Ctrl-C stops waiting."""
    pool.shutdown(wait=False, cancel_futures=True)
    for fut in pending:
        fut.cancel()
    try:
        running.wait_idle()
    finally:
        for fut in pending:
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: no "exception never retrieved" noise


def map_in_order(fn: Callable[[T], R], items: Iterable[T], workers: int, *,
                 name: str = "orthanc") -> list[R]:
    """``[fn(x) for x in items]`` on ``workers`` threads, results in the order of ``items``
    (:func:`fan_out` without a progress bar of its own).

    The first exception or a Ctrl-C cancels the calls not yet started, tells the running ones
    to stop at their next request, and is raised: when the server has gone, the remaining
    items would only fail one by one.

    Examples
    --------
    >>> map_in_order(str.upper, ["a", "b"], 2)
    ['A', 'B']
    """
    return fan_out(fn, items, workers, name=name)

