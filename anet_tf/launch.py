"""The `anet-tf` console entry: choose the allocator, then run the command line.

Kept apart from `cli.py` so that the re-execution (see `allocator.py`) happens before
anything heavy is imported, and so that calling `cli.main` in-process (tests,
notebooks) never replaces the process.
"""

from __future__ import annotations

import sys

from anet_tf import allocator


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        allocator.relaunch(argv)
    except ValueError as exc:
        print(f"anet-tf: error: {exc}", file=sys.stderr)
        return 2
    from anet_tf.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
