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
