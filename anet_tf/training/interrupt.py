"""Ctrl-C that is never lost during training.

Python's own SIGINT handler raises ``KeyboardInterrupt`` in whatever code runs when
the signal arrives. When that is a ``__del__`` method or a weakref callback (for
example TensorFlow releasing a traced function, or JAX's garbage-collection hook),
Python prints "Exception ignored in ..." and goes on: the run would then train to
its end as if Ctrl-C had never been pressed. Inside :func:`kept_interrupts` the
signal is also remembered, and :class:`InterruptCheck`, the first callback of every
stage (added by ``training/fit.py``), raises it again at the next step or epoch end.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

import keras

_requested = False


def _remember_and_raise(signum, frame):
    global _requested
    _requested = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def kept_interrupts():
    """SIGINT raises ``KeyboardInterrupt`` as Python's handler does, and is
    remembered for :func:`raise_if_interrupted`. A handler someone else installed
    (an application embedding the package) is left alone, as is a call from another
    thread than the main one (only it may set signal handlers)."""
    global _requested
    _requested = False
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    previous = signal.signal(signal.SIGINT, _remember_and_raise)
    previous_hook = sys.unraisablehook

    def hook(unraisable):
        # A swallowed Ctrl-C is raised again at the next step: not worth a traceback.
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous_hook(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook
        _requested = False


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` when a SIGINT arrived that nothing raised."""
    global _requested
    if _requested:
        _requested = False
        raise KeyboardInterrupt


class InterruptCheck(keras.callbacks.Callback):
    """Raises a remembered Ctrl-C at the next step end or epoch end."""

    def on_train_batch_end(self, batch, logs=None):
        raise_if_interrupted()

    def on_epoch_end(self, epoch, logs=None):
        raise_if_interrupted()
