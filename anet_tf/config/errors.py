"""The error every config problem raises, and where a key came from."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem, with the dotted key and the file it came from."""


def origin_of(key: str, origins: dict[str, str], default: str) -> str:
    """The file (or ``--set``) that gave ``key``, else ``default``: a key not given
    comes from where its nearest given section came from."""
    probe = key.split("[", 1)[0]  # a list item comes from where its list came from
    while probe:
        if probe in origins:
            return origins[probe]
        probe = probe.rpartition(".")[0]
    return default
