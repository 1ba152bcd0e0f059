"""Argument checks shared by every bulk call (see ``docs/conventions.md``)."""

from __future__ import annotations

#: the values of ``errors=`` on every bulk call
ERRORS = ("raise", "report")


def check_bulk_args(max_workers: int | None, errors: str = "raise") -> None:
    """Refuse a ``max_workers`` below 1 and an ``errors`` that is not ``"raise"``/``"report"``.

    ``None`` means the call's default; 0 used to mean "default" in some calls and 1 in others,
    so it is refused rather than guessed.

    Examples
    --------
    >>> check_bulk_args(None), check_bulk_args(3, "report")
    (None, None)
    >>> check_bulk_args(0)
    Traceback (most recent call last):
    ...
    ValueError: max_workers must be a positive integer or None (the default), got 0.
    """
    if max_workers is not None and (isinstance(max_workers, bool) or not isinstance(max_workers, int)
                                    or max_workers < 1):
        raise ValueError(f"max_workers must be a positive integer or None (the default), "
                         f"got {max_workers!r}.")
    if errors not in ERRORS:
        raise ValueError(f"errors must be 'raise' or 'report', got {errors!r}.")


def workers_or(max_workers: int | None, default: int) -> int:
    """``max_workers``, or ``default`` when it is ``None``.

    Examples
    --------
    >>> workers_or(None, 2), workers_or(5, 2)
    (2, 5)
    """
    return default if max_workers is None else max_workers
