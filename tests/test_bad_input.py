"""Damaged run files, bad settings and interruptions through the command line: one
line on stderr naming the file or key, the documented exit code, and nothing on
disk changed."""

import errno
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
from helpers import TINY_OVERRIDES
from helpers import one_line
from helpers import read_log

from anet_tf.cli import main


@pytest.fixture(scope="module")
def finished_run(tiny_dataset, tmp_path_factory):
    """A finished tiny baseline run (two epochs, so it has two checkpoints); each
    test damages its own copy."""
    from anet_tf.config import load_config
    from anet_tf.jobs import fit_evaluate_export as workflow

    cfg = load_config(
        "synthetic",
        [f"data.root={tiny_dataset}", *TINY_OVERRIDES, "model.variant=baseline", "eval.feature=f"],
    )
    run_dir = str(tmp_path_factory.mktemp("bad-input") / "run")
    assert workflow.fit_and_report(cfg, run_dir, export=False, verbose=False) is not None
    return run_dir


@pytest.fixture
def run_copy(finished_run, tmp_path):
    return shutil.copytree(finished_run, str(tmp_path / "run"))


def tree(path):
    """Every file under ``path`` with a hash of its bytes (the lock file aside: it
    is the process's to write)."""
    out = {}
    for dirpath, _, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            if name != "lock":
                with open(full, "rb") as fh:
                    out[os.path.relpath(full, path)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def replace_file(path, data: bytes):
    """Write ``path`` anew (never through a hard link best/ shares with its epoch)."""
    os.remove(path)
    with open(path, "wb") as fh:
        fh.write(data)


def truncated(path):
    with open(path, "rb") as fh:
        return fh.read()[:4000]


# ------------------------------------------------- damaged checkpoint files
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_damaged_best_weights_are_one_line_naming_the_file(run_copy, tmp_path, capsys, damage, command):
    weights = os.path.join(run_copy, "checkpoints", "best", "net.weights.h5")
    replace_file(weights, truncated(weights) if damage == "truncated" else b"garbage\n" * 100)
    before = tree(run_copy)
    argv = ["evaluate", "--run", run_copy]
    if command == "export":
        argv = ["export", "--run", run_copy, "--out", str(tmp_path / "exported")]
    line = one_line(capsys, argv, 1)
    assert line.startswith(f"anet-tf {command}: error: {weights} is damaged")
    assert "--checkpoint" in line and "epoch-0002" in line
    assert tree(run_copy) == before
    assert not os.path.exists(tmp_path / "exported")


@pytest.mark.parametrize("file", ["net.weights.h5", "optimizer.npz", "state.json", "last.json"])
def test_fit_resume_from_a_damaged_checkpoint_is_one_line_and_changes_nothing(run_copy, capsys, file):
    ckpt = os.path.join(run_copy, "checkpoints")
    path = os.path.join(ckpt, file) if file == "last.json" else os.path.join(ckpt, "epoch-0002", file)
    replace_file(path, b"" if file == "optimizer.npz" else truncated(path)[:20])
    before = tree(run_copy)
    # a longer schedule, so that the run is not finished and resumes from epoch 2
    line = one_line(capsys, ["fit", "--resume", run_copy, "--set", "train.stage1.epochs=3", "--no-export", "--quiet"], 1)
    assert line.startswith(f"anet-tf fit: error: {path} is damaged"), line
    assert tree(run_copy) == before  # config.yaml and changes.yaml untouched too


# ------------------------------------------------------- damaged run YAML
def test_invalid_yaml_in_a_runs_config_is_one_line(run_copy, capsys):
    config = os.path.join(run_copy, "config.yaml")
    with open(config, "a") as fh:
        fh.write("model: [unclosed\n")
    before = tree(run_copy)
    for argv in (["evaluate", "--run", run_copy], ["fit", "--resume", run_copy, "--quiet"]):
        line = one_line(capsys, argv, 1)
        assert f"{config} is damaged (not valid YAML: line" in line, line
    assert tree(run_copy) == before


def test_invalid_yaml_in_a_study_file_is_one_line(tmp_path, capsys):
    study = tmp_path / "study"
    study.mkdir()
    (study / "study.yaml").write_text("base: {a: 1\n")
    before = tree(str(study))
    line = one_line(capsys, ["ablate", "--out", str(study), "--report-only"], 1)
    assert f"{study / 'study.yaml'} is damaged (not valid YAML: line" in line
    assert tree(str(study)) == before


# ----------------------------------------------------- where output goes
def test_a_read_only_run_folder_prints_the_metrics_then_one_line(run_copy, capsys, monkeypatch):
    """evaluate --run records its metrics in the run; on a read-only file system
    the metrics are still printed, and the failure to record them is one line."""
    from anet_tf.training import fit

    def read_only(path, text):
        raise OSError(errno.EROFS, "Read-only file system", path + ".tmp-1")

    monkeypatch.setattr(fit, "atomic_write_text", read_only)
    before = tree(run_copy)
    code = main(["evaluate", "--run", run_copy])
    out, err = capsys.readouterr()
    assert code == 1 and "mAP" in out
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "metrics.json: the evaluation cannot be recorded in the run (Read-only file system)" in err
    assert tree(run_copy) == before


@pytest.mark.parametrize("command", ["fit", "export", "ablate", "synth"])
def test_out_naming_a_file_is_one_line(tmp_path, capsys, command, run_copy):
    target = tmp_path / "a-file"
    target.write_text("mine\n")
    argv = {
        "fit": ["fit", "--out", str(target)],
        "export": ["export", "--run", run_copy, "--out", str(target)],
        "ablate": ["ablate", "--out", str(target)],
        "synth": ["synth", "--out", str(target)],
    }[command]
    line = one_line(capsys, argv, 2)
    assert f"--out {target}: a file is there" in line
    assert target.read_text() == "mine\n"


def test_config_naming_a_folder_is_one_line(tmp_path, capsys):
    line = one_line(capsys, ["fit", "--config", str(tmp_path), "--out", str(tmp_path / "run")], 1)
    assert f"{tmp_path} is a folder, not a config file" in line
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------- config values
def test_an_absurd_image_size_is_refused_before_a_run_folder_exists(tmp_path, capsys, tiny_dataset):
    run = tmp_path / "run"
    line = one_line(
        capsys,
        ["fit", "--out", str(run), "--set", f"data.root={tiny_dataset}", "--set", "data.image_size=[100000,100000]"],
        1,
    )
    assert "data.image_size: each side must be <= 2048" in line
    assert not run.exists()


def alias_bomb(levels: int) -> str:
    """``levels`` levels of nine-fold YAML aliases (9**levels values once expanded)."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\ntrain:\n  seed: *a{levels - 1}\n"


def test_a_yaml_alias_bomb_is_refused_within_bounded_memory_and_time(tmp_path):
    """Nine levels of nine-fold aliases would expand to 387 million values: the
    config is refused in one line, in a process held to 1 GiB of address space."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb(9))

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    # data check reads a config without importing TensorFlow (which alone asks
    # for more address space than the limit)
    proc = subprocess.run(
        [sys.executable, "-m", "anet_tf.cli", "data", "check", "--config", str(bomb)],
        env=env, capture_output=True, text=True, timeout=60, preexec_fn=limit,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-2000:]
    assert f"{bomb}: not valid YAML" in lines[0] and "aliases" in lines[0]


def test_a_value_quoted_in_an_error_is_cut(tmp_path, capsys):
    """Four levels of aliases (6,561 values, under the alias bound) as a seed: the
    error quotes the value cut to a line, not the 45 kB it would print whole."""
    config = tmp_path / "four.yaml"
    levels = ['    - &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"    - &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 4)]
    config.write_text("train:\n  seed:\n" + "\n".join(levels) + "\n")
    line = one_line(capsys, ["data", "check", "--config", str(config)], 1)
    assert "train.seed" in line and "characters)" in line and len(line) < 600


# ------------------------------------------------------------ interrupted
def test_ctrl_c_during_fit_is_one_line_and_the_run_resumes(tmp_path):
    """SIGINT (Ctrl-C) once the first checkpoint is published: exit 130, one line
    saying what the folder keeps; the run then resumes to the end with one row per
    epoch."""
    from anet_tf.config import load_config  # noqa: F401  (the package imports here)

    run_dir = str(tmp_path / "run")
    root = os.path.join(str(tmp_path), "data")
    from anet_tf.data.synthetic import generate

    generate(root, ids=10, test_ids=4, cameras=3, images_per_id=5, image_size=32, seed=3)
    args = ["fit", "--out", run_dir, "--no-export", "--quiet"]
    for item in [f"data.root={root}", *TINY_OVERRIDES, "model.variant=baseline", "eval.feature=f",
                 "train.stage1.epochs=40"]:
        args += ["--set", item]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, "-m", "anet_tf.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pointer = os.path.join(run_dir, "checkpoints", "last.json")
    deadline = time.monotonic() + 240
    while not os.path.exists(pointer) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 130, err[-3000:]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert lines[0].startswith(f"anet-tf fit: interrupted: {run_dir}: epoch ")
    assert f"continue with anet-tf fit --resume {run_dir}" in lines[0]
    done = int(lines[0].split(": epoch ", 1)[1].split()[0])
    with open(pointer) as fh:
        assert json.load(fh)["global_epoch"] == done
    code = main(["fit", "--resume", run_dir, "--set", f"train.stage1.epochs={done + 1}", "--no-export", "--quiet"])
    assert code == 0
    assert [int(r["global_epoch"]) for r in read_log(run_dir)] == list(range(1, done + 2))


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_over(run_copy, capsys):
    """A run folder with its config but no checkpoint (killed in the first epoch):
    --resume says so and trains from the beginning, without a traceback."""
    from anet_tf.training.run import CHECKPOINTS
    from anet_tf.training.run import LOG_FILE
    from anet_tf.training.run import METRICS_FILE

    for name in (CHECKPOINTS, LOG_FILE, METRICS_FILE):
        path = os.path.join(run_copy, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    assert main(["fit", "--resume", run_copy, "--no-export", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"no checkpoint in {run_copy}; starting from the beginning" in out
    assert "resumed" not in out
    assert len(read_log(run_copy)) == 2
    assert os.path.isfile(os.path.join(run_copy, METRICS_FILE))


def test_a_ctrl_c_that_python_swallows_in_a_del_is_raised_at_the_next_check():
    """A SIGINT arriving in a __del__ (TensorFlow releasing a traced function) is
    printed by Python as "Exception ignored" and lost; inside kept_interrupts it is
    remembered and raised by the next check (the first callback of every stage)."""
    from anet_tf.training.interrupt import kept_interrupts
    from anet_tf.training.interrupt import raise_if_interrupted

    class ReleasedInTheMiddleOfAStep:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)  # the handler runs here, inside __del__

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        ReleasedInTheMiddleOfAStep()  # without the context: swallowed, nothing to raise
        raise_if_interrupted()
        with pytest.raises(KeyboardInterrupt):
            with kept_interrupts():
                ReleasedInTheMiddleOfAStep()
                raise_if_interrupted()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        raise_if_interrupted()  # forgotten once raised
    finally:
        signal.signal(signal.SIGINT, previous)
