"""The memory allocator the `anet-tf` command runs with.

Why: with glibc's malloc, TensorFlow's CPU kernels and tf.data threads return their
large buffers to the kernel after every step and fault them back in on the next one;
tcmalloc keeps them, which cuts the system time of a CPU training run several fold
(figures in docs/performance.md).
A shared library can only replace malloc when it is loaded before the process starts,
so the command re-executes itself once with ``LD_PRELOAD`` set.

``ANET_TF_MALLOC`` chooses: ``auto`` (default: tcmalloc if installed, else jemalloc,
else the system allocator), ``tcmalloc``, ``jemalloc`` or ``system`` (never re-exec).
Nothing is downloaded: the libraries come from the system's packages
(``apt install libtcmalloc-minimal4``, ``conda install gperftools``).
"""

from __future__ import annotations

import glob
import os
import sys

ENV = "ANET_TF_MALLOC"
_GUARD = "ANET_TF_MALLOC_CHOSEN"  # set in the re-executed process: never loop
CHOICES = ("auto", "tcmalloc", "jemalloc", "system")

# Library file names per allocator, best first.
_NAMES = {
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"),
    "jemalloc": ("libjemalloc.so.2", "libjemalloc.so.1"),
}
# The same names without their version ("libtcmalloc_minimal.so"), as they appear in
# /proc/self/maps and LD_PRELOAD whatever the installed version.
_STEMS = {kind: tuple(name.split(".so")[0] + ".so" for name in names) for kind, names in _NAMES.items()}


def search_dirs() -> list[str]:
    """Where system and conda packages put shared libraries."""
    dirs = [os.path.join(sys.prefix, "lib")]
    dirs += glob.glob("/usr/lib/*-linux-gnu") + glob.glob("/lib/*-linux-gnu")
    dirs += ["/usr/lib64", "/usr/lib", "/usr/local/lib", "/lib64", "/lib"]
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def find_library(kind: str, dirs: list[str] | None = None) -> str | None:
    """Path of the first installed library of ``kind`` ('tcmalloc' or 'jemalloc')."""
    for name in _NAMES[kind]:
        for d in search_dirs() if dirs is None else dirs:
            path = os.path.join(d, name)
            if os.path.isfile(path):
                return path
    return None


def in_use(maps_file: str = "/proc/self/maps") -> str:
    """The allocator this process runs with: 'tcmalloc', 'jemalloc' or 'system'."""
    try:
        with open(maps_file) as f:
            maps = f.read()
    except OSError:
        return "system"
    for kind, stems in _STEMS.items():
        if any(stem in maps for stem in stems):
            return kind
    return "system"


def choice(environ=os.environ) -> str:
    """The user's ``ANET_TF_MALLOC`` (default 'auto'); ValueError naming it if unknown."""
    value = environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"{ENV}={environ.get(ENV)!r}: expected one of {', '.join(CHOICES)}")
    return value


def plan(environ=os.environ, dirs: list[str] | None = None) -> tuple[str | None, str]:
    """(library to preload or None, one-line reason). None means run as we are."""
    want = choice(environ)
    if want == "system" or _GUARD in environ or not sys.platform.startswith("linux"):
        return None, "as requested" if want == "system" else "already chosen"
    preloaded = environ.get("LD_PRELOAD", "")
    if any(stem in preloaded for stems in _STEMS.values() for stem in stems):
        return None, "LD_PRELOAD already holds an allocator"
    kinds = ["tcmalloc", "jemalloc"] if want == "auto" else [want]
    for kind in kinds:
        path = find_library(kind, dirs)
        if path:
            return path, kind
    return None, f"no {' or '.join(kinds)} library installed"


def relaunch(argv: list[str], environ=None, command: list[str] | None = None) -> None:
    """Re-execute this command with a faster allocator preloaded, if one is installed.

    Returns (without doing anything) when nothing is to be done; otherwise the
    process is replaced and this call never returns. ``command`` is what to run
    (default: ``python -m anet_tf ARGV``); tests pass their own.
    """
    environ = dict(os.environ if environ is None else environ)
    want = choice(environ)
    path, reason = plan(environ)
    if path is None:
        if want in ("tcmalloc", "jemalloc") and _GUARD not in environ:
            print(f"anet-tf: warning: {ENV}={want} but {reason}; using the system allocator", file=sys.stderr)
        return
    environ["LD_PRELOAD"] = os.pathsep.join(p for p in (path, environ.get("LD_PRELOAD", "")) if p)
    environ[_GUARD] = reason
    command = command or [sys.executable, "-m", "anet_tf", *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, environ)
