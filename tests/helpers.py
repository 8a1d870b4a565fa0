"""Plain helpers and settings that more than one test module imports
(``from helpers import ...``; tests/ is on the path, pyproject's ``pythonpath``).
The fixtures stay in conftest.py."""

import csv
import os
import subprocess
import sys


def read_log(run_dir):
    """The rows of a run folder's log.csv, as dicts of strings."""
    with open(os.path.join(run_dir, "log.csv"), encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def run_script(script, env, timeout=420):
    """Run Python source in a fresh interpreter (for process-global settings: dtype
    policy, logical devices, TF_CONFIG), capturing its output."""
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
    )


# XLA options that cut the compile time of tiny JAX steps on CPU several fold (at
# these sizes compilation is nearly all of the time). A jaxlib that does not know
# an option refuses to start ("Unknown flag"): callers then run without them.
JAX_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


# The smallest settings that still train both stages of every variant (CPU, seconds).
TINY_OVERRIDES = [
    "data.image_size=[32, 32]",
    "data.batch_size=8",
    "data.num_instances=4",
    "data.test_batch_size=16",
    "model.base_width=8",
    "model.s_f=16",
    "model.s_a=8",
    "model.s_j=16",
    "train.stage1.epochs=2",
    "train.stage1.steps_per_epoch=2",
    "train.stage2.epochs=1",
    "train.stage2.steps_per_epoch=2",
    "train.lr_milestones=[2]",
    "train.strategy=one_device",
    # SGD: the update graph of Amsgrad (the paper's optimizer, the configs' default)
    # costs about 30 % of a tiny ANet run's CPU time to trace (measured 22.5 s vs
    # 15.9 s of CPU per run, two runs each, on a shared machine); tests that are
    # about the optimizer state name amsgrad.
    "train.optimizer=sgd",
    # The paper's stage 2 (the schedule's lr) and no attribute refit, where the
    # default config has stage 2 at 6e-4 and the refit: the tests of the schedule and
    # of resumed runs are about the paper's training; tests/test_refit.py covers the
    # refit and names it.
    "train.stage2.lr=null",
    "train.attribute_refit=false",
]


def one_line(capsys, argv, code) -> str:
    """Run ``anet-tf ARGV`` in this process: it exits ``code`` with one line on
    stderr (no traceback), which is returned."""
    from anet_tf.cli import main

    got = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert got == code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
