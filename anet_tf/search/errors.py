"""The error of the search package: bad input to embed, index or search."""

from __future__ import annotations

import errno


class SearchError(ValueError):
    """Bad input to embed, index or search, said for people (what, where, what
    would be right)."""


class IndexMismatchError(SearchError):
    """The index and the query (or two embedding files) come from different models."""


class GalleryDiskFullError(OSError):
    """The disk filled up while a gallery was written (exit 4, as any ``ENOSPC``);
    the message names the gallery and says what it holds now."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


def first_line(exc: BaseException) -> str:
    """The first line of what ``exc`` says (cut at 200 characters), for a
    one-line message."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    line = text.splitlines()[0]
    return line if len(line) <= 200 else f"{line[:200]}..."


def npz_array_problem(key: str, exc: BaseException) -> str:
    """Why the array ``key`` of an ``.npz`` file could not be read (a pickled
    array is never loaded), for a one-line message."""
    if "allow_pickle" in str(exc):
        return f"the array {key!r} holds Python objects (a pickle), which are not loaded"
    return f"the array {key!r} cannot be read: {first_line(exc)}"
