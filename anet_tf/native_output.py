"""What TensorFlow's C++ code prints to the process's stderr, kept from users when it
is noise.

Some of it cannot be turned off: with ``TF_ENABLE_ONEDNN_OPTS=1`` (which `anet-tf`
sets, see `launch.py`) TensorFlow prints "oneDNN custom operations are on ..." at
import, through absl before its logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL``
does not apply; the TFLite converter and interpreter print their settings on every
call. :func:`stderr_filtered` captures file descriptor 2 around a block and writes
back every line that is not known noise (everything when the block raises).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

# Printed while TensorFlow is imported, before absl logging is initialised.
TF_IMPORT_NOISE = re.compile(
    r"(All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|^I0000 .*(oneDNN custom operations are on|cpu_feature_guard)"
    r"|^To enable the following instructions: .* rebuild TensorFlow"
    r"|^\s*$)"
)


@contextlib.contextmanager
def stderr_filtered(noise: re.Pattern):
    """Capture what native code writes to file descriptor 2 while the block runs, and
    write back only the lines ``noise`` does not match; everything is written back
    when the block raises, so no error is ever hidden."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines() if failed or not noise.search(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()


def import_tensorflow():
    """``import tensorflow``, without its start-up lines (TF_IMPORT_NOISE); a no-op
    filter when TensorFlow is already imported."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with stderr_filtered(TF_IMPORT_NOISE):
        import tensorflow

    return tensorflow
