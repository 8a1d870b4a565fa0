"""The error every config problem raises, and where a key came from.

``origins`` (built by the loader) maps a dotted key to the file that gave it, or to
``--set``. The shipped configs (``anet_tf/configs/``) are the project's defaults:
a value one of them gives is not the user's choice, so a message never blames a
shipped file the user did not name (:func:`blame`), and a setting that follows
another (``eval.feature`` follows ``model.variant``) follows it unless the user set
it (:func:`set_by_user`).
"""

from __future__ import annotations

import os

# The shipped configs; the loader's ``CONFIG_DIR`` (package data).
SHIPPED_CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")
# The origin of a value no file gave: the schema's default (``Config()``).
DEFAULTS = "<defaults>"


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


def is_shipped(origin: str) -> bool:
    """Whether ``origin`` is one of the shipped config files."""
    if origin in ("--set", DEFAULTS) or not origin.endswith((".yaml", ".yml")):
        return False
    folder = os.path.dirname(os.path.realpath(origin))
    return folder == os.path.realpath(SHIPPED_CONFIG_DIR)


def blame(key: str, origins: dict[str, str], source: str) -> str:
    """Where a message about ``key`` says its value came from: the ``--set`` or the
    file that gave it, but ``source`` (the config the user named) where that file is
    a shipped config the user did not name (a ``_base_`` of theirs, e.g.
    ``paper_base.yaml`` under ``--config veri776``)."""
    origin = origin_of(key, origins, source)
    if origin != source and is_shipped(origin):
        return source
    return origin


def set_by_user(key: str, origins: dict[str, str]) -> bool:
    """Whether the user gave ``key`` itself, with ``--set`` or in a file of theirs;
    a value of the schema or of a shipped config is a default."""
    origin = origins.get(key)
    return origin is not None and origin != DEFAULTS and not is_shipped(origin)
