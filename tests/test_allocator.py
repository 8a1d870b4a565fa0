"""The allocator choice of the `anet-tf` command (anet_tf/allocator.py)."""

import os
import subprocess
import sys

import pytest

from anet_tf import allocator


def _fake_lib(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x7fELF")
    return str(path)


def test_find_library_prefers_tcmalloc_minimal(tmp_path):
    _fake_lib(tmp_path, "libtcmalloc.so.4")
    minimal = _fake_lib(tmp_path, "libtcmalloc_minimal.so.4")
    assert allocator.find_library("tcmalloc", [str(tmp_path)]) == minimal
    assert allocator.find_library("jemalloc", [str(tmp_path)]) is None


def test_plan_auto_falls_back_to_jemalloc_then_system(tmp_path):
    assert allocator.plan({}, dirs=[str(tmp_path)]) == (None, "no tcmalloc or jemalloc library installed")
    jem = _fake_lib(tmp_path, "libjemalloc.so.2")
    assert allocator.plan({}, dirs=[str(tmp_path)]) == (jem, "jemalloc")
    tcm = _fake_lib(tmp_path, "libtcmalloc_minimal.so.4")
    assert allocator.plan({}, dirs=[str(tmp_path)]) == (tcm, "tcmalloc")
    assert allocator.plan({"ANET_TF_MALLOC": "jemalloc"}, dirs=[str(tmp_path)]) == (jem, "jemalloc")


def test_plan_never_relaunches_twice_or_against_the_user(tmp_path):
    _fake_lib(tmp_path, "libtcmalloc_minimal.so.4")
    dirs = [str(tmp_path)]
    assert allocator.plan({"ANET_TF_MALLOC": "system"}, dirs=dirs)[0] is None
    assert allocator.plan({"ANET_TF_MALLOC_CHOSEN": "tcmalloc"}, dirs=dirs)[0] is None
    assert allocator.plan({"LD_PRELOAD": "/opt/libjemalloc.so.2"}, dirs=dirs)[0] is None


def test_unknown_choice_is_named():
    with pytest.raises(ValueError, match="ANET_TF_MALLOC='fast'.*auto, tcmalloc, jemalloc, system"):
        allocator.choice({"ANET_TF_MALLOC": "fast"})


def test_launch_reports_unknown_choice_in_one_line():
    env = dict(os.environ, ANET_TF_MALLOC="fast")
    out = subprocess.run([sys.executable, "-m", "anet_tf", "--version"], env=env, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip() == "anet-tf: error: ANET_TF_MALLOC='fast': expected one of auto, tcmalloc, jemalloc, system"


def test_in_use_reads_the_process_maps(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10\n")
    assert allocator.in_use(str(maps)) == "tcmalloc"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert allocator.in_use(str(maps)) == "system"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux-only")
def test_relaunch_really_preloads_the_library():
    """A real exec: the child process has the installed allocator mapped."""
    path, kind = allocator.plan({})
    if path is None:
        pytest.skip("neither tcmalloc nor jemalloc is installed on this machine")
    code = (
        "import sys; from anet_tf import allocator; "
        "allocator.relaunch([], command=[sys.executable, '-c', "
        "'from anet_tf import allocator; print(allocator.in_use())'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ANET_TF_MALLOC_CHOSEN", "ANET_TF_MALLOC")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == kind


def test_system_choice_runs_in_place():
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ANET_TF_MALLOC_CHOSEN")}
    env["ANET_TF_MALLOC"] = "system"
    code = (
        "import sys; from anet_tf import allocator; "
        "allocator.relaunch([], command=[sys.executable, '-c', 'print(1)']); print(allocator.in_use())"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "system"


def test_tune_environment_turns_onednn_on_unless_the_user_chose(monkeypatch):
    import platform

    from anet_tf.launch import tune_environment

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    env = {}
    tune_environment(env)
    assert env == {"TF_ENABLE_ONEDNN_OPTS": "1"}
    env = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    tune_environment(env)
    assert env == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    env = {}
    tune_environment(env)
    assert env == {}
