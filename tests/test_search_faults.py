"""Faults around a faiss gallery folder and the embeddings files, through the
command line (and the API where the command line cannot reach): damaged files are
one line naming the file with the documented exit code; a full disk, a failure or
a kill -9 in the middle of `index build` / `index add`, and two adds at once leave
the gallery whole. After each fault the gallery loads, its count equals its rows,
its paths are unique, and it answers searches exactly as before the failed write
(or, where a write went through, with the new rows too)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import one_line

from anet_tf.cli import main
from anet_tf.io import LockHeldError
from anet_tf.io import aside_path
from anet_tf.io import committed_folder
from anet_tf.search.embeddings import load_embeddings
from anet_tf.search.embeddings import save_embeddings
from anet_tf.search.errors import GalleryDiskFullError
from anet_tf.search.errors import SearchError
from anet_tf.search.index import load_index
from anet_tf.search.index import lock_path
from anet_tf.search.index import writer_lock
from anet_tf.search.targets import add_to_gallery
from anet_tf.search.targets import build_gallery

DIM = 8
LOCK_ADVICE = "wait for the other `index add` or `index build` to finish"

# `anet-tf` in a fresh process, without TensorFlow's start-up import (seconds, and
# nothing an index command uses); argv[1] names a point at which the process stops
# and waits to be killed ("write": the staging folder half written; "swap": the old
# folder renamed aside, the new one not yet in; "none").
CLI = textwrap.dedent(
    """
    import os, sys, time
    import faiss
    from anet_tf import native_output
    from anet_tf.cli import main

    native_output.import_tensorflow = lambda: None
    point, args = sys.argv[1], sys.argv[2:]

    def stop():
        print("stopped", flush=True)
        time.sleep(120)

    if point == "write":
        real_write = faiss.write_index

        def write_index(index, path):
            real_write(index, path)
            stop()

        faiss.write_index = write_index
    elif point == "swap":
        real_replace = os.replace

        def replace(src, dst):
            if ".staging-" in os.path.basename(src):
                stop()
            return real_replace(src, dst)

        os.replace = replace
    elif point == "go":  # start when the file argv[2] appears
        go, args = args[0], args[1:]
        print("ready", flush=True)
        while not os.path.exists(go):
            time.sleep(0.001)
    sys.exit(main(args))
    """
)


@pytest.fixture(autouse=True)
def no_tensorflow_start(monkeypatch):
    """`anet-tf` imports TensorFlow before most commands (to silence its start-up
    lines); the commands here never use it, and its import is 10-15 s of this
    file's time on 2 cores."""
    from anet_tf import native_output

    monkeypatch.setattr(native_output, "import_tensorflow", lambda: None)


def cli_process(point, *args):
    return subprocess.Popen(
        [sys.executable, "-c", CLI, point, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_at(point, *args):
    """Run ``anet-tf ARGS`` until it reaches ``point``, then kill -9 it."""
    proc = cli_process(point, *args)
    line = proc.stdout.readline().strip()
    assert line == "stopped", proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def digest(folder) -> str:
    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        h.update(name.encode())
        with open(os.path.join(folder, name), "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def leftovers(idx) -> list[str]:
    """Staging or aside folders of ``idx`` beside it."""
    parent, name = os.path.split(str(idx))
    return sorted(
        e
        for e in os.listdir(parent)
        if e.startswith(f".{name}.") and not e.endswith(".lock")
    )


def new_rows(random_embeddings, tag, n=6, seed=1):
    emb = random_embeddings(n, DIM, seed=seed)
    emb.paths = [f"/{tag}/{i:03d}.jpg" for i in range(n)]
    emb.source = tag
    return emb


@pytest.fixture
def gallery(tmp_path, random_embeddings, capsys):
    """A 24-row gallery built by `index build`, the queries, its answers to them,
    and an embeddings file of 6 new rows."""
    base = random_embeddings(24, DIM, seed=3)
    save_embeddings(base, str(tmp_path / "base.npz"))
    save_embeddings(new_rows(random_embeddings, "new"), str(tmp_path / "new.npz"))
    queries = random_embeddings(5, DIM, seed=99)
    save_embeddings(queries, str(tmp_path / "queries.npz"))
    idx = tmp_path / "idx"
    assert main(["index", "build", str(tmp_path / "base.npz"), "-o", str(idx)]) == 0
    capsys.readouterr()
    g = SimpleNamespace(
        idx=idx, dir=tmp_path, queries=queries.embedding, base=base.paths
    )
    g.answers = answers(g)
    g.digest = digest(idx)
    return g


def answers(g, idx=None):
    index = load_index(str(idx or g.idx))
    scores, ids = index.search(g.queries, 10)
    return scores, ids, index.paths


def assert_whole(g, paths=None, idx=None):
    """The gallery loads, count = rows, unique paths; it holds ``paths`` (default:
    as before) and answers as before (its rows after the old ones left out)."""
    index = load_index(str(idx or g.idx))
    assert len(index) == index.meta["count"] == len(index.items["path"])
    assert len(set(index.paths)) == len(index.paths)
    assert index.paths == (g.answers[2] if paths is None else paths)
    old = len(g.answers[2])
    new = [np.arange(old, len(index))] * len(g.queries)
    scores, ids = index.search(g.queries, 10, exclude=new)
    np.testing.assert_array_equal(ids, g.answers[1])
    np.testing.assert_array_equal(scores, g.answers[0])
    return index


# ------------------------------------------------------- damaged embeddings files
def damage_embeddings(src, dst, how):
    raw = open(src, "rb").read()
    with np.load(src) as data:
        arrays = {k: data[k] for k in data.files}
    if how == "truncated":
        open(dst, "wb").write(raw[: len(raw) * 2 // 3])
    elif how == "empty":
        open(dst, "wb").write(b"")
    elif how == "random":
        open(dst, "wb").write(np.random.default_rng(0).bytes(len(raw)))
    elif how == "key-missing":
        np.savez(dst, **{k: v for k, v in arrays.items() if k != "embedding"})
    elif how == "pickled":
        arrays["path"] = np.asarray(arrays["path"].tolist(), dtype=object)
        with open(dst, "wb") as fh:
            np.savez(fh, **arrays)
    elif how == "npy":
        with open(dst, "wb") as fh:
            np.save(fh, arrays["embedding"])
    elif how == "bad-model":
        arrays["model"] = np.asarray("{not json")
        np.savez(dst, **arrays)


EMBEDDINGS_DAMAGE = {
    "truncated": "a damaged .npz archive",
    "empty": "an empty file",
    "random": "not a NumPy .npz archive",
    "key-missing": "no 'embedding' array",
    "pickled": "the array 'path' holds Python objects (a pickle), which are not loaded",
    "npy": "a single .npy array, not an .npz archive",
    "bad-model": "its model record is not JSON",
}


@pytest.mark.parametrize("how", list(EMBEDDINGS_DAMAGE))
def test_a_damaged_embeddings_file_is_one_line_naming_it(gallery, capsys, how):
    bad = str(gallery.dir / f"{how}.npz")
    damage_embeddings(str(gallery.dir / "new.npz"), bad, how)
    says = f"{bad}: not an anet-tf embeddings file ({EMBEDDINGS_DAMAGE[how]}"
    for command, argv in (
        ("index", ["index", "add", gallery.idx, bad]),
        ("index", ["index", "build", bad, "-o", gallery.idx]),
        ("index", ["index", "build", bad, "-o", gallery.dir / "fresh"]),
        ("search", ["search", "--index", gallery.idx, "--query-embeddings", bad]),
        ("visualize", ["visualize", "projector", bad, "--out", gallery.dir / "proj"]),
    ):
        line = one_line(capsys, argv, 1)
        assert line.startswith(f"anet-tf {command}: error: {says}"), line
        assert "allow_pickle" not in line
    assert digest(gallery.idx) == gallery.digest and not leftovers(gallery.idx)
    assert not (gallery.dir / "fresh").exists()
    assert_whole(gallery)


def test_an_embeddings_file_cut_or_changed_anywhere_is_refused_or_read(gallery):
    """Every length of the file, and bytes changed at random: read whole, or refused
    with a SearchError naming it (never another exception)."""
    good = str(gallery.dir / "new.npz")
    raw = open(good, "rb").read()
    bad = str(gallery.dir / "cut.npz")
    rng = np.random.default_rng(5)
    trials = [raw[:cut] for cut in range(0, len(raw), 19)]
    for _ in range(100):
        data = bytearray(raw)
        data[rng.integers(len(raw))] = int(rng.integers(256))
        trials.append(bytes(data))
    refused = 0
    for data in trials:
        open(bad, "wb").write(data)
        try:
            load_embeddings(bad)
        except SearchError as exc:
            refused += 1
            assert str(exc).startswith(f"{bad}: not an anet-tf embeddings file (")
            assert "\n" not in str(exc) and "allow_pickle" not in str(exc)
    assert refused >= len(raw) // 19


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_embeddings_are_refused_naming_file_and_row(
    gallery, random_embeddings, capsys, value
):
    emb = new_rows(random_embeddings, "nan", n=8)
    emb.embedding[5, 2] = value
    emb.embedding[7, 0] = value
    bad = str(gallery.dir / "nonfinite.npz")
    save_embeddings(emb, bad)
    what = "NaN" if np.isnan(value) else "an infinite value"
    says = f"{bad}: row 5 (/nan/005.jpg) has {what} in its embedding (2 of 8 rows"
    for argv in (
        ["index", "add", gallery.idx, bad],
        ["index", "build", bad, "-o", gallery.idx],
    ):
        assert says in one_line(capsys, argv, 1)
    assert digest(gallery.idx) == gallery.digest
    with pytest.raises(SearchError, match=r"^nan: row 5 \(/nan/005.jpg\)"):
        build_gallery([emb], str(gallery.dir / "api"))  # unnamed: its source
    assert_whole(gallery)


# ------------------------------------------------------- damaged gallery files
def _damage_index(idx, how):
    items, faiss_file, meta = (
        os.path.join(idx, n) for n in ("items.npz", "index.faiss", "index.json")
    )
    if how == "items-truncated":
        raw = open(items, "rb").read()
        open(items, "wb").write(raw[: len(raw) // 2])
        return items, "not a NumPy .npz archive"
    if how == "items-empty":
        open(items, "wb").write(b"")
        return items, "not a NumPy .npz archive"
    if how == "items-pickled":
        with np.load(items) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["path"] = np.asarray(arrays["path"].tolist(), dtype=object)
        with open(items, "wb") as fh:
            np.savez(fh, **arrays)
        return items, "the array 'path' holds Python objects (a pickle)"
    if how == "items-key-missing":
        with np.load(items) as data:
            arrays = {k: data[k] for k in data.files if k != "pid"}
        with open(items, "wb") as fh:
            np.savez(fh, **arrays)
        return items, "no 'pid' array"
    if how == "faiss-truncated":
        raw = open(faiss_file, "rb").read()
        open(faiss_file, "wb").write(raw[: len(raw) - 10])
        return faiss_file, "truncated: the file ends before the index does"
    if how == "faiss-random":
        open(faiss_file, "wb").write(np.random.default_rng(1).bytes(300))
        return faiss_file, "not a faiss index: Index type"
    if how == "faiss-missing":
        os.remove(faiss_file)
        return faiss_file, "is missing: the index is incomplete"
    if how == "json-truncated":
        raw = open(meta, "rb").read()
        open(meta, "wb").write(raw[: len(raw) // 2])
        return meta, "not valid JSON: line"
    if how == "json-not-an-object":
        open(meta, "w").write("[1, 2]")
        return meta, "a JSON list, not an object"
    if how == "json-key-missing":
        text = open(meta).read().replace('"count"', '"kount"')
        open(meta, "w").write(text)
        return meta, "no 'count'"
    raise AssertionError(how)


INDEX_DAMAGE = [
    "items-truncated",
    "items-empty",
    "items-pickled",
    "items-key-missing",
    "faiss-truncated",
    "faiss-random",
    "faiss-missing",
    "json-truncated",
    "json-not-an-object",
    "json-key-missing",
]


@pytest.mark.parametrize("how", INDEX_DAMAGE)
def test_a_damaged_gallery_file_is_one_line_naming_it(gallery, capsys, how):
    file, says = _damage_index(str(gallery.idx), how)
    before = digest(gallery.idx)
    for command, argv in (
        (
            "search",
            [
                "search",
                "--index",
                gallery.idx,
                "--query-embeddings",
                gallery.dir / "queries.npz",
            ],
        ),
        ("index", ["index", "add", gallery.idx, gallery.dir / "new.npz"]),
    ):
        line = one_line(capsys, argv, 1)
        assert line.startswith(f"anet-tf {command}: error: {file}"), line
        assert says in line and "allow_pickle" not in line
        if "missing" not in says:
            assert f"is damaged ({says}" in line and "rebuild it" in line
    assert digest(gallery.idx) == before and not leftovers(gallery.idx)
    # rebuilt over the damaged folder, it answers as before
    one_line_ok = main(
        ["index", "build", str(gallery.dir / "base.npz"), "-o", str(gallery.idx)]
    )
    assert one_line_ok == 0
    assert_whole(gallery)


# ------------------------------------------------------------------- a full disk
def _fill_disk(monkeypatch, which):
    """Make the gallery's ``which`` file fail for want of space, as faiss and NumPy
    say it."""
    import faiss

    if which == "index.faiss":

        def write_index(index, path):
            raise RuntimeError(
                "Error in void faiss::write_index(const Index*, IOWriter*, int) at "
                "index_write.cpp:499: Error: 'ret == (size * 4)' failed: write error "
                f"in {path}: 1 != 2 (No space left on device)"
            )

        monkeypatch.setattr(faiss, "write_index", write_index)
    else:

        def savez(fh, **arrays):
            fh.write(b"PK\x03\x04 half")
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(np, "savez", savez)


@pytest.mark.parametrize("which", ["index.faiss", "items.npz"])
def test_a_full_disk_keeps_the_old_gallery(gallery, capsys, monkeypatch, which):
    fresh = gallery.dir / "fresh"
    with monkeypatch.context() as m:
        _fill_disk(m, which)
        for argv in (
            ["index", "add", gallery.idx, gallery.dir / "new.npz"],
            ["index", "build", gallery.dir / "new.npz", "-o", gallery.idx],
        ):
            line = one_line(capsys, argv, 4)
            assert (
                f"error: {gallery.idx}: no space left on device while writing" in line
            )
            assert "the old gallery is kept as it was" in line
            assert digest(gallery.idx) == gallery.digest and not leftovers(gallery.idx)
        argv = ["index", "build", gallery.dir / "new.npz", "-o", fresh]
        assert "no gallery was written" in one_line(capsys, argv, 4)
        assert not fresh.exists() and not leftovers(fresh)
    assert_whole(gallery)
    assert main(["index", "add", str(gallery.idx), str(gallery.dir / "new.npz")]) == 0
    assert_whole(gallery, gallery.base + [f"/new/{i:03d}.jpg" for i in range(6)])


def _mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    if not shutil.which("mount") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


def test_a_real_full_disk_keeps_the_old_gallery(tmp_path, random_embeddings, capsys):
    """A tmpfs that holds the gallery once and a half: `index add` and `index
    build` run out of space writing the second copy."""
    base = random_embeddings(3000, 32, seed=4)
    save_embeddings(base, str(tmp_path / "base.npz"))
    more = random_embeddings(100, 32, seed=5)
    more.paths = [f"/more/{i}.jpg" for i in range(100)]
    save_embeddings(more, str(tmp_path / "more.npz"))
    probe = tmp_path / "probe"
    build_gallery([base], str(probe))
    size = sum(os.path.getsize(probe / n) for n in os.listdir(probe))
    mnt = tmp_path / "small"
    _mount_tmpfs(mnt, size * 3 // 2)
    try:
        idx = mnt / "idx"
        shutil.copytree(probe, idx)
        g = SimpleNamespace(idx=idx, queries=random_embeddings(4, 32, seed=6).embedding)
        g.answers = answers(g)
        before = digest(idx)
        for argv in (
            ["index", "add", idx, tmp_path / "more.npz"],
            ["index", "build", tmp_path / "base.npz", "-o", idx],
        ):
            line = one_line(capsys, argv, 4)
            assert f"{idx}: no space left on device while writing the gallery (" in line
            assert "MiB free); the old gallery is kept as it was" in line
            assert digest(idx) == before and not leftovers(idx)
            assert_whole(g)
    finally:
        for _ in range(20):
            if (
                subprocess.run(["umount", str(mnt)], capture_output=True).returncode
                == 0
            ):
                break
            time.sleep(0.2)


# ---------------------------------------------------- failures and kills mid-write
def test_a_failure_between_the_two_renames_keeps_the_old_gallery(
    gallery, random_embeddings, capsys, monkeypatch
):
    real, error = os.replace, [errno.EIO]

    def replace(src, dst):  # the new folder in, after the old one went aside
        if ".staging-" in os.path.basename(src):
            raise OSError(error[0], "injected", src)
        return real(src, dst)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", replace)
        with pytest.raises(OSError, match="injected"):
            add_to_gallery(str(gallery.idx), [new_rows(random_embeddings, "api")])
        assert digest(gallery.idx) == gallery.digest and not leftovers(gallery.idx)
        error[0] = errno.ENOSPC  # through the command line: one line, exit 4
        argv = ["index", "add", gallery.idx, gallery.dir / "new.npz"]
        assert "the old gallery is kept as it was" in one_line(capsys, argv, 4)
        assert digest(gallery.idx) == gallery.digest and not leftovers(gallery.idx)
    assert_whole(gallery)
    assert main(["index", "add", str(gallery.idx), str(gallery.dir / "new.npz")]) == 0
    assert_whole(gallery, gallery.base + [f"/new/{i:03d}.jpg" for i in range(6)])


def test_kill9_between_the_two_renames_is_rolled_back(gallery, capsys):
    """Killed with the old folder aside and the new one not yet in: a reader reads
    the old version meanwhile; the next writer puts it back first."""
    kill_at("swap", "index", "add", gallery.idx, gallery.dir / "new.npz")
    assert not gallery.idx.exists()
    assert committed_folder(str(gallery.idx)) == aside_path(str(gallery.idx))
    assert_whole(gallery)  # load_index reads the folder aside
    # and so does `anet-tf search` (its path check finds the version aside)
    argv = ["search", "--index", str(gallery.idx), "--query-embeddings",
            str(gallery.dir / "queries.npz"), "--json"]
    assert main(argv) == 0
    found = json.loads(capsys.readouterr().out)["results"][0]["matches"]
    assert [m["id"] for m in found] == gallery.answers[1][0].tolist()
    assert main(["index", "add", str(gallery.idx), str(gallery.dir / "new.npz")]) == 0
    assert not leftovers(gallery.idx)
    assert_whole(gallery, gallery.base + [f"/new/{i:03d}.jpg" for i in range(6)])


def test_kill9_of_index_add_mid_write_keeps_the_gallery(gallery, random_embeddings):
    kill_at("write", "index", "add", gallery.idx, gallery.dir / "new.npz")
    assert [e.split("-")[0] for e in leftovers(gallery.idx)] == [".idx.staging"]
    assert digest(gallery.idx) == gallery.digest
    assert_whole(gallery)
    # the lock went with the process; the next add removes its staging folder
    add_to_gallery(str(gallery.idx), [new_rows(random_embeddings, "later")])
    assert not leftovers(gallery.idx)
    assert_whole(gallery, gallery.base + [f"/later/{i:03d}.jpg" for i in range(6)])


def test_kill9_of_index_build_mid_write_keeps_the_gallery(gallery):
    kill_at("write", "index", "build", gallery.dir / "new.npz", "-o", gallery.idx)
    assert digest(gallery.idx) == gallery.digest
    assert_whole(gallery)
    assert (
        main(["index", "build", str(gallery.dir / "new.npz"), "-o", str(gallery.idx)])
        == 0
    )
    assert not leftovers(gallery.idx)
    assert load_index(str(gallery.idx)).paths == [f"/new/{i:03d}.jpg" for i in range(6)]


# ------------------------------------------------------------------ two writers
HOLD = textwrap.dedent(
    """
    import sys, time
    from anet_tf.io import FileLock
    lock = FileLock(sys.argv[1], "x").acquire()
    print("held", flush=True)
    time.sleep(120)
    """
)


def test_a_writer_is_refused_at_once_while_another_holds_the_gallery(gallery, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, lock_path(str(gallery.idx))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        for argv in (
            ["index", "add", gallery.idx, gallery.dir / "new.npz"],
            ["index", "build", gallery.dir / "new.npz", "-o", gallery.idx],
        ):
            start = time.monotonic()
            line = one_line(capsys, argv, 4)
            assert time.monotonic() - start < 5
            assert line.startswith(
                f"anet-tf index: error: {gallery.idx} is in use by process "
                f"{holder.pid} on {socket.gethostname()} (since "
            )
            assert line.endswith(f"; {LOCK_ADVICE}, then run this again")
        # a reader is not a writer: searching goes on
        assert (
            main(
                [
                    "search",
                    "--index",
                    str(gallery.idx),
                    "--query-embeddings",
                    str(gallery.dir / "queries.npz"),
                ]
            )
            == 0
        )
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert digest(gallery.idx) == gallery.digest
    assert sorted(os.listdir(gallery.dir)) == sorted(
        [".idx.lock", "base.npz", "idx", "new.npz", "queries.npz"]
    )
    assert main(["index", "add", str(gallery.idx), str(gallery.dir / "new.npz")]) == 0


def test_two_adds_at_once_lose_nothing(gallery, random_embeddings):
    """Two `index add` processes released at the same moment, a few rounds: both
    sets of rows are in the gallery, or the second was refused naming the first."""
    expected = list(gallery.base)
    refusals = 0
    for r in range(3):
        names = []
        for side in "ab":
            tag = f"r{r}{side}"
            save_embeddings(
                new_rows(random_embeddings, tag, n=4, seed=r),
                str(gallery.dir / f"{tag}.npz"),
            )
            names.append(tag)
        go = gallery.dir / f"go-{r}"
        procs = [
            cli_process("go", go, "index", "add", gallery.idx, gallery.dir / f"{t}.npz")
            for t in names
        ]
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        go.touch()
        results = [(p.wait(timeout=60), p.communicate()) for p in procs]
        done = []
        for tag, p, (code, (_out, err)) in zip(names, procs, results, strict=True):
            if code == 0:
                done.append(tag)
            else:
                refusals += 1
                assert code == 4 and len(err.strip().splitlines()) == 1, err
                assert (
                    f"{gallery.idx} is in use by process " in err and LOCK_ADVICE in err
                )
                other = procs[1 - procs.index(p)]
                assert f"process {other.pid} on " in err
        assert done, results
        index = load_index(str(gallery.idx))
        added = index.paths[len(expected) :]
        assert sorted(added) == sorted(
            f"/{t}/{i:03d}.jpg" for t in done for i in range(4)
        )
        expected = index.paths
        assert len(index) == index.meta["count"] == len(set(index.paths))
        assert not leftovers(gallery.idx)
    assert_whole(gallery, expected)


def test_the_lock_serialises_threads_and_nests_in_one(gallery, random_embeddings):
    """A writer's lock is per thread: another thread of the process is refused; the
    thread that holds it may save (build_gallery, add_to_gallery nest)."""
    held, release = threading.Event(), threading.Event()

    def holder():
        with writer_lock(str(gallery.idx)):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(30)
        with pytest.raises(LockHeldError, match=f"process {os.getpid()} on "):
            add_to_gallery(str(gallery.idx), [new_rows(random_embeddings, "t")])
    finally:
        release.set()
        thread.join()
    with writer_lock(str(gallery.idx)):
        add_to_gallery(str(gallery.idx), [new_rows(random_embeddings, "t")])
    assert_whole(gallery, gallery.base + [f"/t/{i:03d}.jpg" for i in range(6)])


# ----------------------------------------------------------------------- readers
WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from conftest import _random_embeddings
    from anet_tf.search.targets import add_to_gallery

    print("start", flush=True)
    for k in range(int(sys.argv[3])):
        emb = _random_embeddings(3, 8, seed=k)
        emb.paths = [f"/w{k}/{i}.jpg" for i in range(3)]
        add_to_gallery(sys.argv[1], [emb])
    """
)


def test_readers_see_whole_versions_while_a_writer_adds(gallery):
    """Loads while another process adds 3 rows at a time, 25 times: each load is
    one version (count = rows, as the writer left it), never a mix or an error."""
    tests_dir = os.path.dirname(__file__)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(gallery.idx), tests_dir, "25"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout.readline().strip() == "start"
    seen = set()
    while writer.poll() is None:
        index = load_index(str(gallery.idx))
        n = len(index)
        assert (
            n
            == index.meta["count"]
            == len(index.items["path"])
            == len(index.items["pid"])
        )
        assert index.paths[:24] == gallery.base and (n - 24) % 3 == 0
        assert index.meta["sources"][1:] == [
            f"random-{k}" for k in range((n - 24) // 3)
        ]
        seen.add(n)
    assert writer.returncode == 0, writer.stderr.read()[-2000:]
    assert len(load_index(str(gallery.idx))) == 24 + 75
    assert len(seen) > 3  # it did read while the writer wrote


def test_a_gallery_folder_gets_the_umask_permissions(gallery):
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(gallery.idx).st_mode & 0o777 == 0o777 & ~umask
    for name in os.listdir(gallery.idx):
        assert os.stat(gallery.idx / name).st_mode & 0o777 == 0o666 & ~umask


def test_a_nonfinite_query_is_refused_in_one_line(gallery, random_embeddings, capsys):
    queries = random_embeddings(3, DIM, seed=5)
    queries.embedding[1, 2] = np.nan
    save_embeddings(queries, str(gallery.dir / "nan-queries.npz"))
    argv = ["search", "--index", gallery.idx, "--query-embeddings", gallery.dir / "nan-queries.npz"]
    assert "query 2 of 3 has a NaN or Inf" in one_line(capsys, argv, 1)


def test_index_commands_do_not_start_tensorflow(gallery):
    """`index build/add` read and write embeddings files and galleries only: the
    CLI does not import TensorFlow for them (seconds of start-up)."""
    script = (
        "import sys\nfrom anet_tf.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print(code, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, "index", "add", str(gallery.idx),
         str(gallery.dir / "new.npz")],
        capture_output=True, text=True, timeout=120,
    )
    assert out.stdout.strip().splitlines()[-1] == "0 False", out.stderr[-2000:]


def test_disk_full_error_is_exit_4_and_one_line():
    from anet_tf.commands.errors import exit_code
    from anet_tf.commands.errors import message

    exc = GalleryDiskFullError("idx: no space left on device; the old gallery is kept")
    assert exit_code(exc) == 4 and message(exc) == str(exc) and "Errno" not in str(exc)
