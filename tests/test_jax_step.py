"""Tests of the JAX train step (anet_tf/training/jax_step.py) and its benchmark.

Keras picks its backend once per process, so everything JAX runs in a subprocess
under ``KERAS_BACKEND=jax`` in which TensorFlow cannot be imported (the approach of
tests/loss_backend_probe.py: a meta-path finder installed before anything else
refuses it). The finder also reports each refusal on stderr, so an import that the
code catches and survives (an optional probe for TensorFlow) is seen too.

The subprocess trains a tiny ANet one step per stage and writes the weights
(``net.save_weights``) and loss terms; this process (TensorFlow) runs
``ANetTrainer.train_step`` from the same weights on the same batch and compares
the terms and the updated weights. Shapes are tiny (ResNet-18-IBN-a of width 8 at
32x32, batch 2 x 4), and XLA's CPU backend optimisation is turned down in the
subprocesses: at these sizes compilation is nearly all of the time.

Only collected when JAX is installed (``pip install "jax[cpu]"``).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import JAX_FAST_COMPILE

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason='JAX is not installed (pip install "jax[cpu]")',
)

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = ROOT / "benchmarks" / "train_throughput_jax.py"
REFUSED = "refused import of "

# Run first in every JAX subprocess (its stderr is checked for REFUSED).
REFUSE_TENSORFLOW = f"""
import importlib.abc, sys

class _RefuseTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            sys.stderr.write("{REFUSED}" + name + "\\n")
            raise ImportError(name + " is refused: the JAX path must not need it")
        return None

sys.meta_path.insert(0, _RefuseTensorFlow())
"""
# Compile time is what tiny shapes cost on CPU (helpers.JAX_FAST_COMPILE).
FAST_COMPILE = JAX_FAST_COMPILE

ATTRIBUTES = ["color", "type"]
TINY = dict(
    num_ids=8,
    attribute_names=ATTRIBUTES,
    num_classes=[4, 3],
    backbone="resnet18_ibn_a",
    base_width=8,
    image_size=(32, 32),
    s_f=32,
    s_a=16,
    s_j=32,
)
P, K = 2, 4
LOSS_KWARGS = dict(label_smoothing=0.1, triplet_margin=0.3, pattern_margin=0.3)
# SGD with momentum, and a coupled decay large enough to matter next to the
# gradients, so an update that misses either differs from the trainer's.
LR, WEIGHT_DECAY = 0.01, 0.05
STAGES = (1, 2)
# The initial weights (drawn in the JAX subprocess). Unseeded, some draws put two
# batch-hard candidates within float32 rounding of each other, and then the
# frameworks' rounding picks different triplets; see test_mining_is_not_a_tie.
SEED = 7


def run_jax(argv: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    """Run ``python ARGV`` under KERAS_BACKEND=jax on the CPU; ``argv`` starts with
    REFUSE_TENSORFLOW's code. Fails when it fails or asked for TensorFlow."""
    base = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    for flags in (f"{base.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip(), None):
        env = dict(base) if flags is None else dict(base, XLA_FLAGS=flags)
        proc = subprocess.run(
            [sys.executable, *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if "Unknown flag" not in proc.stderr:
            break
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert REFUSED not in proc.stderr, "the JAX path tried to import TensorFlow"
    return proc


def tiny_batch():
    """Images and targets of one P x K batch (every identity with its own
    attribute labels and their pattern)."""
    rng = np.random.default_rng(7)
    pid = np.repeat(np.arange(P), K).astype(np.int32)
    attributes = np.stack([pid % 4, (pid + 1) % 3], axis=1).astype(np.int32)
    targets = {
        "pid": pid,
        "attributes": attributes,
        "pattern": (attributes[:, 0] * 3 + attributes[:, 1]).astype(np.int32),
    }
    images = rng.standard_normal((P * K, *TINY["image_size"], 3)).astype(np.float32)
    return images, targets


def float32_tiny_nets(count: int) -> list:
    """``count`` networks of TINY's shapes in float32, whatever the global policy."""
    import keras

    from anet_tf.model.anet import build_anet

    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        return [build_anet(**TINY) for _ in range(count)]
    finally:
        keras.mixed_precision.set_global_policy(policy)


def assert_same_change(path: str, w0, jax_w, tf_w) -> None:
    """The JAX step changed a variable from ``w0`` as TensorFlow's did, within 1 %
    of the variable's largest change (the frameworks round float32 differently)."""
    tf_change, jax_change = tf_w - w0, jax_w - w0
    scale = np.abs(tf_change).max()
    np.testing.assert_allclose(
        jax_change, tf_change, rtol=0, atol=1e-2 * scale + 1e-7, err_msg=path
    )


def jax_side(out: str, seed: int = SEED) -> None:
    """The subprocess: one jitted step of each stage from random weights, writing
    ``initial.weights.h5``, ``stage{1,2}.weights.h5`` (after each step) and
    ``result.json``: the terms of each stage, the optimizer's iteration count,
    whether TensorFlow is loaded, and how far a stage-1 step through a
    ``LossScaleOptimizer`` lands from the plain one (largest difference of a
    variable over its largest change)."""
    import random

    import keras
    import numpy as np

    from anet_tf.model.anet import build_anet
    from anet_tf.training import jax_step

    if keras.backend.backend() != "jax":
        raise SystemExit(f"Keras runs {keras.backend.backend()}, not jax")
    folder = Path(out)
    # Keras draws unseeded initializers' seeds from Python's random module
    # (keras.utils.set_random_seed would import TensorFlow).
    random.seed(seed)
    net = build_anet(**TINY)
    net.save_weights(folder / "initial.weights.h5")
    images, targets = tiny_batch()

    def step_of(optimizer, stage):
        return jax_step.make_train_step(
            net,
            attribute_names=ATTRIBUTES,
            variant="anet",
            loss_kwargs=LOSS_KWARGS,
            optimizer=optimizer,
            stage=stage,
            weight_decay=WEIGHT_DECAY,
        )

    scaled = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(LR, momentum=0.9))
    state = jax_step.train_state(net, scaled)
    initial = [np.array(w) for w in state.trainable]  # copies: the step donates
    _, scaled_weights, *_ = step_of(scaled, 1)(*state, images, targets)

    optimizer = keras.optimizers.SGD(LR, momentum=0.9)
    state = jax_step.train_state(net, optimizer)
    result = {}
    for stage in STAGES:
        terms, *state = step_of(optimizer, stage)(*state, images, targets)
        if stage == 1:
            result["loss_scaled_difference"] = max(
                float(np.abs(np.asarray(a) - b).max() / np.abs(b - w0).max())
                for a, b, w0 in zip(
                    scaled_weights, map(np.asarray, state[0]), initial, strict=True
                )
            )
        jax_step.assign_state(net, optimizer, *state)
        net.save_weights(folder / f"stage{stage}.weights.h5")
        result[f"stage{stage}"] = {name: float(v) for name, v in terms.items()}
    result["iterations"] = int(optimizer.iterations.value)
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    (folder / "result.json").write_text(json.dumps(result))


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    """The folder jax_side wrote, and its result.json."""
    folder = tmp_path_factory.mktemp("jax-step")
    code = (
        REFUSE_TENSORFLOW
        + f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        + "import test_jax_step\n"
        + f"test_jax_step.jax_side({str(folder)!r})\n"
    )
    run_jax(["-c", code])
    return folder, json.loads((folder / "result.json").read_text())


@pytest.fixture(scope="module")
def tf_run(jax_run):
    """ANetTrainer.train_step (TensorFlow, eager), one step per stage, each from
    the weights the JAX run had before its step: ``{stage: (logs, weights)}``,
    plus the JAX run's weights loaded into a TensorFlow copy of the network
    (``{"initial" | stage: weights}``) and the variable groups by layer."""
    import keras

    from anet_tf.training.trainer import ANetTrainer

    folder, _ = jax_run
    net, reference = float32_tiny_nets(2)
    net.load_weights(folder / "initial.weights.h5")
    trainer = ANetTrainer(
        net, ATTRIBUTES, "anet", LOSS_KWARGS, weight_decay=WEIGHT_DECAY
    )
    trainer.compile(optimizer=keras.optimizers.SGD(LR, momentum=0.9))
    images, targets = tiny_batch()
    trained, loaded = {}, {}
    for stage in STAGES:
        # Each step starts from the JAX run's weights before it (the optimizer's
        # momentum is its own, equal to the JAX run's up to rounding).
        before = "initial" if stage == 1 else f"stage{stage - 1}"
        net.load_weights(folder / f"{before}.weights.h5")
        trainer.set_stage(stage)
        for tracker in trainer.metrics:
            tracker.reset_state()
        logs = trainer.train_step((images, targets))
        trained[stage] = (
            {name: float(v) for name, v in logs.items()},
            [w.numpy() for w in net.weights],
        )
    for key, name in [("initial", "initial"), *((s, f"stage{s}") for s in STAGES)]:
        reference.load_weights(folder / f"{name}.weights.h5")
        loaded[key] = [w.numpy() for w in reference.weights]
    groups = {
        "paths": [w.path for w in reference.weights],
        "trainable": {id(w) for w in reference.trainable_weights},
        "frozen": {
            id(w)
            for name in ("backbone", "f_head")
            for w in reference.get_layer(name).weights
        },
        "backbone_statistics": {
            id(w) for w in reference.get_layer("backbone").non_trainable_weights
        },
    }
    ids = [id(w) for w in reference.weights]
    return trained, loaded, groups, ids


# ------------------------------------------------------------------ benchmark


@pytest.mark.parametrize(
    "precisions",
    [
        ("float32",),
        # bfloat16 doubles the compilations (about a minute on 2 cores): slow suite
        pytest.param(("float32", "bfloat16"), marks=pytest.mark.slow),
    ],
)
def test_benchmark_reports_every_variant_without_tensorflow(tmp_path, precisions):
    out = tmp_path / "bench.json"
    args = [*_tiny_benchmark_args(out), "--precisions", ",".join(precisions)]
    code = (
        REFUSE_TENSORFLOW
        + f"sys.path.insert(0, {str(BENCHMARK.parent)!r})\n"
        + f"sys.argv = [{str(BENCHMARK)!r}] + {args!r}\n"
        + "import runpy\n"
        + f"runpy.run_path({str(BENCHMARK)!r}, run_name='__main__')\n"
    )
    proc = run_jax(["-c", code])
    report = json.loads(out.read_text())
    assert report["tensorflow_imported"] is False
    assert report["batch"] == P * K and report["image_size"] == [32, 32]
    rows = {(r["model"], r["stage"], r["precision"]): r for r in report["rows"]}
    expected = {
        (model, stage, precision)
        for precision in precisions
        for model, stage in (("baseline", 1), ("anet", 1), ("anet", 2))
    }
    assert set(rows) == expected
    for key, row in rows.items():
        for field in ("images_per_s_median", "mfu", "loss_total"):
            assert math.isfinite(row[field]), (key, field)
        assert row["images_per_s_median"] > 0 and row["mfu"] > 0, key
    for precision in precisions:
        base = rows[("baseline", 1, precision)]
        assert base["ratio_to_baseline"] == 1.0
        stage1, stage2 = rows[("anet", 1, precision)], rows[("anet", 2, precision)]
        # ANet adds branches to the baseline; stage 2 skips the backbone's backward.
        assert stage1["train_flops_per_image"] > base["train_flops_per_image"]
        assert stage2["train_flops_per_image"] < stage1["train_flops_per_image"]
        assert stage1["train_flops_per_image"] == 3 * stage1["forward_flops_per_image"]
    # The table has one line per row, and the FLOPs it used are printed.
    assert proc.stdout.count("| anet | 2 |") == len(precisions)
    assert "training = 3 x forward" in proc.stdout


def _tiny_benchmark_args(json_out: Path) -> list[str]:
    return [
        "--backbone", "resnet18_ibn_a", "--base-width", "8", "--image-size", "32",
        "--batch", str(P * K), "--steps", "2", "--warmup", "1",
        "--peak-tflops", "1", "--json-out", str(json_out),
    ]  # fmt: skip


# ------------------------------------------------------------- the train step


def test_jax_step_needs_no_tensorflow(jax_run):
    _, result = jax_run
    assert result["tensorflow_imported"] is False
    # One optimizer for both stages: each step counts one iteration.
    assert result["iterations"] == len(STAGES)


def test_loss_scale_optimizer_gives_the_same_update(jax_run):
    """The loss and the coupled decay are scaled by the current loss scale, which
    the optimizer removes again (a power of 2: nearly bit-exact)."""
    _, result = jax_run
    assert result["loss_scaled_difference"] < 1e-5


@pytest.mark.parametrize("stage", STAGES)
def test_loss_terms_equal_the_tensorflow_trainer(jax_run, tf_run, stage):
    _, result = jax_run
    logs, _ = tf_run[0][stage]
    terms = result[f"stage{stage}"]
    assert set(terms) == set(logs)
    for name, value in terms.items():
        assert math.isfinite(value), name
        assert value == pytest.approx(logs[name], rel=1e-4, abs=1e-6), name


@pytest.mark.parametrize("stage", STAGES)
def test_update_equals_the_tensorflow_trainer(tf_run, stage):
    """Same gradients, decay, optimizer and BatchNorm statistics: each variable's
    change in the JAX step equals its change in ANetTrainer.train_step, within 1 %
    of the variable's largest change: the two frameworks round float32 differently
    (differences up to about 1e-3 of it were seen under a loaded parallel run),
    while a step without the coupled decay misses by several times the bound."""
    trained, loaded, groups, _ = tf_run
    before = loaded["initial"] if stage == 1 else loaded[stage - 1]
    rows = zip(groups["paths"], before, loaded[stage], trained[stage][1], strict=True)
    for path, w0, jax_w, tf_w in rows:
        assert_same_change(path, w0, jax_w, tf_w)


def mining_margins(features, labels, margin):
    """The smallest gaps that batch-hard mining and its hinge decide on, each over
    the batch's largest distance: between the hardest and the next positive,
    between the closest and the next negative, and |d_ap - d_an + margin|."""
    x = np.asarray(features, np.float64)
    dist = np.sqrt(np.maximum(((x[:, None] - x[None]) ** 2).sum(-1), 0.0))
    same = labels[:, None] == labels[None]
    gaps = []
    for i in range(len(x)):
        pos = np.sort(dist[i][same[i] & (np.arange(len(x)) != i)])[::-1]
        neg = np.sort(dist[i][~same[i]])
        gaps += [pos[0] - pos[1], neg[1] - neg[0], abs(pos[0] - neg[0] + margin)]
    return min(gaps) / dist.max()


def test_mining_is_not_a_tie(jax_run):
    """The batch-hard triplets (f and j by vehicle, g by attribute pattern) at the
    start of each stage are chosen with a margin far above float32 rounding: the
    frameworks round differently, and a near-tie would let each pick another
    triplet (a few percent of the update apart: what an unseeded draw once gave).
    A failure here means SEED must change, not the JAX step."""
    folder, _ = jax_run
    (net,) = float32_tiny_nets(1)
    images, targets = tiny_batch()
    for weights in ("initial", "stage1"):
        net.load_weights(folder / f"{weights}.weights.h5")
        out = net(images, training=True)
        for key, labels in (("f", "pid"), ("j", "pid"), ("g", "pattern")):
            margin = LOSS_KWARGS["pattern_margin" if key == "g" else "triplet_margin"]
            gap = mining_margins(out[key], targets[labels], margin)
            assert gap > 1e-3, (weights, key, gap)


def test_stage1_trains_every_variable_and_backbone_statistics(tf_run):
    _, loaded, groups, ids = tf_run
    for path, key, w0, w1 in zip(
        groups["paths"], ids, loaded["initial"], loaded[1], strict=True
    ):
        if key in groups["trainable"] or key in groups["backbone_statistics"]:
            assert not np.array_equal(w0, w1), path


def test_stage2_freezes_backbone_and_f_head_and_trains_the_rest(tf_run):
    _, loaded, groups, ids = tf_run
    for path, key, w1, w2 in zip(
        groups["paths"], ids, loaded[1], loaded[2], strict=True
    ):
        if key in groups["frozen"]:
            # Weights and the backbone's BatchNorm statistics (inference mode).
            np.testing.assert_array_equal(w2, w1, err_msg=path)
        elif key in groups["trainable"]:
            assert not np.array_equal(w1, w2), path


def test_make_train_step_refuses_another_backend():
    import keras

    from anet_tf.training.jax_step import make_train_step

    if keras.backend.backend() == "jax":
        pytest.skip("this process runs the JAX backend")

    with pytest.raises(RuntimeError, match="KERAS_BACKEND=jax"):
        make_train_step(
            None, attribute_names=[], variant="baseline", loss_kwargs={}, optimizer=None
        )
