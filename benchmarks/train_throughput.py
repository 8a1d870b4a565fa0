"""Images/s of the full ANet train step (stage 1 and stage 2) and of the baseline.

Runs the project's own ``ANetTrainer.train_step`` (every loss term, gradients,
optimizer update) on in-memory batches, so the input pipeline is out of the
measurement (``benchmarks/input_pipeline.py`` measures that). Reports the median over
timed steps after warm-up, with min and max, and the ratio of each configuration to
the baseline measured in the same run.

    python benchmarks/train_throughput.py                       # CPU default config
    python benchmarks/train_throughput.py --paper --batch 16    # R50-IBN-a at 256x256
    python benchmarks/train_throughput.py --paper --batch 64 --gpu-matrix   # GPU: AMP/XLA on/off
    python benchmarks/train_throughput.py --paper --batch 16 --strong   # + FastReID strong switches
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

from machine import machine_info  # noqa: E402
from machine import use_fast_allocator  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def machine() -> dict:
    return machine_info(gpus=True)


def measure(cfg, *, stage: int, batch: int, steps: int, warmup: int, mixed: bool, xla: bool) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from anet_tf.training.fit import build_trainer
    from anet_tf.training.optimizers import make_optimizer

    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    keras.utils.set_random_seed(0)
    num_ids = max(batch // cfg.data.num_instances, 2) * 4
    num_classes = [10, 9][: len(cfg.data.attributes)]
    trainer = build_trainer(cfg, num_ids, num_classes)
    optimizer = make_optimizer(cfg.train, mixed)
    optimizer.build(trainer.net.trainable_variables)
    trainer.compile(optimizer=optimizer)
    trainer.set_stage(stage)
    trainer.compile(optimizer=optimizer)

    h, w = cfg.data.image_size
    rng = np.random.default_rng(0)
    k = cfg.data.num_instances
    pids = np.repeat(np.arange(batch // k), k).astype(np.int32)
    attrs = np.stack([pids % m for m in num_classes], 1).astype(np.int32) if num_classes else np.zeros((batch, 0), np.int32)
    pattern = (attrs[:, 0] * num_classes[1] + attrs[:, 1]).astype(np.int32) if len(num_classes) == 2 else np.full(batch, -1, np.int32)
    images = tf.constant(rng.standard_normal((batch, h, w, 3)).astype(np.float32))
    targets = {
        "pid": tf.constant(pids),
        "camid": tf.zeros(batch, tf.int32),
        "attributes": tf.constant(attrs),
        "pattern": tf.constant(pattern),
    }
    step = tf.function(trainer.train_step, jit_compile=xla)
    for _ in range(warmup):
        logs = step((images, targets))
    float(logs["total"])
    result = timed(lambda: float(step((images, targets))["total"]), batch, steps)
    keras.mixed_precision.set_global_policy("float32")
    return result


def timed(run_step, batch: int, steps: int) -> dict:
    """Median/min/max images/s over ``steps`` calls of ``run_step`` (which must wait
    for its step to finish), with the CPU cores kept busy ((user+system)/wall) and
    the minor page faults per step over the same steps."""
    times = []
    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        run_step()
        times.append(time.perf_counter() - t0)
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - w0
    user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    rates = [batch / t for t in times]
    return {
        "images_per_s_median": statistics.median(rates),
        "images_per_s_min": min(rates),
        "images_per_s_max": max(rates),
        "step_s_median": statistics.median(times),
        "cores_busy": (user + system) / wall,
        "cpu_s_per_image": (user + system) / (steps * batch),
        "system_share": system / max(user + system, 1e-9),
        "minor_faults_per_step": (r1.ru_minflt - r0.ru_minflt) / steps,
    }


def anchor_resnet50(image_size, last_stride: int):
    """``keras.applications.ResNet50(weights=None)`` without its top, average-pooled,
    at ``image_size``, with the last stage's stride set to ``last_stride`` (1 in
    the paper): the stock Keras network the benchmarks compare the backbone with."""
    import keras

    h, w = image_size
    body = keras.applications.ResNet50(
        weights=None, include_top=False, input_shape=(h, w, 3), pooling="avg"
    )
    if last_stride == 1:
        # conv5_block1 downsamples in its first 1x1 conv and its projection shortcut.
        def last_stride_one(layer):
            config = layer.get_config()
            if layer.name in ("conv5_block1_1_conv", "conv5_block1_0_conv"):
                config["strides"] = (1, 1)
            return layer.__class__.from_config(config)

        body = keras.models.clone_model(body, clone_function=last_stride_one)
    return body


def measure_anchor(cfg, *, batch: int, steps: int, warmup: int, mixed: bool, xla: bool) -> dict:
    """The in-TF anchor: ``keras.applications.ResNet50(weights=None)`` with the
    config's last stride, input size and batch, a plain softmax CE head, trained by
    the same optimizer as the project's step. What a stock Keras ResNet-50 step costs
    on this machine, so the backbone's own cost can be judged by a ratio."""
    import keras
    import numpy as np
    import tensorflow as tf

    from anet_tf.training.optimizers import make_optimizer

    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    keras.utils.set_random_seed(0)
    h, w = cfg.data.image_size
    body = anchor_resnet50((h, w), cfg.model.last_stride)
    num_ids = max(batch // cfg.data.num_instances, 2) * 4
    logits = keras.layers.Dense(num_ids, dtype="float32")(body.output)
    model = keras.Model(body.input, logits)
    optimizer = make_optimizer(cfg.train, mixed)
    optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.standard_normal((batch, h, w, 3)).astype(np.float32))
    labels = tf.constant(np.repeat(np.arange(batch // cfg.data.num_instances), cfg.data.num_instances).astype(np.int32))

    def train_step(x, y):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, out, from_logits=True))
            scaled = optimizer.scale_loss(loss) if mixed else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    step = tf.function(train_step, jit_compile=xla)
    for _ in range(warmup):
        float(step(images, labels))
    result = timed(lambda: float(step(images, labels)), batch, steps)
    keras.mixed_precision.set_global_policy("float32")
    return result


# The switches of anet_tf/configs/fastreid_sbs_base.yaml that change what a train step
# computes (the schedule, warm-up and augmentation do not).
STRONG_OVERRIDES = [
    "model.stem=fastreid",
    "model.non_local=true",
    "model.non_local_inter=1",
    "model.s_f=0",
    "model.s_j=0",
    "model.head.pooling=gem",
    "model.head.neck=bnneck",
    "model.head.classifier=circle",
    "loss.soft_margin=true",
    "train.optimizer=sgd",
    "train.nesterov=false",
    "train.weight_decay_mode=coupled",
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper", action="store_true", help="ResNet-50-IBN-a at 256x256 (anet_tf/configs/veri776.yaml)")
    parser.add_argument("--config", default=None, help="any config (default: synthetic)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (multiple of 4)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--gpu-matrix", action="store_true", help="also mixed precision and XLA on/off")
    parser.add_argument("--joint-width", type=int, default=None, help="model.joint_module.width")
    parser.add_argument(
        "--anchor", action=argparse.BooleanOptionalAction, default=None,
        help="also time keras.applications.ResNet50 (default: on for ResNet-50 backbones)",
    )
    parser.add_argument(
        "--strong", action="store_true",
        help="also time the baseline and ANet with FastReID's strong-baseline switches "
        "(anet_tf/configs/fastreid_sbs_base.yaml: stem, non-local blocks, GeM, BNNeck, "
        "CircleSoftmax, no FC, soft-margin triplet, SGD) on the same config",
    )
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    use_fast_allocator()

    from anet_tf.config import load_config

    name = "veri776" if args.paper else args.config
    overrides = []
    if args.batch:
        overrides.append(f"data.batch_size={args.batch}")
    if args.joint_width:
        overrides.append(f"model.joint_module.width={args.joint_width}")
    cfg = load_config(name, overrides)
    baseline_cfg = load_config(name, overrides + ["model.variant=baseline", "eval.feature=f"])
    strong = []
    if args.strong:
        strong = [
            (label, load_config(name, overrides + STRONG_OVERRIDES + extra))
            for label, extra in (
                ("baseline (strong)", ["model.variant=baseline", "eval.feature=f"]),
                ("anet (strong)", []),
            )
        ]
    info = machine()
    print(f"machine: {json.dumps(info)}")
    print(
        f"config: {cfg.source} backbone={cfg.model.backbone} width={cfg.model.base_width} "
        f"input={cfg.data.image_size} batch={cfg.data.batch_size} joint_width="
        f"{cfg.model.joint_module.width or 'c'} steps={args.steps} warmup={args.warmup}"
    )
    combos = [(False, False)]
    if args.gpu_matrix:
        combos += [(True, False), (False, True), (True, True)]
    anchor = args.anchor if args.anchor is not None else cfg.model.backbone.startswith("resnet50")
    rows = []
    for mixed, xla in combos:
        common = dict(batch=cfg.data.batch_size, steps=args.steps, warmup=args.warmup, mixed=mixed, xla=xla)
        if anchor:
            a = measure_anchor(cfg, **common)
        base = measure(baseline_cfg, stage=1, **common)
        if anchor:
            rows.append({"model": "keras ResNet50 (anchor)", "stage": 1, "mixed_precision": mixed, "xla": xla, **a,
                         "ratio_to_baseline": a["images_per_s_median"] / base["images_per_s_median"]})
        rows.append({"model": "baseline", "stage": 1, "mixed_precision": mixed, "xla": xla, **base, "ratio_to_baseline": 1.0})
        for stage in (1, 2):
            r = measure(cfg, stage=stage, **common)
            rows.append({
                "model": "anet", "stage": stage, "mixed_precision": mixed, "xla": xla, **r,
                "ratio_to_baseline": r["images_per_s_median"] / base["images_per_s_median"],
            })
        for label, strong_cfg in strong:
            for stage in (1, 2) if strong_cfg.model.variant == "anet" else (1,):
                r = measure(strong_cfg, stage=stage, **common)
                rows.append({
                    "model": label, "stage": stage, "mixed_precision": mixed, "xla": xla, **r,
                    "ratio_to_baseline": r["images_per_s_median"] / base["images_per_s_median"],
                })
    print()
    print(f"allocator: {info['allocator']}; cpu: {info['cpu']} ({info['vector_extensions']})")
    print(
        "| model | stage | mixed precision | XLA | images/s median (min-max) | ratio to baseline "
        "| cores busy | system share | minor faults/step |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['stage']} | {'on' if r['mixed_precision'] else 'off'} | "
            f"{'on' if r['xla'] else 'off'} | {r['images_per_s_median']:.1f} "
            f"({r['images_per_s_min']:.1f}-{r['images_per_s_max']:.1f}) | {r['ratio_to_baseline']:.2f} "
            f"| {r['cores_busy']:.2f} | {r['system_share']:.1%} | {r['minor_faults_per_step']:.0f} |"
        )
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"machine": info, "config": cfg.source, "batch": cfg.data.batch_size, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
