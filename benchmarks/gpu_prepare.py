"""Collect what ``benchmarks/gpu_run.py`` needs on a GPU machine that has JAX and
PyTorch but no Keras and no network: the wheels it lacks and a FastReID work tree.

- Wheels (``--wheels``, default ``.gpu_wheels/``): ``pip download --no-deps`` of
  ``WHEELS`` for the GPU machine's Python (``--python-version``, 3.12) on x86-64
  Linux: Keras 3 and its two requirements that such an image lacks (namex, optree;
  absl-py, h5py, ml-dtypes, numpy, packaging and rich are there), and FastReID's two
  pure-Python requirements (yacs, termcolor; tabulate, PyYAML are there).
- FastReID (``--fastreid-dir``, default ``.fastreid/``): ``fastreid/``, ``configs/``
  and ``LICENSE`` of a FastReID checkout given by ``--fastreid`` (a git directory,
  bare or not, whose HEAD is exported with ``git archive``, or a plain copy with a
  ``fastreid/`` folder), and its commit in ``COMMIT``. FastReID's code is used where
  it lies, never copied into the project.

Both folders are git-ignored. The script then checks the size of what travels (the
repository's tracked and untracked-but-not-ignored files plus the two folders)
against ``--limit-mib`` and prints the command to run there.

    git clone https://github.com/JDAI-CV/fast-reid /tmp/fast-reid
    python benchmarks/gpu_prepare.py --fastreid /tmp/fast-reid
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEELS = ["keras==3.15.1", "namex==0.1.0", "optree==0.20.0", "yacs==0.1.8", "termcolor==3.3.0"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]
FASTREID_PATHS = ["fastreid", "configs", "LICENSE"]


def download_wheels(dest: str, python_version: str, specs=WHEELS) -> list[str]:
    os.makedirs(dest, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--python-version", python_version, "--implementation", "cp",
        *[arg for p in PLATFORMS for arg in ("--platform", p)], "-d", dest, *specs,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"gpu_prepare.py: pip download failed:\n{proc.stderr[-3000:]}")
    names = sorted(f for f in os.listdir(dest) if f.endswith(".whl"))
    wanted = {s.split("==")[0].replace("-", "_").lower() for s in specs}
    stray = [f for f in names if f.split("-")[0].lower() not in wanted]
    dists = [f.split("-")[0].lower() for f in names]
    twice = sorted({d for d in dists if dists.count(d) > 1})
    if stray or twice:
        raise SystemExit(
            f"gpu_prepare.py: {dest} holds wheels not in the list ({stray}) or two versions of one ({twice}): "
            "remove them (two versions stop the install there)"
        )
    return names


def _git(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, **kw)


def export_fastreid(source: str, dest: str) -> str:
    """Put FastReID's ``FASTREID_PATHS`` from ``source`` into a fresh ``dest``;
    returns the commit (or 'unknown' for a plain copy)."""
    if not os.path.isdir(source):
        raise SystemExit(f"gpu_prepare.py: --fastreid {source}: no such folder")
    probe = _git(["--git-dir", source, "rev-parse", "HEAD"], text=True)
    git_dir = source if probe.returncode == 0 else None
    if git_dir is None and os.path.exists(os.path.join(source, ".git")):
        git_dir = os.path.join(source, ".git")
        probe = _git(["--git-dir", git_dir, "rev-parse", "HEAD"], text=True)
    tmp = tempfile.mkdtemp(prefix="fastreid_", dir=os.path.dirname(os.path.abspath(dest)))
    try:
        if git_dir is not None and probe.returncode == 0:
            commit = probe.stdout.strip()
            archive = _git(["--git-dir", git_dir, "archive", "--format=tar", "HEAD", *FASTREID_PATHS])
            if archive.returncode != 0:
                raise SystemExit(f"gpu_prepare.py: git archive of {source} failed: {archive.stderr.decode()[-500:]}")
            subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        elif os.path.isdir(os.path.join(source, "fastreid")):
            commit = "unknown (copied from a folder)"
            for name in FASTREID_PATHS:
                path = os.path.join(source, name)
                if os.path.isdir(path):
                    shutil.copytree(path, os.path.join(tmp, name))
                elif os.path.exists(path):
                    shutil.copy2(path, tmp)
        else:
            raise SystemExit(f"gpu_prepare.py: --fastreid {source}: neither a git checkout nor a folder with fastreid/")
        if not os.path.isfile(os.path.join(tmp, "configs", "Market1501", "bagtricks_R50-ibn.yml")):
            raise SystemExit(f"gpu_prepare.py: --fastreid {source}: no configs/Market1501/bagtricks_R50-ibn.yml (not FastReID?)")
        with open(os.path.join(tmp, "COMMIT"), "w") as fh:
            fh.write(commit + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return commit


def folder_bytes(path: str) -> int:
    total = 0
    for base, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(base, f)) for f in files)
    return total


def tree_bytes(root: str) -> int:
    """Bytes of the repository's tracked and untracked-but-not-ignored files."""
    proc = _git(["-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"])
    if proc.returncode != 0:
        raise SystemExit(f"gpu_prepare.py: git ls-files in {root} failed: {proc.stderr.decode()[-300:]}")
    names = [n for n in proc.stdout.decode().split("\0") if n]
    return sum(os.path.getsize(os.path.join(root, n)) for n in names if os.path.isfile(os.path.join(root, n)))


def ignored(root: str, path: str) -> bool:
    return _git(["-C", root, "check-ignore", "-q", os.path.relpath(path, root)]).returncode == 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fastreid", required=True, help="a FastReID git checkout (bare or not) or a folder with fastreid/")
    parser.add_argument("--wheels", default=os.path.join(ROOT, ".gpu_wheels"))
    parser.add_argument("--fastreid-dir", default=os.path.join(ROOT, ".fastreid"))
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python")
    parser.add_argument("--limit-mib", type=float, default=64, help="what may travel to the GPU machine")
    args = parser.parse_args(argv)
    for path in (args.wheels, args.fastreid_dir):
        if not ignored(ROOT, path):
            raise SystemExit(f"gpu_prepare.py: {path} is not git-ignored: it would be committed or travel twice")
    wheels = download_wheels(args.wheels, args.python_version)
    commit = export_fastreid(args.fastreid, args.fastreid_dir)
    sizes = {
        "working tree": tree_bytes(ROOT),
        os.path.relpath(args.wheels, ROOT): folder_bytes(args.wheels),
        os.path.relpath(args.fastreid_dir, ROOT): folder_bytes(args.fastreid_dir),
    }
    total = sum(sizes.values())
    print(f"wheels: {', '.join(wheels)}")
    print(f"FastReID: {commit}")
    for name, size in sizes.items():
        print(f"  {name}: {size / 2**20:.1f} MiB")
    print(f"  total: {total / 2**20:.1f} MiB of {args.limit_mib:g} MiB")
    if total > args.limit_mib * 2**20:
        print(f"gpu_prepare.py: {total / 2**20:.1f} MiB is over the {args.limit_mib:g} MiB that may travel", file=sys.stderr)
        return 1
    carry = [os.path.relpath(args.wheels, ROOT), os.path.relpath(args.fastreid_dir, ROOT)]
    print(f"carry: {carry}")
    print('run there: PYTHONUNBUFFERED=1 python3 benchmarks/gpu_run.py --out "$OUT"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
