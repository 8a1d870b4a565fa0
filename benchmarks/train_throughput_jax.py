"""Images/s and model FLOPs utilisation of the ANet train step on the JAX backend.

The JAX sibling of ``benchmarks/train_throughput.py``: the same network
(``build_model_from_config``), the same loss terms (``anet_tf.losses.compute_losses``)
and the same stages, trained by the stateless JAX step of
:mod:`anet_tf.training.jax_step` on in-memory random batches (a valid P x K identity
layout with attribute labels and patterns, as the losses need), so the input
pipeline is out of the measurement. For float32 and bfloat16 (Keras'
``mixed_bfloat16`` policy) it times the baseline, ANet stage 1 and ANet stage 2
(backbone and f head frozen, continuing from the stage-1 state), and reports the
median images/s over the timed steps after warm-up, with min and max, the ratio to
the baseline of the same precision measured in the same run, and the time of the
first call (compilation included).

Model FLOPs utilisation = images/s x training FLOPs per image / peak FLOP/s
(``--peak-tflops``, the device's dense peak for the precision; the float32 rows may
get their own with ``--peak-tflops-float32``: on recent NVIDIA GPUs JAX's default
precision may run float32 convolutions and matmuls as TF32, so pick that peak
knowingly). Training FLOPs per image come from
the forward counts of ``anet_tf/model/summary.py`` (what ``anet-tf summary``
prints: Conv2D and Dense, 2 FLOPs per multiply-add) times 3 (forward, and the
backward's two products per layer); in stage 2 the frozen backbone and f head
count once, since nothing below them needs a gradient. The script prints the
counts it used.

Nothing on this path imports TensorFlow, so it runs on a machine with only JAX and
Keras installed: ``pip install -e . "jax[cuda12]"`` (the package's own requirements
hold no TensorFlow; its ``cpu`` / ``gpu`` extras do)::

    python benchmarks/train_throughput_jax.py                        # synthetic config
    python benchmarks/train_throughput_jax.py --paper --batch 64 --peak-tflops 989
    python benchmarks/train_throughput_jax.py --backbone resnet18_ibn_a --base-width 8 \\
        --image-size 32 --batch 8 --steps 2 --warmup 1                # tiny shapes
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

from machine import machine_info  # noqa: E402

PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16"}

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--paper", action="store_true", help="ResNet-50-IBN-a at 256x256 (anet_tf/configs/veri776.yaml)")
    parser.add_argument("--config", default=None, help="any config (default: synthetic)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (a multiple of data.num_instances)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first compiles)")
    parser.add_argument("--precisions", default="float32,bfloat16", help=f"comma-separated, of {', '.join(PRECISIONS)}")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense peak TFLOP/s, for the MFU column")
    parser.add_argument("--peak-tflops-float32", type=float, default=None, help="peak for the float32 rows (default: --peak-tflops)")
    parser.add_argument("--backbone", default=None, help="model.backbone (e.g. resnet18_ibn_a for a tiny run)")
    parser.add_argument("--base-width", type=int, default=None, help="model.base_width")
    parser.add_argument("--image-size", type=int, nargs="+", default=None, metavar="PX", help="data.image_size: one side, or H W")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other config override (repeatable), e.g. model.joint_module.width=512")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    unknown = [p for p in args.precisions.split(",") if p not in PRECISIONS]
    if unknown:
        parser.error(f"--precisions: unknown {unknown}; choose from {', '.join(PRECISIONS)}")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    if args.image_size is not None and len(args.image_size) not in (1, 2):
        parser.error("--image-size takes one side or H W")
    return args


def load_configs(args):
    """(the ANet config, the same as the baseline) with the command line's
    overrides; refuses the trainer options the JAX step does not implement."""
    from anet_tf.config import ConfigError
    from anet_tf.config import load_config

    name = "veri776" if args.paper else args.config
    overrides = []
    if args.batch:
        overrides.append(f"data.batch_size={args.batch}")
    if args.backbone:
        overrides.append(f"model.backbone={args.backbone}")
    if args.base_width:
        overrides.append(f"model.base_width={args.base_width}")
    if args.image_size:
        h, w = args.image_size * 2 if len(args.image_size) == 1 else args.image_size
        overrides.append(f"data.image_size=[{h}, {w}]")
    overrides += getattr(args, "set", None) or []
    try:
        cfg = load_config(name, overrides)
    except ConfigError as err:
        raise SystemExit(f"train_throughput_jax.py: error: {err}") from None
    t = cfg.train
    unsupported = {
        "train.freeze_iters": t.freeze_iters != 0,
        "train.bias_lr_factor": t.bias_lr_factor != 1.0,
        "train.weight_decay_norm": t.weight_decay_mode == "coupled" and t.weight_decay_norm is not None,
        "train.weight_decay_bias": t.weight_decay_mode == "coupled" and t.weight_decay_bias is not None,
    }
    refused = [key for key, bad in unsupported.items() if bad]
    if refused:
        raise SystemExit(f"the JAX train step does not implement {', '.join(refused)} (set in {cfg.source})")
    baseline = load_config(name, overrides + ["model.variant=baseline", "eval.feature=f"])
    return cfg, baseline


def num_classes(cfg) -> list[int]:
    """Classes of each attribute of the random labels: 10, 9, ... (colour and type
    get 10 and 9, as in train_throughput.py)."""
    return [max(10 - i, 2) for i in range(len(cfg.data.attributes))]


def random_batch(cfg, classes: list[int], seed: int = 0):
    """(images, targets) of one batch: P identities x K images, each identity with
    one label per attribute and the pattern (combination) of its labels."""
    import numpy as np

    batch, k = cfg.data.batch_size, cfg.data.num_instances
    h, w = cfg.data.image_size
    rng = np.random.default_rng(seed)
    pids = np.repeat(np.arange(batch // k), k).astype(np.int32)
    attrs = np.stack([pids % m for m in classes], 1) if classes else np.zeros((batch, 0))
    pattern = np.zeros(batch, np.int64)
    for column, m in zip(attrs.T, classes, strict=True):
        pattern = pattern * m + column
    targets = {
        "pid": pids,
        "attributes": attrs.astype(np.int32),
        "pattern": pattern.astype(np.int32) if classes else np.full(batch, -1, np.int32),
    }
    images = rng.standard_normal((batch, h, w, 3)).astype(np.float32)
    return images, targets


def flops_per_image(net) -> dict[str, float]:
    """FLOPs per image from the forward multiply-adds of
    ``anet_tf.model.summary.layer_macs`` (the counts of ``anet-tf summary``):
    ``forward``, ``frozen_forward`` (the part stage 2 freezes), and the training
    FLOPs of each stage: 3 x forward in stage 1; in stage 2 the frozen part's
    forward once and the rest 3 x."""
    import keras

    from anet_tf.model.summary import layer_macs
    from anet_tf.training.stages import frozen_in_stage2

    # stage 2's frozen layers: their forward counts once (nothing below needs a gradient)
    held = {id(layer) for layer in frozen_in_stage2(net)}
    frozen = rest = 0
    for layer in net.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if id(layer) in held:
            frozen += layer_macs(layer)
        else:
            rest += layer_macs(layer)
    return {
        "forward": 2.0 * (frozen + rest),
        "frozen_forward": 2.0 * frozen,
        "train_stage1": 2.0 * 3 * (frozen + rest),
        "train_stage2": 2.0 * (frozen + 3 * rest),
    }


def build(cfg, precision: str):
    """(network, optimizer, attribute names, training FLOPs per image by stage)
    of ``cfg`` under the precision's Keras dtype policy."""
    import keras

    from anet_tf.model.anet import build_model_from_config
    from anet_tf.training.optimizers import make_optimizer

    names = list(cfg.data.attributes) if cfg.model.variant != "baseline" else []
    num_ids = max(cfg.data.batch_size // cfg.data.num_instances, 2) * 4
    keras.mixed_precision.set_global_policy(PRECISIONS[precision])
    try:
        net = build_model_from_config(cfg, num_ids, num_classes(cfg), load_pretrained=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return net, make_optimizer(cfg.train), names, flops_per_image(net)


def run_stage(net, optimizer, names, cfg, state, batch, stage: int, steps: int, warmup: int):
    """Time ``steps`` steps of ``stage`` after ``warmup``; returns (row, state).

    The step is compiled ahead of the first call (``lower(...).compile()``), so
    the row also holds the compile time (``compile_s``, inside ``first_step_s``),
    XLA's buffer sizes of the compiled step (``xla_memory``) and the device
    allocator's statistics after the timed steps (``device_memory``: its
    ``peak_bytes_in_use`` is the process's peak so far; None where the platform
    keeps none, as on the CPU)."""
    import jax

    from anet_tf.losses import loss_kwargs_from_config
    from anet_tf.training.jax_step import make_train_step

    coupled = cfg.train.weight_decay if cfg.train.weight_decay_mode == "coupled" else 0.0
    step = make_train_step(
        net,
        attribute_names=names,
        variant=cfg.model.variant,
        loss_kwargs=loss_kwargs_from_config(cfg.loss, cfg.model.head),
        optimizer=optimizer,
        stage=stage,
        weight_decay=coupled,
    )
    images, targets = batch

    t0 = time.perf_counter()
    compiled = step.lower(*state, images, targets).compile()
    compile_s = time.perf_counter() - t0

    def one_step(state):
        terms, *state = compiled(*state, images, targets)
        jax.block_until_ready((terms, state))
        return terms, state

    terms, state = one_step(state)
    first = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        terms, state = one_step(state)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        terms, state = one_step(state)
        times.append(time.perf_counter() - t0)
    rates = [cfg.data.batch_size / t for t in times]
    row = {
        "images_per_s_median": statistics.median(rates),
        "images_per_s_min": min(rates),
        "images_per_s_max": max(rates),
        "step_s_median": statistics.median(times),
        "first_step_s": first,
        "compile_s": compile_s,
        "loss_total": float(terms["total"]),
        "xla_memory": compiled_memory(compiled),
        "device_memory": device_memory(),
    }
    return row, state


def compiled_memory(compiled) -> dict | None:
    """XLA's buffer sizes of a compiled step (``memory_analysis()``) in bytes:
    arguments, outputs, aliased (donated) and temporaries; None where the backend
    gives none."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    names = ("argument", "output", "alias", "temp", "generated_code")
    return {
        f"{name}_bytes": int(getattr(analysis, f"{name}_size_in_bytes"))
        for name in names
        if hasattr(analysis, f"{name}_size_in_bytes")
    }


def device_memory() -> dict | None:
    """The first device's allocator statistics (``bytes_in_use``,
    ``peak_bytes_in_use``, ``bytes_limit``), None where it keeps none (CPU)."""
    import jax

    stats = jax.local_devices()[0].memory_stats()
    if not stats:
        return None
    keys = ("bytes_in_use", "peak_bytes_in_use", "bytes_limit")
    return {k: int(stats[k]) for k in keys if k in stats}


def measure(cfg, precision: str, stages, steps: int, warmup: int, on_row=None) -> list[dict]:
    """Rows of one model and precision, the stages in order, each continuing from
    the state the previous one left (as a run moves from stage 1 to stage 2).
    ``on_row(row)``, if given, is called with each row as soon as it is measured."""
    import jax

    from anet_tf.training.jax_step import train_state

    net, optimizer, names, flops = build(cfg, precision)
    images, targets = random_batch(cfg, num_classes(cfg)[: len(names)])
    batch = (jax.device_put(images), {k: jax.device_put(v) for k, v in targets.items()})
    state = train_state(net, optimizer)
    rows = []
    for stage in stages:
        row, state = run_stage(net, optimizer, names, cfg, state, batch, stage, steps, warmup)
        rows.append({
            "model": cfg.model.variant, "stage": stage, "precision": precision,
            "forward_flops_per_image": flops["forward"],
            "frozen_forward_flops_per_image": flops["frozen_forward"],
            "train_flops_per_image": flops[f"train_stage{stage}"], **row,
        })
        if on_row is not None:
            on_row(rows[-1])
    return rows


def add_ratios_and_mfu(rows: list[dict], peak: dict[str, float | None]) -> None:
    """Ratio to the baseline of the same precision, achieved TFLOP/s and MFU."""
    base = {r["precision"]: r["images_per_s_median"] for r in rows if r["model"] == "baseline"}
    for r in rows:
        r["ratio_to_baseline"] = r["images_per_s_median"] / base[r["precision"]]
        r["achieved_tflops"] = r["images_per_s_median"] * r["train_flops_per_image"] / 1e12
        p = peak.get(r["precision"])
        r["peak_tflops"] = p
        r["mfu"] = r["achieved_tflops"] / p if p else None


def device_info() -> dict:
    import jax

    device = jax.devices()[0]
    return {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "jaxlib": importlib.metadata.version("jaxlib"),
    }


def print_report(rows: list[dict]) -> None:
    print(
        "FLOPs per image used: forward = Conv2D + Dense, 2 per multiply-add (the counts of "
        "`anet-tf summary`); training = 3 x forward; stage 2: the frozen backbone and f head "
        "forward only"
    )
    seen = set()
    for r in rows:
        if (r["model"], r["stage"]) in seen:
            continue
        seen.add((r["model"], r["stage"]))
        print(
            f"  {r['model']} stage {r['stage']}: forward {r['forward_flops_per_image'] / 1e9:.3f} GFLOPs "
            f"(backbone + f head {r['frozen_forward_flops_per_image'] / 1e9:.3f}), "
            f"training {r['train_flops_per_image'] / 1e9:.3f} GFLOPs"
        )
    print()
    print(
        "| model | stage | precision | images/s median (min-max) | ratio to baseline | first step s (compiles) "
        "| train GFLOPs/image | TFLOP/s | MFU |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mfu = f"{r['mfu']:.1%} of {r['peak_tflops']:g}" if r["mfu"] is not None else "-"
        print(
            f"| {r['model']} | {r['stage']} | {r['precision']} | {r['images_per_s_median']:.1f} "
            f"({r['images_per_s_min']:.1f}-{r['images_per_s_max']:.1f}) | {r['ratio_to_baseline']:.2f} "
            f"| {r['first_step_s']:.1f} | {r['train_flops_per_image'] / 1e9:.3f} "
            f"| {r['achieved_tflops']:.3f} | {mfu} |"
        )


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit(f"this benchmark runs on the JAX backend; KERAS_BACKEND={keras.backend.backend()}")
    cfg, baseline_cfg = load_configs(args)
    precisions = args.precisions.split(",")
    peak = {p: args.peak_tflops for p in precisions}
    if args.peak_tflops_float32 is not None:
        peak["float32"] = args.peak_tflops_float32
    info, device = machine_info(gpus=False), device_info()
    print(f"machine: {json.dumps(info)}")
    print(f"device: {json.dumps(device)}")
    print(
        f"config: {cfg.source} backbone={cfg.model.backbone} width={cfg.model.base_width} "
        f"input={cfg.data.image_size} batch={cfg.data.batch_size} "
        f"(P={cfg.data.batch_size // cfg.data.num_instances} x K={cfg.data.num_instances}) "
        f"optimizer={cfg.train.optimizer} steps={args.steps} warmup={args.warmup}"
    )
    rows = []
    for precision in precisions:
        rows += measure(baseline_cfg, precision, (1,), args.steps, args.warmup)
        # The baseline has no second stage (stage 2 would freeze all it has).
        stages = (1,) if cfg.model.variant == "baseline" else (1, 2)
        rows += measure(cfg, precision, stages, args.steps, args.warmup)
    add_ratios_and_mfu(rows, peak)
    print_report(rows)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({
                "machine": info, "device": device, "config": cfg.source, "batch": cfg.data.batch_size,
                "image_size": list(cfg.data.image_size), "rows": rows,
                "tensorflow_imported": "tensorflow" in sys.modules,
            }, fh, indent=2)
    bad = [r for r in rows if not math.isfinite(r["loss_total"])]
    if bad:
        print(f"non-finite loss in: {[(r['model'], r['stage'], r['precision']) for r in bad]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
