"""Progress of long work in both output forms: a terminal (a pseudo-terminal as the
child's stdout and stderr) gets bars and the epoch's line after Keras' bar; a file
gets plain lines only (the epoch's line, lines inside a long epoch, a line per
10 % of the evaluation's images and queries)."""

import io
import os
import pty
import select
import subprocess
import sys
import time

from helpers import TINY_OVERRIDES

# One stage of one epoch (the baseline has no stage 2): the least that shows it all.
ONE_EPOCH = [*TINY_OVERRIDES, "model.variant=baseline", "train.stage1.epochs=1",
             "train.lr_milestones=[1]"]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_draws_a_bar_on_a_terminal_and_a_line_per_tenth_in_a_file():
    from anet_tf.progress import Progress
    from anet_tf.progress import silenced

    tty, file = _Terminal(), io.StringIO()
    for stream in (tty, file):
        bar = Progress(100, "features", stream=stream)
        for _ in range(100):
            bar.update(1)
        bar.close()
    assert tty.getvalue().count("\r") == 100 and tty.getvalue().endswith("\n")
    lines = file.getvalue().splitlines()
    assert len(lines) == 11 and "\r" not in file.getvalue()
    assert lines[-1].startswith("features 100/100 [" + "#" * 30 + "]")
    quiet = io.StringIO()
    with silenced():
        bar = Progress(10, "features", stream=quiet)
        bar.update(10)
        bar.close()
    assert quiet.getvalue() == ""


def test_step_lines_at_each_tenth_of_a_long_epoch(tmp_path, capsys, monkeypatch):
    from anet_tf.training import callbacks as cb

    progress = cb.StageProgress(str(tmp_path), stage=1, stage_offset=3, stage_epochs=5,
                                batch_size=8, columns=["total"])
    progress.epoch = 1
    # an epoch shorter than the interval: no line
    lines = cb.StepLines(progress, 20)
    lines.on_epoch_begin(1)
    for batch in range(20):
        lines.on_train_batch_end(batch, {"total": 2.5})
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(cb, "STEP_LINE_INTERVAL_S", 0.0)
    lines = cb.StepLines(progress, 20)
    lines.on_epoch_begin(1)
    for batch in range(20):
        lines.on_train_batch_end(batch, {"total": 2.5})
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == [
        f"[anet-tf] stage 1 epoch 2/5 (global 5) step {s}/20" for s in range(2, 20, 2)
    ]
    assert all("total 2.5000 | " in line and "img/s" in line for line in out)


def _run_on_a_terminal(cmd, timeout=240):
    """Run ``cmd`` with a pseudo-terminal as stdin, stdout and stderr; (exit
    status, everything it wrote)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1.0)[0]:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            out += data
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(), out.decode(errors="replace")


def _fit_args(run_dir, root, *extra):
    args = ["fit", "--out", str(run_dir), "--no-export"]
    for item in [f"data.root={root}", *ONE_EPOCH, *extra]:
        args += ["--set", item]
    return args


def test_fit_and_evaluate_on_a_terminal(tiny_dataset, tmp_path):
    """Keras' bar, then the epoch's line (with its number, though the stage has
    one epoch) on a line of its own; the evaluation's bars."""
    rc, out = _run_on_a_terminal(
        [sys.executable, "-m", "anet_tf.cli", *_fit_args(tmp_path / "run", tiny_dataset)]
    )
    assert rc == 0, out[-3000:]
    bar_end = out.index("2/2")  # Keras' bar at its last step
    epoch = out.index("\n[anet-tf] stage 1 epoch 1/1 (global 1): total ")
    assert bar_end < epoch
    assert "| lr " in out[epoch:] and " img/s | " in out[epoch:]
    evaluating = out.index("[anet-tf] evaluating on the synthetic test split")
    assert evaluating < out.index("\rfeatures 20/20 [") < out.index("\rranking 6/6 [")
    assert out.index("\rranking 6/6 [") < out.index("| synthetic |")
    # evaluate --quiet: the table, no bars
    rc, out = _run_on_a_terminal(
        [sys.executable, "-m", "anet_tf.cli", "evaluate", "--run", str(tmp_path / "run"), "--quiet"]
    )
    assert rc == 0, out[-3000:]
    assert "| synthetic |" in out and "features " not in out and "ranking " not in out


def test_stage_callbacks_place_the_bar_and_the_step_lines(tmp_path):
    """A terminal: Keras' bar finishes its epoch before the evaluation and the
    epoch's line; a file: the step lines (fit.py picks one by the output)."""
    from anet_tf.training import callbacks as cb

    progress = cb.StageProgress(str(tmp_path), stage=1, stage_offset=0, stage_epochs=1,
                                batch_size=8, columns=["total"])
    kinds = [type(c) for c in cb.stage_callbacks(
        progress, base_lr=0.1, milestones=[], gamma=0.1, print_epochs=True, keras_bar=True
    )]
    assert kinds.index(cb.keras.callbacks.ProgbarLogger) < kinds.index(cb.Evaluation)
    assert cb.StepLines not in kinds
    lines = cb.stage_callbacks(progress, base_lr=0.1, milestones=[], gamma=0.1,
                               print_epochs=True, step_lines=20)
    assert isinstance(lines[-1], cb.StepLines) and lines[-1].every == 2
    assert cb.keras.callbacks.ProgbarLogger not in [type(c) for c in lines]


def test_evaluation_progress_in_a_file(make_tiny_cfg, capsys):
    """Not a terminal: a plain line per tenth of the images through the network
    and of the queries ranked, on stdout (stderr is for an error's one line)."""
    import numpy as np

    from anet_tf.data.readers import load_dataset
    from anet_tf.evaluation.extract import evaluate_predictor

    cfg = make_tiny_cfg("model.variant=baseline", "eval.flip=true")
    dataset = load_dataset(cfg, check_images=False)
    rng = np.random.default_rng(0)
    metrics = evaluate_predictor(
        lambda images: (rng.standard_normal((len(images), 8)).astype("float32"), {}),
        dataset, cfg,
    )
    assert 0.0 <= metrics["mAP"] <= 1.0
    captured = capsys.readouterr()
    err = captured.out
    assert "\r" not in err and captured.err == ""
    images = 2 * (len(dataset.query) + len(dataset.gallery))  # and flipped
    features = [line for line in err.splitlines() if line.startswith("features ")]
    assert 2 <= len(features) <= 11
    assert features[-1].startswith(f"features {images}/{images} [" + "#" * 30 + "]")
    assert "img/s" in features[-1]
    ranking = [line for line in err.splitlines() if line.startswith("ranking ")]
    n = len(dataset.query)
    assert ranking and ranking[-1].startswith(f"ranking {n}/{n} [") and "queries/s" in ranking[-1]


def test_index_build_and_add_say_what_they_do(tmp_path, random_embeddings, capsys,
                                              monkeypatch):
    """In a file: the rows read, the IVF training, the rows added, before the
    result (stdout; stderr is for an error's one line), for a large gallery (the
    threshold set to 0 rows here)."""
    from anet_tf.cli import main
    from anet_tf.search import index

    assert main(["index", "build", save_small(tmp_path, random_embeddings),
                 "-o", str(tmp_path / "small")]) == 0
    assert capsys.readouterr().out.startswith("wrote ")  # small: the result only
    monkeypatch.setattr(index, "INDEX_NOTE_ROWS", 0)
    from anet_tf.search.embeddings import save_embeddings

    first = save_embeddings(random_embeddings(300, 16), str(tmp_path / "a.npz"))
    more = random_embeddings(20, 16, seed=5)
    more.paths = [f"more/{p}" for p in more.paths]
    second = save_embeddings(more, str(tmp_path / "b.npz"))
    target = tmp_path / "idx"
    assert main(["index", "build", first, "-o", str(target), "--kind", "ivf", "--nlist", "4"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[:3] == [
        "[anet-tf] index: read 300 rows (16-d) from 1 embeddings file(s)",
        "[anet-tf] index: training IVF4,Flat on 300 vectors ...",
        "[anet-tf] index: adding 300 rows (ivf) ...",
    ]
    assert captured.out.splitlines()[3].startswith("wrote ") and captured.err == ""
    assert main(["index", "add", str(target), second]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"[anet-tf] index: adding 20 rows to the 300 of {target} ...",
        f"added 20 items to {target}: 320 items",
    ]
    # --quiet: the result only
    third = random_embeddings(10, 16, seed=6)
    third.paths = [f"third/{p}" for p in third.paths]
    assert main(["index", "add", str(target), save_embeddings(third, str(tmp_path / "c.npz")),
                 "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"added 10 items to {target}: 330 items"]
    assert main(["index", "build", first, "-o", str(tmp_path / "q"), "--kind", "ivf",
                 "--nlist", "4", "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("wrote ")


def save_small(tmp_path, random_embeddings) -> str:
    from anet_tf.search.embeddings import save_embeddings

    return save_embeddings(random_embeddings(300, 16), str(tmp_path / "small.npz"))


LARGE_INDEX_BUILD = """
import sys
from anet_tf.search import index
from anet_tf.cli import main
index.INDEX_NOTE_ROWS = 0
sys.exit(main(sys.argv[1:]))
"""


def test_index_build_on_a_terminal(tmp_path, random_embeddings):
    first = save_small(tmp_path, random_embeddings)
    rc, out = _run_on_a_terminal([sys.executable, "-c", LARGE_INDEX_BUILD, "index", "build",
                                  first, "-o", str(tmp_path / "idx"), "--kind", "ivf",
                                  "--nlist", "4"], timeout=120)
    assert rc == 0, out
    assert "[anet-tf] index: training IVF4,Flat on 300 vectors ...\r\n" in out
    assert out.index("index: adding 300 rows") < out.index("wrote ")


def test_milvus_build_shows_its_inserts(tmp_path, random_embeddings, capsys):
    """In a file: a line per tenth of the rows inserted into a Milvus collection
    (stdout)."""
    import pytest

    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from anet_tf.cli import main
    from anet_tf.search.embeddings import save_embeddings

    first = save_embeddings(random_embeddings(30, 16), str(tmp_path / "a.npz"))
    assert main(["index", "build", first, "-o", str(tmp_path / "g.db"), "--collection", "c"]) == 0
    inserts = [line for line in capsys.readouterr().out.splitlines()
               if line.startswith("[anet-tf] index: inserting ")]
    assert inserts and inserts[-1].startswith("[anet-tf] index: inserting 30/30 [")
    assert "rows/s" in inserts[-1]
