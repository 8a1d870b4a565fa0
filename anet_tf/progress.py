"""Progress of long work, in the two forms an output takes: a bar redrawn in place
on a terminal, one plain line per 10 % otherwise (a log file or a pipe stays short
and free of terminal codes). On stdout, beside the other ``[anet-tf]`` lines of a
command, by default: stderr is for the one line of an error.

Every layer may import this module; it imports nothing of the package.
:func:`note` writes one plain line of what is under way (alike in both forms).
:func:`silenced` turns every :class:`Progress` and :func:`note` off for a block
(``--quiet``).
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time

_ENABLED = contextvars.ContextVar("anet_tf_progress_enabled", default=True)


@contextlib.contextmanager
def silenced(quiet: bool = True):
    """No :class:`Progress` draws anything inside the block (when ``quiet``)."""
    token = _ENABLED.set(False) if quiet else None
    try:
        yield
    finally:
        if token is not None:
            _ENABLED.reset(token)


def enabled() -> bool:
    """False inside :func:`silenced`."""
    return _ENABLED.get()


def is_terminal(stream) -> bool:
    """Whether ``stream`` is a terminal (a bar there; plain lines otherwise)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def note(text: str, stream=None) -> None:
    """One line of what long work is doing now (``reading``, ``training``), on
    ``stream`` (default stdout), alike on a terminal and in a file; nothing inside
    :func:`silenced`."""
    if _ENABLED.get():
        stream = stream or sys.stdout
        stream.write(text + "\n")
        stream.flush()


class Progress:
    """A progress bar on ``stream`` (default stdout): redrawn in place on a
    terminal, one line per 10 % of ``total`` otherwise.

    Args:
        total: units of the whole work.
        label: what is done, first on the line ("embed", "features").
        enabled: False draws nothing (nor does anything inside :func:`silenced`).
        unit: the unit of the rate ("img": ``img/s``).
    """

    def __init__(self, total: int, label: str, enabled: bool = True, stream=None,
                 unit: str = "img"):
        self.total = max(total, 1)
        self.label = label
        self.enabled = enabled and _ENABLED.get()
        self.stream = stream or sys.stdout
        self.unit = unit
        self.done = 0
        self.start = time.perf_counter()
        self._tty = is_terminal(self.stream)
        self._last_decile = -1

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        fraction = min(self.done / self.total, 1.0)
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        text = (
            f"{self.label} {self.done}/{self.total} [{'#' * int(30 * fraction):<30}] "
            f"{rate:.1f} {self.unit}/s, {elapsed:.0f}s elapsed, ETA {eta:.0f}s"
        )
        if self._tty:
            self.stream.write("\r" + text)
            self.stream.flush()
        elif int(10 * fraction) > self._last_decile:
            self._last_decile = int(10 * fraction)
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._tty and self.done:
            self.stream.write("\n")
            self.stream.flush()
