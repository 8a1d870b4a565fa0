"""The `anet-tf` console entry: set up the process, then run the command line.

Two things must happen before TensorFlow is imported, so they live here and not in
`cli.py`:

* ``TF_ENABLE_ONEDNN_OPTS=1`` on x86-64 Linux unless the user set it. TensorFlow
  enables its oneDNN kernels by default only on some CPUs (not, for example, on AMD
  EPYC, where its own kernels are built without AVX2/FMA); with them a CPU train
  step costs about a third less CPU time per image (docs/performance.md).
* the allocator (see `allocator.py`): re-execute once with tcmalloc preloaded.

Calling `cli.main` in-process (tests, notebooks) does neither.
"""

from __future__ import annotations

import os
import platform
import sys

from anet_tf import allocator

ONEDNN = "TF_ENABLE_ONEDNN_OPTS"


def tune_environment(environ=os.environ) -> None:
    """The process environment the project's commands and benchmarks run with."""
    if sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64"):
        environ.setdefault(ONEDNN, "1")


def prepare_process(argv: list[str], command: list[str] | None = None) -> None:
    """oneDNN setting, then the allocator re-execution (``command``: what to re-run,
    default ``python -m anet_tf ARGV``); benchmarks call it with their own command."""
    tune_environment()
    allocator.relaunch(argv, command=command)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        prepare_process(argv)
    except ValueError as exc:
        print(f"anet-tf: error: {exc}", file=sys.stderr)
        return 2
    from anet_tf.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
