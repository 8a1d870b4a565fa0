"""Faults of the Milvus backend against a real Milvus Lite database (no mocks): an
`index add` killed (kill -9, Ctrl-C) at several points leaves the gallery as it
was before the add, and the same add then succeeds with ids that go on; a second
writer is refused at once in one line; a build killed in its swap is rolled back
(or forward) by the next writer while readers read a complete gallery; many
searches of one Milvus Lite file at once all succeed (each waits its turn), and a
reader that waits too long, or meets a process that holds Milvus Lite's own lock,
gets one line, not a traceback.

Faults are injected in a subprocess (``python -c FAULT_SCRIPT``) that wraps one
``MilvusClient`` method to signal itself after (or before) its n-th call, with a
small ``INSERT_BATCH`` so that an add is many inserts. The subprocess skips
TensorFlow's import (``anet-tf`` imports it for every command; these commands do
not use it); the slow test runs the real ``anet-tf``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip(
    "pymilvus",
    reason="the Milvus backend needs pymilvus: pip install -e '.[search-milvus]'",
)
pytest.importorskip(
    "milvus_lite",
    reason="a local Milvus database needs milvus-lite: pip install -e '.[search-milvus]'",
)

from test_search_gallery import part  # noqa: E402

from anet_tf.io import LockHeldError  # noqa: E402
from anet_tf.search import milvus  # noqa: E402
from anet_tf.search.embeddings import save_embeddings  # noqa: E402
from anet_tf.search.errors import SearchError  # noqa: E402
from anet_tf.search.milvus import add_to_collection  # noqa: E402
from anet_tf.search.milvus import build_collection  # noqa: E402
from anet_tf.search.milvus import connect  # noqa: E402
from anet_tf.search.milvus import disconnect  # noqa: E402
from anet_tf.search.milvus import open_collection  # noqa: E402

DIM = 16
BASE = 200  # rows of the gallery built
ADDED = 120  # rows of the add (batches of BATCH: 6 inserts)
BATCH = 20
ONE_PROCESS = "Milvus Lite serves one process at a time"

# Run the anet-tf command line in a subprocess with a fault: argv[1] is a JSON
# {"hook": MilvusClient method, "n": call, "when": "before"|"after", "sig": name,
# "batch": INSERT_BATCH, "read_wait": READ_WAIT_S, "pause": file}; "sig": "PAUSE"
# writes the file "pause" names and sleeps until it is removed.
FAULT_SCRIPT = r"""
import json, os, signal, sys, time
spec = json.loads(sys.argv[1])
import anet_tf.native_output
anet_tf.native_output.import_tensorflow = lambda: None  # not used by these commands
from anet_tf.search import milvus
milvus.INSERT_BATCH = spec.get("batch", milvus.INSERT_BATCH)
milvus.READ_WAIT_S = spec.get("read_wait", milvus.READ_WAIT_S)
milvus.WRITE_WAIT_S = spec.get("read_wait", milvus.WRITE_WAIT_S)
if spec.get("hook"):
    from pymilvus import MilvusClient
    original = getattr(MilvusClient, spec["hook"])
    calls = [0]

    def fault():
        if spec["sig"] == "PAUSE":
            open(spec["pause"], "w").close()
            while os.path.exists(spec["pause"]):
                time.sleep(0.05)
            return
        os.kill(os.getpid(), getattr(signal, spec["sig"]))
        time.sleep(5)  # a signal is handled at once; never reached for SIGKILL

    def wrapped(self, *args, **kwargs):
        calls[0] += 1
        if spec["when"] == "before" and calls[0] == spec["n"]:
            fault()
        out = original(self, *args, **kwargs)
        if spec["when"] == "after" and calls[0] == spec["n"]:
            fault()
        return out

    setattr(MilvusClient, spec["hook"], wrapped)
from anet_tf.cli import main
sys.exit(main(sys.argv[2:]))
"""


def anet(*args, **spec) -> subprocess.Popen:
    """``anet-tf ARGS`` in a subprocess (without TensorFlow), with the fault of
    ``spec``; stdout and stderr captured."""
    spec.setdefault("batch", BATCH)
    return subprocess.Popen(
        [sys.executable, "-c", FAULT_SCRIPT, json.dumps(spec), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(path: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, finish(proc)
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def files(random_embeddings, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    emb = random_embeddings(BASE + 2 * ADDED, DIM, seed=3)
    out = {"root": root, "emb": emb}
    for name, rows in (
        ("base", range(0, BASE)),
        ("add", range(BASE, BASE + ADDED)),
        ("more", range(BASE + ADDED, BASE + 2 * ADDED)),
    ):
        out[name] = str(root / f"{name}.npz")
        save_embeddings(part(emb, rows), out[name])
    out["queries"] = str(root / "queries.npz")
    save_embeddings(random_embeddings(3, DIM, seed=4), out["queries"])
    # one database built here and copied for each test (copied while closed)
    out["db"] = str(root / "base.db")
    build_collection([part(emb, range(0, BASE))], out["db"]).close()
    return out


@pytest.fixture
def db(files, tmp_path):
    path = str(tmp_path / "g.db")
    shutil.copytree(files["db"], path)
    return path


def committed(db: str, collection: str = "gallery") -> tuple[dict, list[int]]:
    """The gallery's record and the ids a search of everything finds, checked: as
    many as the record's count and as len(), unique, below next_id."""
    with open_collection(db, collection) as g:
        _, ids = g.search(np.eye(DIM, dtype=np.float32)[:1], 1000)
        found = [int(i) for i in ids[0] if i >= 0]
        assert len(found) == len(set(found)) == len(g) == g.meta["count"]
        assert all(i < g.meta["next_id"] for i in found)
        return g.meta, sorted(found)


def physical_ids(db: str, collection: str = "gallery") -> list[int]:
    """Every row's id, committed or not."""
    client = connect(db)
    try:
        milvus._load(client, db, collection)  # a torn index file is built again
        got = client.query(collection, filter="id >= 0", output_fields=["id"])
        return sorted(int(r["id"]) for r in got)
    finally:
        disconnect(db, client)


def add_again(db: str, files) -> None:
    """The interrupted add, again (in this process): it succeeds, its ids go on
    from the record's next_id, and the gallery is the base plus the add."""
    meta, before = committed(db)
    gallery, rows = add_to_collection(
        db, "gallery", [part(files["emb"], range(BASE, BASE + ADDED))]
    )
    gallery.close()
    assert len(rows) == ADDED
    meta2, after = committed(db)
    first = meta["next_id"]
    assert after == sorted({*before, *range(first, first + ADDED)})
    assert meta2["next_id"] == first + ADDED and meta2["count"] == len(before) + ADDED
    assert physical_ids(db) == after  # nothing uncommitted is left


# --------------------------------------------------------------- interrupted add


@pytest.mark.parametrize(
    "hook, n, when, sig, left",
    [
        ("insert", 1, "before", "SIGKILL", 0),  # nothing inserted yet
        ("insert", 3, "after", "SIGKILL", 3 * BATCH),  # mid-insert
        ("flush", 1, "after", "SIGKILL", ADDED),  # all rows written, not committed
        ("insert", 2, "after", "SIGINT", 0),  # Ctrl-C mid-insert: the rows sent deleted
    ],
)
def test_an_interrupted_add_leaves_the_gallery_as_it_was(
    db, files, hook, n, when, sig, left
):
    _, before = committed(db)
    code, out, err = finish(
        anet("index", "add", db, files["add"], hook=hook, n=n, when=when, sig=sig)
    )
    if sig == "SIGKILL":
        assert code == -signal.SIGKILL, (code, out, err)
    else:
        assert code == 130 and err == "anet-tf index: interrupted\n", err
    assert len(physical_ids(db)) == BASE + left  # rows left are not committed
    meta, after = committed(db)
    assert after == before == list(range(BASE)) and meta["next_id"] == BASE
    add_again(db, files)


def test_an_interrupted_add_is_rolled_back_by_the_next_add_of_other_rows(db, files):
    code, _, err = finish(
        anet(
            "index",
            "add",
            db,
            files["add"],
            hook="insert",
            n=4,
            when="after",
            sig="SIGKILL",
        )
    )
    assert code == -signal.SIGKILL, err
    assert len(physical_ids(db)) == BASE + 4 * BATCH  # orphans, not committed
    assert committed(db)[1] == list(range(BASE))
    code, out, err = finish(anet("index", "add", db, files["more"]))
    assert code == 0 and f"added {ADDED} items" in out, err
    meta, ids = committed(db)
    assert ids == list(range(BASE + ADDED)) == physical_ids(db)
    with open_collection(db) as g:  # the ids BASE.. are the rows of "more" now
        assert g.row(BASE)["path"] == files["emb"].paths[BASE + ADDED]
    # and the first add is not refused as "already in"
    gallery, _ = add_to_collection(
        db, "gallery", [part(files["emb"], range(BASE, BASE + ADDED))]
    )
    gallery.close()
    assert committed(db)[1] == list(range(BASE + 2 * ADDED))


# ------------------------------------------------------------------ one writer


def test_a_second_writer_is_refused_at_once_and_readers_wait(db, files, tmp_path):
    pause = str(tmp_path / "paused")
    first = anet(
        "index",
        "add",
        db,
        files["add"],
        hook="insert",
        n=2,
        when="after",
        sig="PAUSE",
        pause=pause,
    )
    try:
        wait_for(pause, first)
        second = anet("index", "add", db, files["more"])
        reader = anet(
            "search", "--index", db, "--query-embeddings", files["queries"], read_wait=1
        )
        code, out, err = finish(second)
        assert code == 4 and out == "", err
        (line,) = err.splitlines()
        assert line.startswith(
            f"anet-tf index: error: {db} is in use by process {first.pid} on "
        )
        assert "one index build, add or remove at a time" in line
        code, out, err = finish(reader)
        assert code == 4 and out == "", err
        (line,) = err.splitlines()
        assert f"{db} is in use by process {first.pid} on " in line
        assert "(waited 1 s)" in line and ONE_PROCESS in line
        assert "http://host:19530" in line
    finally:
        if os.path.exists(pause):
            os.remove(pause)
    code, out, err = finish(first)
    assert code == 0 and f"{BASE + ADDED} items" in out, err
    assert committed(db)[1] == list(range(BASE + ADDED))


def test_two_adds_started_together_are_both_added_or_one_is_refused(db, files):
    procs = [anet("index", "add", db, files[name]) for name in ("add", "more")]
    results = [finish(p) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes in ([0, 0], [0, 4]), results
    for code, _, err in results:
        if code == 4:
            (line,) = err.splitlines()
            # the holder is named unless it let go between the refusal and the read
            assert " is in use by " in line and "one index build, add" in line
    _, ids = committed(db)
    assert ids == list(range(BASE + ADDED * codes.count(0)))
    assert physical_ids(db) == ids


# ----------------------------------------------------------- interrupted build


@pytest.mark.parametrize(
    "hook, n, new_gallery",
    [
        ("insert", 2, False),  # staging half written: the old gallery stays
        ("rename_collection", 1, False),  # old one aside, new one not in: rolled back
        ("rename_collection", 2, True),  # new one in (committed), old one not dropped
    ],
)
def test_an_interrupted_build_leaves_a_complete_gallery(
    db, files, hook, n, new_gallery
):
    code, _, err = finish(
        anet(
            "index",
            "build",
            files["add"],
            "-o",
            db,
            hook=hook,
            n=n,
            when="after",
            sig="SIGKILL",
        )
    )
    assert code == -signal.SIGKILL, err
    expected = list(range(ADDED)) if new_gallery else list(range(BASE))
    assert committed(db)[1] == expected  # a reader reads a complete gallery
    # the next writer puts things right first: one collection, the same rows
    gallery, _ = add_to_collection(
        db, "gallery", [part(files["emb"], range(BASE + ADDED, BASE + 2 * ADDED))]
    )
    gallery.close()
    assert committed(db)[1] == [*expected, *range(len(expected), len(expected) + ADDED)]
    client = connect(db)
    try:
        assert client.list_collections() == ["gallery"]
    finally:
        disconnect(db, client)


# ------------------------------------------------------------------ many readers


def searches_at_once(db: str, queries: str, count: int, command=None) -> list[tuple]:
    procs = [
        (command or anet)(
            "search", "--index", db, "--query-embeddings", queries, "--json"
        )
        for _ in range(count)
    ]
    return [finish(p, timeout=600) for p in procs]


def check_searches(results, files) -> None:
    answers = []
    for code, out, err in results:
        assert code == 0, err
        assert err == ""
        answers.append(
            [[m["id"] for m in r["matches"]] for r in json.loads(out)["results"]]
        )
    assert all(a == answers[0] for a in answers) and len(answers[0]) == 3


def test_searches_of_one_milvus_lite_file_at_once_all_succeed(db, files):
    check_searches(searches_at_once(db, files["queries"], 3), files)


def test_a_process_holding_milvus_lites_own_lock_is_one_line(db, files):
    with open(os.path.join(db, "LOCK"), "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        proc = anet(
            "search",
            "--index",
            db,
            "--query-embeddings",
            files["queries"],
            read_wait=0.5,
        )
        code, out, err = finish(proc)
    assert code == 4 and out == "", err
    (line,) = err.splitlines()
    assert line == (
        f"anet-tf search: error: {db} is in use by another process (it holds Milvus "
        f"Lite's own lock {os.path.join(db, 'LOCK')}); {milvus.ONE_PROCESS}"
    )


def real_anet(*args) -> subprocess.Popen:
    return subprocess.Popen(
        ["anet-tf", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_twenty_real_anet_tf_searches_of_one_file_at_once(db, files):
    started = time.monotonic()
    results = searches_at_once(db, files["queries"], 20, real_anet)
    check_searches(results, files)
    print(f"20 searches at once: {time.monotonic() - started:.1f} s")


# ------------------------------------------------------- a server's writer record


def writer_record(client) -> dict | None:
    props = client.describe_collection("gallery")["properties"]
    return (
        json.loads(props[milvus.WRITER_PROPERTY])
        if milvus.WRITER_PROPERTY in props
        else None
    )


def test_on_a_server_writes_leave_a_best_effort_writer_record(files, tmp_path):
    """The server's path (no file lock; the writer record in the collection's
    properties), on Milvus Lite's own gRPC server, reached by http://."""
    from milvus_lite.server_manager import server_manager_instance

    path = str(tmp_path / "served.db")
    uri = server_manager_instance.start_and_get_uri(path)
    assert uri.startswith("http://")
    emb = files["emb"]
    client = connect(uri)
    try:
        build_collection([part(emb, range(0, BASE))], uri).close()
        assert writer_record(client) is None  # taken while writing, then dropped
        mine = milvus._ServerWriter(client, uri, "gallery").acquire()
        record = writer_record(client)
        assert record["pid"] == os.getpid() and record["beat"] > time.time() - 60
        mine.release()
        assert writer_record(client) is None
        added = 0
        for pid, host, age, live in (
            (1, socket.gethostname(), 0, True),  # pid 1 is alive here
            (2**22 + 7, socket.gethostname(), 0, False),  # no such process here
            (1, "elsewhere", 0, True),
            (1, "elsewhere", milvus.WRITER_STALE_S + 1, False),  # not renewed
        ):
            stamp = {
                "pid": pid,
                "host": host,
                "since": "then",
                "beat": time.time() - age,
            }
            client.alter_collection_properties(
                "gallery", properties={milvus.WRITER_PROPERTY: json.dumps(stamp)}
            )
            add = [part(emb, range(BASE + added, BASE + added + 5))]
            if live:
                with pytest.raises(LockHeldError, match=f"by process {pid} on {host}"):
                    add_to_collection(uri, "gallery", add)
            else:
                add_to_collection(uri, "gallery", add)[0].close()
                added += 5
                assert writer_record(client) is None  # the stale one replaced, dropped
        with open_collection(uri) as g:
            assert added == 10 and len(g) == BASE + added
    finally:
        disconnect(uri, client)
        server_manager_instance.release_server(path)


def test_a_torn_milvus_lite_index_file_is_built_again(db, files):
    """Milvus Lite writes a segment's index file in place after a flush, in a
    background thread, and trusts it at load: a process killed meanwhile left a
    gallery no load could open ("file seems not fully written?")."""
    _, before = committed(db)
    indexes = os.path.join(
        db, "collections", "gallery", "partitions", "_default", "indexes"
    )
    (torn,) = [name for name in os.listdir(indexes) if name.endswith(".idx")]
    with open(os.path.join(indexes, torn), "r+b") as fh:
        fh.truncate(1000)
    assert committed(db)[1] == before
    assert os.path.getsize(os.path.join(indexes, torn)) > 1000


def test_a_closed_gallery_opens_again_to_search(db, files, random_embeddings):
    """`search --query IMG` gives the database back while it embeds the images,
    and opens it again to search: a gallery rebuilt by another model meanwhile is
    one line."""
    g = open_collection(db)
    queries = np.eye(DIM, dtype=np.float32)[:2]
    expected = g.search(queries, 5)[1]
    g.close()
    np.testing.assert_array_equal(g.search(queries, 5)[1], expected)  # opened again
    g.close()
    build_collection([random_embeddings(10, DIM, fingerprint="beef")], db).close()
    with pytest.raises(
        SearchError, match="rebuilt by another model while this command"
    ):
        g.search(queries, 5)


# ------------------------------------------------------------------ a full disk


def test_a_full_disk_during_an_add_is_exit_4_and_the_gallery_answers_as_before(
    files, random_embeddings, tmp_path, capsys
):
    """A Milvus Lite database on a tmpfs 2 MiB larger than it, an add of rows that
    do not fit:
    one line, exit 4, and the gallery holds exactly its rows before the add."""
    from anet_tf.cli import main

    if not shutil.which("mount") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    size = sum(
        os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(files["db"]) for f in fs
    )
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size + (2 << 20)}", "tmpfs", str(mnt)],
        capture_output=True,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        path = str(mnt / "g.db")
        shutil.copytree(files["db"], path)
        meta, before = committed(path)
        big = random_embeddings(20000, DIM, seed=8)
        big.paths = [f"/big/{i:05d}.jpg" for i in range(len(big.paths))]
        save_embeddings(big, str(tmp_path / "big.npz"))
        code = main(["index", "add", path, str(tmp_path / "big.npz")])
        err = capsys.readouterr().err.strip()
        assert code == 4, err
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert f"{path}: no space left on device while Milvus wrote the gallery" in err
        meta_after, after = committed(path)
        assert after == before and meta_after["next_id"] == meta["next_id"]
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
