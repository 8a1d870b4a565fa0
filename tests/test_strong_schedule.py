"""FastReID's schedule parts: delayed cosine annealing and linear warm-up in
iterations, as functions and as the callback ``fit`` uses."""

from __future__ import annotations

import math
import types

import keras
import pytest

from anet_tf.config import ConfigError
from anet_tf.config import load_config
from anet_tf.training.callbacks import LrSchedule
from anet_tf.training.trainer import cosine_lr_at_epoch
from anet_tf.training.trainer import warmup_multiplier


def _torch_style_cosine(base, eta_min, t_max, steps):
    """PyTorch's CosineAnnealingLR recurrence (its step formula, not the closed
    form), stepped ``steps`` times."""
    lr, out = base, [base]
    for t in range(1, steps + 1):
        lr = eta_min + (lr - eta_min) * (1 + math.cos(math.pi * t / t_max)) / (
            1 + math.cos(math.pi * (t - 1) / t_max)
        )
        out.append(lr)
    return out


def test_cosine_is_flat_for_the_delay_then_follows_pytorchs_recurrence():
    base, eta, total, delay = 0.01, 7.7e-5, 60, 30
    lrs = [cosine_lr_at_epoch(e, base, total, delay, eta) for e in range(total)]
    assert lrs[:delay] == [base] * delay
    want = _torch_style_cosine(base, eta, total - delay, total - delay - 1)
    assert lrs[delay:] == pytest.approx(want, rel=1e-9)
    assert lrs[-1] > eta and lrs == sorted(lrs, reverse=True)


def test_warmup_rises_linearly_from_the_factor_to_one():
    got = [warmup_multiplier(i, 4, 0.1) for i in range(6)]
    assert got == pytest.approx([0.1, 0.325, 0.55, 0.775, 1.0, 1.0])


def _drive(cb, epochs, steps):
    optimizer = keras.optimizers.SGD(learning_rate=1.0)
    cb.set_model(types.SimpleNamespace(optimizer=optimizer))
    seen = []
    for epoch in epochs:
        cb.on_epoch_begin(epoch)
        for batch in range(steps):
            cb.on_train_batch_begin(batch)
            seen.append(float(optimizer.learning_rate.numpy()))
    return seen


def test_callback_warms_up_per_step_on_top_of_the_epoch_schedule():
    kwargs = dict(
        stage_offset=0, base_lr=0.01, milestones=[], gamma=0.1, schedule="cosine",
        total_epochs=6, delay_epochs=2, lr_min=0.001, warmup_iters=5, warmup_factor=0.1,
        steps_per_epoch=3,
    )
    seen = _drive(LrSchedule(**kwargs), range(4), 3)
    want = []
    for epoch in range(4):
        for batch in range(3):
            it = epoch * 3 + batch
            want.append(
                cosine_lr_at_epoch(epoch, 0.01, 6, 2, 0.001) * warmup_multiplier(it, 5, 0.1)
            )
    assert seen == pytest.approx(want, rel=1e-6)
    # A run resumed at epoch 1 sets the same lrs as the uninterrupted run there.
    resumed = _drive(LrSchedule(**kwargs), range(1, 4), 3)
    assert resumed == pytest.approx(want[3:], rel=1e-6)


def test_stage_lr_still_wins_and_multistep_is_unchanged_without_warmup():
    cb = LrSchedule(stage_offset=0, base_lr=6e-4, milestones=[1], gamma=0.1)
    assert _drive(cb, range(2), 2) == pytest.approx([6e-4, 6e-4, 6e-5, 6e-5])
    cb = LrSchedule(stage_offset=4, base_lr=6e-4, milestones=[1], gamma=0.1,
                    stage_lr=1e-5, schedule="cosine", total_epochs=8)
    assert _drive(cb, range(2), 1) == pytest.approx([1e-5, 1e-5])


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lr_schedule=step", "train.lr_schedule"),
        ("train.lr_min=1", "train.lr_min"),
        ("train.warmup_iters=-1", "train.warmup_iters"),
        ("train.warmup_factor=0", "train.warmup_factor"),
    ],
)
def test_bad_schedule_settings_are_named(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config("synthetic", [override])


def test_cosine_delay_must_leave_epochs_to_anneal():
    with pytest.raises(ConfigError, match="train.lr_delay_epochs"):
        load_config(
            "synthetic",
            ["train.lr_schedule=cosine", "train.stage1.epochs=3", "train.stage2.epochs=1",
             "train.lr_delay_epochs=4"],
        )
