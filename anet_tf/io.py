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
    _fsync_path(path)


def _fsync_path(path: str) -> None:
    """Flush a file's or folder's data to disk; best effort."""
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


# ------------------------------------------------------------------ folder swaps
# A folder is replaced in three renames, each atomic: the old one aside
# (``.NAME.replaced``), the new one in, then the old one removed. A kill between
# the first two leaves no ``NAME`` but its last complete version aside, which
# :func:`recover_folder` puts back (roll back: the interrupted write never
# happened) and which a reader may read in the meantime (:func:`committed_folder`).
ASIDE_SUFFIX = ".replaced"
STAGING_MARK = ".staging-"


def aside_path(target: str) -> str:
    """Where :func:`replace_folder` keeps the old ``target`` while swapping."""
    parent, name = os.path.split(os.path.abspath(target))
    return os.path.join(parent, f".{name}{ASIDE_SUFFIX}")


def staging_path(target: str) -> str:
    """A folder beside ``target`` (same file system, so it renames in) that this
    process writes the new ``target`` into; :func:`recover_folder` removes it when
    its writer is gone."""
    parent, name = os.path.split(os.path.abspath(target))
    return os.path.join(parent, f".{name}{STAGING_MARK}{os.getpid()}")


def replace_folder(staging: str, target: str) -> None:
    """Make the complete folder ``staging`` the folder ``target``, atomically for
    a reader and for a kill at any point: the old ``target`` (if any) is renamed
    aside, ``staging`` renamed in, and only then the old one removed."""
    target = os.path.abspath(target)
    parent = os.path.dirname(target)
    aside = aside_path(target)
    _fsync_tree(staging)
    if os.path.lexists(aside):  # an earlier swap's leftover (its target is whole)
        if os.path.lexists(target):
            remove_path(aside)
        else:
            os.replace(aside, target)
    if os.path.lexists(target):
        os.replace(target, aside)
    try:
        os.replace(staging, target)
    except BaseException:
        if os.path.lexists(aside) and not os.path.lexists(target):
            os.replace(aside, target)  # the old one back: nothing happened
        raise
    fsync_dir(parent)
    remove_path(aside)


def recover_folder(target: str) -> str | None:
    """Finish what an interrupted :func:`replace_folder` of ``target`` left: put the
    old folder back where the new one never arrived, remove it where the new one
    did, and remove the staging folders of processes that no longer run. Call it
    holding the writer's lock of ``target``. Returns what was done (one line), or
    None where nothing was left."""
    target = os.path.abspath(target)
    parent, name = os.path.split(target)
    done = None
    aside = aside_path(target)
    if os.path.lexists(aside):
        if os.path.lexists(target):
            remove_path(aside)
        else:
            os.replace(aside, target)
            fsync_dir(parent)
            done = (
                f"{target}: an interrupted replacement was rolled back (the last "
                "complete version is back)"
            )
    prefix = f".{name}{STAGING_MARK}"
    if os.path.isdir(parent):
        for entry in os.listdir(parent):
            if not entry.startswith(prefix):
                continue
            pid = entry[len(prefix) :]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                remove_path(os.path.join(parent, entry))
    return done


def committed_folder(target: str) -> str:
    """The folder a reader should read for ``target``: ``target`` itself, or,
    while a replacement is interrupted (``target`` missing), its last complete
    version kept aside."""
    if not os.path.lexists(target) and os.path.isdir(aside_path(target)):
        return aside_path(target)
    return target


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_tree(folder: str) -> None:
    for root, _dirs, files in os.walk(folder):
        for name in files:
            _fsync_path(os.path.join(root, name))
        fsync_dir(root)


# ------------------------------------------------------------------------- locks
class LockHeldError(ValueError):
    """Another process holds a lock (the message names it and what to do)."""


class FileLock:
    """Exclusive use of something by one process, through a kernel ``flock`` on
    the file ``path``: the kernel releases it when the holder exits, however it
    exits (``kill -9`` included), so a stale lock never blocks anyone. The file
    keeps the holder's pid, host and start time, which name the holder when a
    second process is refused. A lock on a network file system may not exclude
    processes on other hosts.

    Args:
        path: the lock file (created, never removed: removing it would let two
            processes lock two different files of one name).
        what: how to name the locked thing in a refusal.
        advice: what the refused process should do (ends the message).
        wait_s: how long to wait for the holder to let go before refusing
            (0: refuse at once).
        shared: a shared (reader's) lock: many holders, none while an exclusive
            one is held.
    """

    def __init__(
        self,
        path: str,
        what: str,
        advice: str = "wait for it to finish or stop it",
        wait_s: float = 0.0,
        shared: bool = False,
    ):
        self.path = path
        self.what = what
        self.advice = advice
        self.wait_s = wait_s
        self.shared = shared
        self._fh = None
        self.took_over: str | None = None

    def acquire(self) -> FileLock:
        import fcntl
        import time

        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        # errors="replace": a damaged record must not stop the lock (nor its refusal)
        fh = open(self.path, "a+", encoding="utf-8", errors="replace")
        mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        deadline = time.monotonic() + max(0.0, self.wait_s)
        delay = 0.05
        looked_again = False
        while True:
            try:
                fcntl.flock(fh.fileno(), mode | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    fh.close()
                    raise
                if time.monotonic() >= deadline:
                    fh.seek(0)
                    text = fh.read()
                    if not text.strip() and not looked_again:
                        # No record: the holder let go after the refusal, or took the
                        # lock and has not named itself yet; look once more.
                        looked_again = True
                        time.sleep(0.05)
                        continue
                    holder = describe_holder(text)
                    fh.close()
                    waited = f" (waited {self.wait_s:g} s)" if self.wait_s else ""
                    raise LockHeldError(
                        f"{self.what} is in use by {holder}{waited}; {self.advice}"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        self._fh = fh
        fh.seek(0)
        previous = fh.read().strip()
        if self.shared:
            # No writer holds it, so a record is a killed writer's: a writer refused
            # while this reader holds it must not be told that one holds it.
            if previous:
                with contextlib.suppress(OSError):
                    fh.truncate(0)
                    fh.flush()
            return self
        if previous:
            self.took_over = describe_holder(previous)
        try:
            self._write_holder()
        except OSError:  # a full disk: the lock holds, only unnamed
            pass
        return self

    def _write_holder(self) -> None:
        import datetime
        import socket

        fh = self._fh
        fh.seek(0)
        fh.truncate()
        fh.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": datetime.datetime.now().isoformat(timespec="seconds"),
                }
            )
        )
        fh.flush()

    def release(self) -> None:
        import fcntl

        if self._fh is None:
            return
        try:
            if not self.shared:
                self._fh.seek(0)
                self._fh.truncate()
                self._fh.flush()
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        finally:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def describe_holder(text: str) -> str:
    """The holder a lock file records, for a message ("process 12 on host (since
    ...)"), or "another process" where the record is empty or unreadable."""
    try:
        info = json.loads(text)
        return f"process {info['pid']} on {info['host']} (since {info['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"
