"""The folder swap and lock primitives of anet_tf.io: replace_folder (old aside, new
in, old removed; a failure between the renames puts the old one back),
recover_folder (an interrupted swap rolled back, dead writers' staging removed),
committed_folder (what a reader reads meanwhile), and FileLock (exclusive and
shared, the holder named, a lock released by kill -9)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from anet_tf import io as aio
from anet_tf.io import FileLock
from anet_tf.io import LockHeldError
from anet_tf.io import aside_path
from anet_tf.io import committed_folder
from anet_tf.io import describe_holder
from anet_tf.io import recover_folder
from anet_tf.io import replace_folder
from anet_tf.io import staging_path


def make_folder(path, **files) -> str:
    os.makedirs(path)
    for name, text in files.items():
        with open(os.path.join(path, name), "w", encoding="utf-8") as fh:
            fh.write(text)
    return str(path)


def read_folder(path) -> dict[str, str]:
    out = {}
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), encoding="utf-8") as fh:
            out[name] = fh.read()
    return out


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------ folder swaps
def test_names_beside_the_target(tmp_path):
    target = str(tmp_path / "idx")
    assert aside_path(target) == str(tmp_path / ".idx.replaced")
    assert staging_path(target) == str(tmp_path / f".idx.staging-{os.getpid()}")
    assert aside_path(target + "/") == aside_path(target)


def test_replace_folder_makes_and_replaces_and_leaves_nothing(tmp_path):
    target = str(tmp_path / "idx")
    replace_folder(make_folder(staging_path(target), a="1"), target)
    assert read_folder(target) == {"a": "1"}
    replace_folder(make_folder(staging_path(target), b="2"), target)
    assert read_folder(target) == {"b": "2"}
    assert sorted(os.listdir(tmp_path)) == ["idx"]


def test_replace_folder_failing_between_its_renames_keeps_the_old_folder(
    tmp_path, monkeypatch
):
    target = make_folder(tmp_path / "idx", a="old")
    staging = make_folder(staging_path(target), a="new")
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the new folder in, after the old one went aside
            raise OSError(errno.EIO, "injected", src)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="injected"):
        replace_folder(staging, target)
    monkeypatch.undo()
    assert calls[0] == (target, aside_path(target))
    assert read_folder(target) == {"a": "old"}  # put back at once
    assert not os.path.exists(aside_path(target))
    assert read_folder(staging) == {"a": "new"}  # the caller's to remove


def test_an_interrupted_swap_is_read_aside_and_rolled_back(tmp_path):
    """The state a kill between the two renames leaves: no target, the old version
    aside, the dead writer's staging folder. A reader reads the old version; the
    next writer's recover_folder puts it back and removes the staging folder."""
    target = str(tmp_path / "idx")
    make_folder(aside_path(target), a="old")
    dead = os.path.join(tmp_path, f".idx.staging-{dead_pid()}")
    make_folder(dead, a="half")
    assert committed_folder(target) == aside_path(target)
    done = recover_folder(target)
    assert "rolled back" in done and target in done
    assert read_folder(target) == {"a": "old"}
    assert committed_folder(target) == target
    assert sorted(os.listdir(tmp_path)) == ["idx"]
    assert recover_folder(target) is None  # nothing left to do


def test_recover_after_the_new_folder_arrived_removes_the_old_one(tmp_path):
    """Killed after the second rename: the new version is in, the old one aside."""
    target = make_folder(tmp_path / "idx", a="new")
    make_folder(aside_path(target), a="old")
    assert committed_folder(target) == target
    assert recover_folder(target) is None
    assert read_folder(target) == {"a": "new"}
    assert sorted(os.listdir(tmp_path)) == ["idx"]


def test_recover_keeps_a_live_writers_staging_folder(tmp_path):
    target = make_folder(tmp_path / "idx", a="1")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = make_folder(tmp_path / f".idx.staging-{proc.pid}", a="2")
        mine = make_folder(staging_path(target), a="3")
        other = make_folder(tmp_path / f".other.staging-{dead_pid()}", a="4")
        recover_folder(target)
        assert os.path.isdir(live) and os.path.isdir(mine) and os.path.isdir(other)
    finally:
        proc.kill()
        proc.wait()
    recover_folder(target)  # its writer is gone now
    assert not os.path.exists(live) and os.path.isdir(mine)


def test_committed_folder_of_nothing_is_the_target(tmp_path):
    assert committed_folder(str(tmp_path / "none")) == str(tmp_path / "none")
    assert recover_folder(str(tmp_path / "none")) is None


# ------------------------------------------------------------------------- locks
HOLD = textwrap.dedent(
    """
    import sys, time
    from anet_tf.io import FileLock
    lock = FileLock(sys.argv[1], "thing", shared=sys.argv[2] == "shared").acquire()
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
    lock.release()
    """
)


def hold(path, mode="exclusive", seconds=60.0):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), mode, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def kill9(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_an_exclusive_lock_is_refused_at_once_naming_the_holder(tmp_path):
    path = tmp_path / "sub" / ".x.lock"  # the folder is made
    proc = hold(path)
    try:
        start = time.monotonic()
        with pytest.raises(LockHeldError) as err:
            FileLock(str(path), "the gallery g", advice="wait for it").acquire()
        assert time.monotonic() - start < 1.0
        msg = str(err.value)
        assert msg.startswith(
            f"the gallery g is in use by process {proc.pid} on {socket.gethostname()} "
            "(since "
        )
        assert msg.endswith("; wait for it") and "\n" not in msg
        record = json.loads(path.read_text())
        assert record["pid"] == proc.pid and set(record) == {"pid", "host", "since"}
    finally:
        kill9(proc)


def test_a_waiting_lock_waits_then_refuses_or_gets_it(tmp_path):
    path = str(tmp_path / ".x.lock")
    proc = hold(path)
    try:
        start = time.monotonic()
        with pytest.raises(LockHeldError, match=r"\(waited 0.3 s\)"):
            FileLock(path, "x", wait_s=0.3).acquire()
        assert time.monotonic() - start >= 0.3
    finally:
        kill9(proc)
    proc = hold(path, seconds=0.5)  # lets go while the next one waits
    try:
        with FileLock(path, "x", wait_s=20) as lock:
            assert lock.took_over is None  # released cleanly: no record left
    finally:
        proc.wait()


def test_a_lock_held_by_a_killed_process_is_free_and_names_it(tmp_path):
    path = str(tmp_path / ".x.lock")
    proc = hold(path)
    kill9(proc)
    lock = FileLock(path, "x").acquire()  # the kernel let go of it
    try:
        assert lock.took_over.startswith(f"process {proc.pid} on ")
        assert json.loads(open(path).read())["pid"] == os.getpid()
    finally:
        lock.release()
    assert open(path).read() == ""  # released: nothing to take over
    with FileLock(path, "x") as again:
        assert again.took_over is None


def test_shared_locks_exclude_writers_not_each_other(tmp_path):
    path = str(tmp_path / ".x.lock")
    proc = hold(path, "shared")
    try:
        with FileLock(path, "x", shared=True):  # a second reader
            pass
        with pytest.raises(LockHeldError, match="x is in use by another process"):
            FileLock(path, "x").acquire()
    finally:
        kill9(proc)
    writer = hold(path)
    try:
        with pytest.raises(LockHeldError, match=f"process {writer.pid}"):
            FileLock(path, "x", shared=True).acquire()
    finally:
        kill9(writer)


def test_a_reader_clears_a_killed_writers_record(tmp_path):
    """A writer killed left its record; a reader holding the lock then must not
    make a refused writer name the dead one."""
    path = str(tmp_path / ".x.lock")
    dead = hold(path)
    kill9(dead)
    reader = hold(path, "shared")
    try:
        with pytest.raises(LockHeldError) as err:
            FileLock(path, "x").acquire()
        assert f"process {dead.pid}" not in str(err.value)
        assert "in use by another process" in str(err.value)
    finally:
        kill9(reader)


def test_a_damaged_or_unwritable_record_does_not_stop_the_lock(tmp_path, monkeypatch):
    path = tmp_path / ".x.lock"
    path.write_bytes(b"\xff\xfe not json")
    with FileLock(str(path), "x") as lock:
        assert lock.took_over == "another process"

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FileLock, "_write_holder", full)
    lock = FileLock(str(path), "x").acquire()  # held, only unnamed
    try:
        monkeypatch.undo()
        with pytest.raises(LockHeldError, match="in use by another process"):
            FileLock(str(path), "x").acquire()
    finally:
        lock.release()
    with FileLock(str(path), "x"):
        pass


def test_describe_holder():
    assert (
        describe_holder('{"pid": 7, "host": "h", "since": "t"}')
        == "process 7 on h (since t)"
    )
    for text in ("", "{", "[]", '{"pid": 7}', "null"):
        assert describe_holder(text) == "another process"
    assert aio.LockHeldError.__mro__[1] is ValueError
