"""Training with FastReID's strong-baseline switches: the backbone frozen for the
first iterations, and tiny end-to-end runs of the strong configs."""

from __future__ import annotations

import csv
import os

import keras
import numpy as np
import pytest

from anet_tf.config import ConfigError
from anet_tf.config import load_config
from anet_tf.training.trainer import cosine_lr_at_epoch

# Every strong switch of anet_tf/configs/fastreid_sbs_base.yaml (network, losses, schedule,
# augmentation), at tiny shapes.
STRONG = [
    "model.stem=fastreid",
    "model.non_local=true",
    "model.head.pooling=gem",
    "model.head.neck=bnneck",
    "model.head.classifier=circle",
    "model.s_f=0",
    "model.s_j=0",
    "loss.soft_margin=true",
    "train.optimizer=sgd",
    "train.nesterov=false",
    "train.lr=0.01",
    "train.weight_decay_mode=coupled",
    "train.lr_schedule=cosine",
    "train.lr_delay_epochs=1",
    "train.lr_min=0.0001",
    "train.warmup_iters=3",
    "train.freeze_iters=2",
    "data.augment.pad=2",
    "data.augment.erasing_fill=mean",
    "data.augment.autoaugment_prob=0.5",
]


def _rows(run_dir):
    with open(os.path.join(run_dir, "log.csv"), newline="") as fh:
        return list(csv.DictReader(fh))


class _EpochSnapshots(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.backbone, self.heads = [], []

    def _take(self):
        net = self.model.net
        self.backbone.append([w.numpy().copy() for w in net.get_layer("backbone").weights])
        self.heads.append([w.numpy().copy() for w in net.weights if "backbone" not in w.path])

    def on_train_begin(self, logs=None):
        if not self.backbone:
            self._take()

    def on_epoch_end(self, epoch, logs=None):
        self._take()


def test_frozen_backbone_for_the_first_iterations_then_trained(make_tiny_cfg, tmp_path):
    from anet_tf.training.fit import train

    cfg = make_tiny_cfg(
        *STRONG, "model.variant=baseline", "eval.feature=f", "train.stage2.epochs=0"
    )
    snaps = _EpochSnapshots()
    run_dir = str(tmp_path / "run")
    train(cfg, run_dir, extra_callbacks=(snaps,), verbose=0)
    _check_log(run_dir, "baseline")
    start, after_freeze, end = snaps.backbone
    # The first 2 steps (epoch 1): every backbone weight and moving statistic as it was.
    for a, b in zip(start, after_freeze, strict=True):
        np.testing.assert_array_equal(a, b)
    # ... while the heads trained, and the backbone trains from step 3 on.
    assert any(not np.array_equal(a, b) for a, b in zip(snaps.heads[0], snaps.heads[1], strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(after_freeze, end, strict=True))


def _check_log(run_dir, variant):
    rows = _rows(run_dir)
    assert all(np.isfinite(float(r["total"])) for r in rows)
    # The lr column is the epoch's lr at its end: epoch 1 ends inside the warm-up
    # (step 2 of 3), epoch 2 at the cosine's epoch-1 value, stage 2 at its own lr.
    lrs = [float(r["lr"]) for r in rows]
    want = [0.01 * (0.1 * (1 - 1 / 3) + 1 / 3), cosine_lr_at_epoch(1, 0.01, 2, 1, 1e-4)]
    if variant == "anet":
        want.append(1e-4)
    np.testing.assert_allclose(lrs, want, rtol=1e-5)


@pytest.mark.slow  # about 45 s; the default suite trains the switches on the baseline
def test_strong_switches_train_anet_through_both_stages(make_tiny_cfg, tmp_path):
    """(The baseline with every switch is the run of the test above; the slow
    `fit --config veri776_strong` test below also trains ANet through both stages.)"""
    from anet_tf.training.fit import train

    # Stage 2 runs the frozen backbone in inference mode, on BatchNorm moving
    # statistics that 4 tiny steps have barely moved from (0, 1); each non-local
    # block (cubic in its input) then multiplies the map's scale by ~10
    # (measured: max |x| 184, 1825, 37792, 183989 after the four blocks, against 4-6
    # in training mode) and stage 2's loss turned NaN. Real runs start from
    # calibrated statistics; the test above covers the non-local blocks in training.
    variant, feature = "anet", "j"
    switches = [s for s in STRONG if not s.startswith("model.non_local")]
    cfg = make_tiny_cfg(
        *switches, f"model.variant={variant}", f"eval.feature={feature}", "train.stage2.lr=0.0001"
    )
    run_dir = str(tmp_path / variant)
    train(cfg, run_dir, verbose=0)
    _check_log(run_dir, variant)


def test_freeze_iters_refuses_decoupled_decay():
    with pytest.raises(ConfigError, match="train.freeze_iters"):
        load_config(
            "synthetic",
            ["train.freeze_iters=10", "train.weight_decay_mode=decoupled", "train.weight_decay=0.0005"],
        )


@pytest.mark.parametrize("name", ["veri776_strong", "veriwild_strong", "vehicleid_strong"])
def test_strong_configs_load_with_fastreids_settings(name):
    cfg = load_config(name)
    assert (cfg.model.stem, cfg.model.non_local) == ("fastreid", True)
    assert (cfg.model.head.pooling, cfg.model.head.neck, cfg.model.head.classifier) == (
        "gem", "bnneck", "circle",
    )
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.lr_schedule) == ("sgd", 0.01, "cosine")
    assert (cfg.train.warmup_iters, cfg.train.freeze_iters, cfg.train.stage1.epochs) == (3000, 3000, 60)
    assert cfg.data.augment.erasing_fill == "mean" and cfg.data.augment.pad == 10


class _Quadratic:
    """A trainer whose loss is 0.5 * sum(outputs**2) over a Dense + BatchNorm net."""

    @staticmethod
    def make(**groups):
        import tensorflow as tf

        from anet_tf.training.trainer import ANetTrainer

        class Trainer(ANetTrainer):
            def compute_terms(self, images, targets, training):
                out = self.net(images, training=training)
                return {"total": tf.reduce_mean(0.5 * tf.reduce_sum(out**2, axis=1))}

        net = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(4, bias_initializer="ones", name="dense"),
             keras.layers.BatchNormalization(beta_initializer="ones", name="bn")],
            name="net",
        )
        return Trainer(net, [], "baseline", {}, weight_decay=0.05, **groups), net


def test_parameter_groups_decay_and_lr_factor_match_an_sgd_step():
    import tensorflow as tf

    from anet_tf.training.trainer import variable_groups

    lr, wd, wd_norm, wd_bias, factor = 0.1, 0.05, 0.0, 0.01, 2.0
    trainer, net = _Quadratic.make(
        weight_decay_norm=wd_norm, weight_decay_bias=wd_bias, bias_lr_factor=factor
    )
    norms, biases = variable_groups(net)
    names = {v.path: (id(v) in norms, id(v) in biases) for v in net.variables}
    assert names["net/dense/kernel"] == (False, False)
    assert names["net/dense/bias"] == (False, True)
    assert names["net/bn/gamma"] == (True, False)
    assert names["net/bn/beta"] == (True, False)

    optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=0.0)
    optimizer.build(net.trainable_variables)
    trainer.compile(optimizer=optimizer)
    x = np.random.default_rng(0).standard_normal((8, 3)).astype("float32")
    before = [v.numpy().copy() for v in net.trainable_variables]
    with tf.GradientTape() as tape:
        loss = trainer.compute_terms(x, None, training=True)["total"]
    grads = [g.numpy() for g in tape.gradient(loss, net.trainable_variables)]
    trainer.fit(tf.data.Dataset.from_tensors((x, x)), epochs=1, verbose=0, shuffle=False)
    for v, w0, g in zip(net.trainable_variables, before, grads, strict=True):
        norm, bias = names[v.path]
        decay = wd_norm if norm else wd_bias if bias else wd
        step = (factor if bias else 1.0) * (g + decay * w0)
        np.testing.assert_allclose(v.numpy(), w0 - lr * step, rtol=1e-5, atol=1e-6, err_msg=v.path)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["train.bias_lr_factor=2"], "train.bias_lr_factor"),  # amsgrad
        (["train.weight_decay_norm=0"], "train.weight_decay_norm"),  # decoupled
        (["train.weight_decay_mode=coupled", "train.weight_decay_bias=-1"], "train.weight_decay_bias"),
    ],
)
def test_parameter_group_settings_that_cannot_apply_are_refused(overrides, key):
    with pytest.raises(ConfigError, match=key):
        load_config("synthetic", overrides)


@pytest.mark.slow  # about 100 s on 2 cores: ResNet-50 graph, AutoAugment, export
@pytest.mark.filterwarnings("ignore:.*typeID=\"0\":UserWarning")  # the fixture's erratum
def test_veri776_strong_fits_on_the_release_layout(tmp_path, veri776_release, capsys):
    """`anet-tf fit --config veri776_strong` on a tiny copy of the VeRi release: the
    whole strong configuration (ResNet-50-IBN-a with the FastReID stem and non-local
    blocks, strong heads, SGD with warm-up and the frozen backbone, pad/crop,
    AutoAugment, mean erasing) trains both stages, evaluates and exports."""
    import json

    from anet_tf.cli import main

    root = veri776_release.make(tmp_path / "VeRi")
    run = tmp_path / "run"
    tiny = [
        f"data.root={root}", "data.image_size=[32, 32]", "data.batch_size=8",
        "data.num_instances=4", "data.test_batch_size=8", "model.base_width=4",
        "model.pretrained=none", "train.stage1.epochs=1", "train.stage1.steps_per_epoch=2",
        "train.stage2.epochs=1", "train.stage2.steps_per_epoch=1", "train.lr_delay_epochs=0",
        "train.strategy=one_device",
    ]
    args = ["fit", "--quiet", "--config", "veri776_strong", "--out", str(run)]
    for item in tiny:
        args += ["--set", item]
    assert main(args) == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["metrics"]["mAP"] <= 1.0
    assert os.path.exists(os.path.join(metrics["saved_model"], "saved_model.pb"))
    assert [r["stage"] for r in _rows(str(run))] == ["1", "2"]


def _tiny_strong_fit(config, root, run, *extra):
    """`anet-tf fit --config <config>` for two stage-1 steps and one stage-2 step at
    tiny size (what a user runs to check a pipeline before a long job). The shipped
    schedule is kept, but for the cosine's delay, which must be below the run's
    epochs."""
    args = ["fit", "--quiet", "--no-export", "--config", config, "--out", str(run)]
    tiny = [
        f"data.root={root}", "data.image_size=[32, 32]", "data.batch_size=8",
        "data.num_instances=4", "data.test_batch_size=8", "model.base_width=4",
        "model.pretrained=none", "train.stage1.epochs=1", "train.stage1.steps_per_epoch=2",
        "train.stage2.epochs=1", "train.stage2.steps_per_epoch=1", "train.lr_delay_epochs=0",
        "train.strategy=one_device", *extra,
    ]
    for item in tiny:
        args += ["--set", item]
    return args


@pytest.mark.slow  # a few minutes per config on 2 cores (ResNet-50 graphs)
@pytest.mark.filterwarnings("ignore:.*typeID=\"0\":UserWarning")  # the VeRi fixture's erratum
@pytest.mark.parametrize(
    "config, release, folder",
    [
        ("veri776_strong", "veri776_release", "VeRi"),
        ("veriwild_strong", "veriwild_release", "VERI-Wild"),
        ("vehicleid_strong", "vehicleid_release", "VehicleID"),
    ],
)
def test_a_two_step_smoke_run_of_each_strong_config(config, release, folder, request, tmp_path, capsys):
    """Each shipped strong config, through the CLI on a tiny copy of its dataset's
    release: two steps (inside FastReID's frozen-backbone iterations,
    train.freeze_iters), one stage-2 step, evaluation; exit 0."""
    from anet_tf.cli import main

    root = request.getfixturevalue(release).make(tmp_path / folder)
    run = tmp_path / "run"
    assert main(_tiny_strong_fit(config, root, run)) == 0, capsys.readouterr().err
    rows = _rows(str(run))
    assert [r["stage"] for r in rows] == ["1", "2"]
    assert all(np.isfinite(float(r["total"])) for r in rows)


@pytest.mark.slow  # about two minutes on 2 cores
@pytest.mark.filterwarnings("ignore:.*typeID=\"0\":UserWarning")
def test_a_smoke_run_that_trains_a_random_backbone_stops_naming_the_moving_statistics(
    tmp_path, veri776_release, capsys
):
    """Without the frozen backbone, two steps from random initialisation (measured
    at full width: stem kernel mean |w| 0.021 -> 0.62) leave BatchNorm's moving
    statistics far behind the weights: in inference mode every block scales the
    map up and the third non-local block overflows float32. The run stops before
    any checkpoint (exit 3) and says that, naming the layer, not that the weights
    are too large."""
    from anet_tf.cli import main

    root = veri776_release.make(tmp_path / "VeRi")
    args = _tiny_strong_fit(
        "veri776_strong", root, tmp_path / "run", "model.base_width=64",
        "train.warmup_iters=2", "train.freeze_iters=0", "train.stage2.epochs=0",
    )
    assert main(args) == 3
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("anet-tf fit: stopped: ")
    assert "inference-mode probe batch (first at layer 'backbone/nl" in err
    assert "moving statistics" in err and "too large" not in err
    assert not os.path.exists(tmp_path / "run" / "checkpoints" / "epoch-0001")
