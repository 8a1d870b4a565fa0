"""How a command ends: its exit code, and the one line a user reads when it fails.

Every command handler returns an exit code or raises; :func:`run` turns what it
raises into that line on stderr and the code:

====  =================================================================  ==========
code  meaning                                                            line
====  =================================================================  ==========
0     done
1     the input is wrong or missing (a config key, a file, a dataset     ``error:``
      row, an image that does not decode, a server that does not answer,
      a damaged file of a run), or a folder is read-only, not writable, or
      a file where a folder should be (the message names the path)
2     the arguments do not go together (argparse's own errors too)       ``error:``
3     training stopped on a non-finite loss or weights                   ``stopped:``
4     a run folder or a gallery is in use by another process, or the     ``error:``
      disk is full
130   interrupted (Ctrl-C); what was completed is kept                   ``interrupted:``
====  =================================================================  ==========

The line is ``anet-tf <command>: error: <message>`` (one line, whatever the
message). ``ANET_TF_DEBUG=1`` raises instead, with the traceback. Anything else is
a bug and keeps its traceback.

This module imports nothing heavy: the error classes of training and TensorFlow
are recognised only when their module is already loaded (an error of a module that
was never imported cannot have been raised).
"""

from __future__ import annotations

import errno
import os
import sys

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3
EXIT_RUN_FOLDER = 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a process stopped by Ctrl-C

# Errors of the file system a user can act on (the message names the path): a
# read-only folder, no permission, a file where a folder is expected or the reverse.
_USER_OS_ERRORS = frozenset(
    {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG}
)

# The longest message printed: a value quoted from a huge input must not become a
# megabyte of terminal output.
MESSAGE_LIMIT = 1000


class CommandError(Exception):
    """A command cannot do what was asked (exit 1); the message says why."""


class UsageError(CommandError):
    """Arguments that do not go together (exit 2)."""


class Interrupted(Exception):
    """Ctrl-C, with what became of the command's output (exit 130); a command
    raises it from the ``KeyboardInterrupt`` when it has something to say."""


def _loaded(module: str, name: str):
    """The class ``module.name`` (``name`` may be dotted) when the module is
    imported, else None."""
    found = sys.modules.get(module)
    for part in name.split("."):
        found = getattr(found, part, None)
    return found


def _is(exc: BaseException, module: str, name: str) -> bool:
    cls = _loaded(module, name)
    return cls is not None and isinstance(exc, cls)


def exit_code(exc: BaseException) -> int | None:
    """The exit code of a user's error, or None for anything else (a bug)."""
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if _is(exc, "anet_tf.training.callbacks", "NonFiniteLossError"):
        return EXIT_STOPPED
    if _is(exc, "anet_tf.training.run", "RunFolderError"):  # DiskFullError too
        return EXIT_RUN_FOLDER
    if _is(exc, "anet_tf.io", "LockHeldError"):  # a gallery (or other) in use
        return EXIT_RUN_FOLDER
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return EXIT_RUN_FOLDER
    if isinstance(exc, OSError) and exc.errno in _USER_OS_ERRORS:
        return EXIT_FAILED  # the message names the path
    # ConfigError, DataError, SearchError and VisualizeError are ValueErrors.
    if isinstance(exc, (CommandError, FileNotFoundError, ImportError, ValueError)):
        return EXIT_FAILED
    if _is(exc, "tensorflow", "errors.InvalidArgumentError"):  # e.g. an undecodable image
        return EXIT_FAILED
    return None


def message(exc: BaseException) -> str:
    """What ``exc`` says, on one line."""
    if _is(exc, "tensorflow", "errors.InvalidArgumentError"):
        lines = exc.message.strip().splitlines()
        wanted = [line for line in lines if "cannot decode image" in line] or lines[:1]
        return wanted[0].strip() if wanted else type(exc).__name__
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > MESSAGE_LIMIT:
        text = f"{text[:MESSAGE_LIMIT]}... (message cut, {len(text)} characters)"
    return text


def report(command: str, exc: BaseException) -> int:
    """Print ``exc`` as ``anet-tf <command>: error: ...`` (``stopped:`` for a
    training stopped on a non-finite value) and return its exit code.

    Raises:
        exc itself: it is not a user's error (:func:`exit_code` is None).
    """
    code = exit_code(exc)
    if code is None:
        raise exc
    what = "stopped" if code == EXIT_STOPPED else "error"
    print(f"anet-tf {command}: {what}: {message(exc)}", file=sys.stderr)
    return code


def run(command: str, handler, args) -> int:
    """``handler(args)``, its errors reported by :func:`report`; Ctrl-C is one
    ``interrupted`` line and exit 130."""
    try:
        return handler(args)
    except (KeyboardInterrupt, Interrupted) as exc:
        if os.environ.get("ANET_TF_DEBUG"):
            raise
        said = f": {message(exc)}" if isinstance(exc, Interrupted) else ""
        print(f"anet-tf {command}: interrupted{said}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if exit_code(exc) is None or os.environ.get("ANET_TF_DEBUG"):
            raise
        return report(command, exc)
