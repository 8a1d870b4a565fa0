"""The error of the search package: bad input to embed, index or search."""

from __future__ import annotations


class SearchError(ValueError):
    """Bad input to embed, index or search, said for people (what, where, what
    would be right)."""


class IndexMismatchError(SearchError):
    """The index and the query (or two embedding files) come from different models."""
