"""Files the project reads and writes: atomic writes, JSON and YAML that name the
file when it is damaged, YAML whose aliases cannot blow up memory, and the removal
of what a failed write left (telling a full disk from other failures).

This module imports nothing of the package, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil

import yaml

# A config, a run's record or a study file has a few hundred values; aliases that
# would expand to more than this many (a "billion laughs" document) are refused
# before anything is built from them.
YAML_MAX_VALUES = 100_000

# How much of a value an error message quotes.
QUOTE_LIMIT = 120


class DamagedFileError(ValueError):
    """A file the project wrote (a checkpoint, a pointer, a run's config or log)
    cannot be read; the message names the file and what to do (one line)."""


class NotWritableError(ValueError):
    """A file cannot be written where a command keeps its result (a read-only or
    foreign folder); the message names it and where the result is instead."""


class YAMLTooLargeError(yaml.YAMLError):
    """A YAML document whose aliases expand beyond :data:`YAML_MAX_VALUES`."""


def quote(value, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)``, cut to ``limit`` characters (saying how long it was) so an
    error message stays one readable line whatever the value."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def path_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one folder name inside another folder (a model name, a
    run name), or None. A name with a separator or ``..`` would write elsewhere."""
    if not name or not name.strip():
        return "must not be empty"
    if "/" in name or "\\" in name or (os.sep in name) or (os.altsep and os.altsep in name):
        return f"must be a single folder name without path separators, got {quote(name)}"
    if name == "." or ".." in name:
        return f"must not be '.' or '..' or contain '..', got {quote(name)}"
    if "\0" in name:
        return f"must not contain NUL, got {quote(name)}"
    return None


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Values the document would hold with every alias expanded (each distinct
    node counted once per reference), stopping as soon as it passes ``limit``."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if not children_done and id(node) in open_nodes:
            return limit + 1  # a node inside itself (&a [*a]): never a config
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        children = (
            [n for pair in node.value for n in pair]
            if isinstance(node, yaml.MappingNode)
            else list(node.value)
        )
        if children_done:
            total = 1 + sum(sizes.get(id(c), 0) for c in children)
            sizes[id(node)] = min(total, limit + 1)
            continue
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses documents whose aliases expand to more
    than :data:`YAML_MAX_VALUES` values (checked on the node graph, before any
    Python object is built or copied)."""

    def compose_document(self):
        node = super().compose_document()
        if node is not None and _expanded_size(node, YAML_MAX_VALUES) > YAML_MAX_VALUES:
            mark = node.start_mark
            raise YAMLTooLargeError(
                f"the document starting at line {mark.line + 1} expands its aliases "
                f"(&name / *name) to more than {YAML_MAX_VALUES:,} values; write the "
                "values out instead"
            )
        return node


def load_yaml(stream):
    """``yaml.safe_load`` with the alias bound of :class:`BoundedSafeLoader`.

    Raises:
        yaml.YAMLError: not valid YAML, or too large once expanded.
    """
    loader = BoundedSafeLoader(stream)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where (line, column)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(exc).split())


def read_yaml_file(path: str, advice: str = ""):
    """The YAML document in ``path`` (bounded), or :class:`DamagedFileError`
    naming the file, where it is wrong and ``advice``."""
    try:
        with open(path, encoding="utf-8") as fh:
            return load_yaml(fh)
    except yaml.YAMLError as exc:
        raise DamagedFileError(_damaged(path, f"not valid YAML: {yaml_problem(exc)}", advice)) from None
    except UnicodeDecodeError as exc:
        raise DamagedFileError(_damaged(path, f"not UTF-8 text at byte {exc.start}", advice)) from None


def read_json_file(path: str, advice: str = ""):
    """The JSON document in ``path``, or :class:`DamagedFileError` naming the file,
    where it is wrong and ``advice``."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DamagedFileError(
            _damaged(path, f"not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}", advice)
        ) from None
    except UnicodeDecodeError as exc:
        raise DamagedFileError(_damaged(path, f"not UTF-8 text at byte {exc.start}", advice)) from None


def _damaged(path: str, what: str, advice: str) -> str:
    return f"{path} is damaged ({what})" + (f"; {advice}" if advice else "")


def damaged(path: str, what: str, advice: str = "") -> DamagedFileError:
    """A :class:`DamagedFileError` saying ``path`` is damaged (``what``) and
    ``advice``."""
    return DamagedFileError(_damaged(path, " ".join(str(what).split()), advice))


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "wb", encoding: str | None = None, newline: str | None = None):
    """A file object whose content replaces ``path`` only once it is complete and
    flushed to disk: a reader (or a kill, or a full disk) sees the old file or the
    new one whole, never a part. What fails inside the block leaves ``path`` as it
    was and no temporary file behind."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, mode, encoding=encoding, newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(path) or ".")
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Write a text file through :func:`atomic_file`."""
    with atomic_file(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write a binary file through :func:`atomic_file`."""
    with atomic_file(path, "wb") as fh:
        fh.write(data)


def fsync_dir(path: str) -> None:
    """Flush a folder's entries (a rename into it) to disk; best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is a write that failed for want of space (or quota)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # h5py and TensorFlow wrap the C error: only the text is left.
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


def remove_path(path: str) -> None:
    """Remove a folder (not through a link) or a file; what cannot be removed stays."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except OSError:
            pass
