"""What the paper's batch 512 needs: replicas per GPU model, and whether gradient
accumulation or rematerialisation is needed.

The memory of a train step is close to a line in the batch: ``fixed`` bytes that do
not grow with it (weights, their gradients, optimizer slots, the batch-independent
workspace) and ``per_image`` bytes each image adds (activations kept for the
backward pass and their gradients). From that line, for each GPU (``GPUS``: nominal
memory, of which ``--usable`` is taken as what a step may use) this script gives the
largest per-replica batch that fits (a multiple of K = 4 images per identity), the
fewest data-parallel replicas that hold the paper's 512 (each replica keeps
``fixed``, the images split evenly over whole identities), and on the paper's 8 GPUs
(64 images each) whether that fits or how many accumulation micro-batches it needs.

Where the line comes from (``--source``):

- ``gpu``: a ``gpu_run.json`` of ``benchmarks/gpu_run.py`` (``--gpu-json``): the
  line through the device allocator's peak (``peak_bytes_in_use``) of ANet stage 1
  at its two batch sizes, per precision and Joint Module width measured there;
- ``xla-cpu``: XLA's compiled memory analysis of the same JAX step compiled for the
  CPU (arguments + outputs - donated + temporaries, ``compiled.memory_analysis()``)
  at two small batches, each in a fresh process; nothing runs, so it fits on a
  small machine. An estimate of what XLA plans on a CPU, not a GPU measurement:
  the GPU compiler fuses and lays out buffers differently, and cuDNN's workspace is
  not in it;
- ``line``: ``--per-image-gb`` and ``--fixed-gb`` given by hand.

    python benchmarks/batch512.py --source gpu --gpu-json OUT/gpu_run.json
    python benchmarks/batch512.py --source xla-cpu --batches 8,16 --precisions bfloat16,float32 \\
        --widths 2048,512 --json-out batch512.json
    python benchmarks/batch512.py --source line --per-image-gb 0.164 --fixed-gb 3.3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))

# Nominal memory of each GPU (vendor figures, 1 GB = 1e9 bytes).
GPUS = {"H200 141 GB": 141e9, "H100 80 GB": 80e9, "A100 80 GB": 80e9, "A100 40 GB": 40e9}
PAPER_BATCH, PAPER_GPUS, K = 512, 8, 4
FULL_WIDTH = 2048  # ResNet-50's output channels: the paper's Joint Module width


def fit(line: dict, capacity: float, usable: float = 0.9, batch: int = PAPER_BATCH,
        gpus: int = PAPER_GPUS, k: int = K) -> dict:  # fmt: skip
    """What ``batch`` needs on GPUs of ``capacity`` bytes, ``usable`` of which a
    step may use, under ``line`` (``bytes_per_image``, ``fixed_bytes``).

    Returns ``max_batch`` (the largest per-replica batch that fits, a multiple of
    ``k``; 0 when not even ``k`` images do), ``replicas`` (the fewest replicas that
    hold ``batch`` with no accumulation, each an equal share of whole identities;
    None when no split fits), and for ``gpus`` GPUs of ``batch / gpus`` images each:
    ``fits_on_paper_gpus`` and ``accumulation_steps`` (micro-batches per step,
    1 when it fits; None when not even ``k`` images fit)."""
    per_image, fixed = line["bytes_per_image"], line["fixed_bytes"]
    if per_image <= 0:
        raise ValueError(f"bytes per image must be positive, got {per_image}")
    room = capacity * usable - fixed
    max_batch = max(int(room / per_image) // k * k, 0) if room > 0 else 0
    ids = batch // k
    replicas = next((n for n in range(1, ids + 1) if ids % n == 0 and batch // n <= max_batch), None)
    share = batch // gpus
    if max_batch == 0:
        steps = None
    else:
        # micro-batches of whole identities that divide the share evenly
        steps = next(a for a in range(1, share // k + 1) if (share // k) % a == 0 and share // a <= max_batch)
    return {
        "max_batch": max_batch,
        "replicas": replicas,
        "gb_for_batch_on_one": (fixed + per_image * batch) / 1e9,
        "fits_on_paper_gpus": max_batch >= share,
        "accumulation_steps": steps,
    }


def needs(result: dict) -> str:
    """One sentence: what the paper's 8 x 64 layout needs on this GPU."""
    if result["fits_on_paper_gpus"]:
        return "fits: no accumulation or rematerialisation needed"
    if result["accumulation_steps"] is None:
        return "does not fit even 4 images: rematerialisation (or a larger GPU) needed"
    return (
        f"needs {result['accumulation_steps']} accumulation micro-batches per step, or "
        "rematerialisation (accumulation mines triplets and normalises within each micro-batch)"
    )


def lines_from_gpu_json(path: str) -> dict:
    """{(model, precision): line} of ANet stage 1 in a gpu_run.json."""
    try:
        with open(path) as fh:
            report = json.load(fh)
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"batch512.py: --gpu-json {path}: {err}") from None
    if "memory_per_image" not in report:
        raise SystemExit(f"batch512.py: --gpu-json {path}: no memory_per_image field (not a gpu_run.py report?)")
    out = {}
    for key, v in report["memory_per_image"].items():
        model, precision = key.rsplit("-", 1)
        if model in ("anet", "anet_w512") and v.get("device_peak"):
            width = FULL_WIDTH if model == "anet" else 512
            out[(width, precision)] = dict(v["device_peak"], source=f"GPU allocator peak ({report.get('nvidia_smi')})")
    if not out:
        raise SystemExit(f"batch512.py: --gpu-json {path}: no ANet stage-1 line at two batch sizes in memory_per_image")
    return out


def xla_child(batch: int, width: int, precision: str) -> None:
    """Compile ANet's stage-1 step at paper size for the CPU and print XLA's
    buffer sizes (one JSON line)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    sys.path.insert(0, os.path.dirname(HERE))
    import jax
    import train_throughput_jax as tj

    from anet_tf.losses import loss_kwargs_from_config
    from anet_tf.training.jax_step import make_train_step
    from anet_tf.training.jax_step import train_state

    ns = argparse.Namespace(
        paper=True, config=None, batch=batch, backbone=None, base_width=None, image_size=None,
        set=[f"model.joint_module.width={width}"],
    )  # fmt: skip
    cfg, _ = tj.load_configs(ns)
    net, optimizer, names, _ = tj.build(cfg, precision)
    images, targets = tj.random_batch(cfg, tj.num_classes(cfg)[: len(names)])
    state = train_state(net, optimizer)
    coupled = cfg.train.weight_decay if cfg.train.weight_decay_mode == "coupled" else 0.0
    step = make_train_step(
        net, attribute_names=names, variant=cfg.model.variant, optimizer=optimizer, stage=1,
        loss_kwargs=loss_kwargs_from_config(cfg.loss, cfg.model.head), weight_decay=coupled,
    )  # fmt: skip
    compiled = step.lower(*state, images, targets).compile()
    print(json.dumps({"batch": batch, "xla": tj.compiled_memory(compiled), "jax": jax.__version__}))


def lines_from_xla_cpu(batches, widths, precisions) -> dict:
    sys.path.insert(0, os.path.dirname(HERE))
    from gpu_run import memory_line
    from gpu_run import xla_step_bytes

    out = {}
    env = dict(os.environ, JAX_PLATFORMS="cpu", KERAS_BACKEND="jax")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    for width in widths:
        for precision in precisions:
            points = []
            for batch in batches:
                cmd = [sys.executable, HERE, "--child", str(batch), str(width), precision]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"batch512.py: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
                child = json.loads(proc.stdout.strip().splitlines()[-1])
                points.append((batch, xla_step_bytes(child["xla"])))
                print(f"  width {width} {precision} batch {batch}: XLA {points[-1][1] / 1e9:.3f} GB {child['xla']}", flush=True)
            line = memory_line(points)
            out[(width, precision)] = dict(line, source=f"XLA CPU compile, jax {child['jax']} (estimate, not a GPU measurement)")
    return out


def report(lines: dict, usable: float) -> dict:
    rows = []
    for (width, precision), line in sorted(lines.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        for gpu, capacity in GPUS.items():
            r = fit(line, capacity, usable)
            rows.append({
                "joint_module_width": width, "precision": precision, "gpu": gpu,
                "gb_per_image": line["bytes_per_image"] / 1e9, "fixed_gb": line["fixed_bytes"] / 1e9,
                "source": line["source"], **r, "paper_layout": needs(r),
            })  # fmt: skip
    return {"usable_fraction": usable, "paper_batch": PAPER_BATCH, "paper_gpus": PAPER_GPUS, "rows": rows}


def print_report(result: dict) -> None:
    print(
        f"ANet stage 1, ResNet-50-IBN-a at 256x256, batch {PAPER_BATCH}; {result['usable_fraction']:.0%} of each "
        f"GPU's nominal memory usable; paper layout {PAPER_GPUS} GPUs x {PAPER_BATCH // PAPER_GPUS}"
    )
    sources = sorted({r["source"] for r in result["rows"]})
    print("memory line from: " + "; ".join(sources))
    print()
    print("| Joint Module width | precision | GB per image | fixed GB | batch 512 on one GPU, GB | GPU "
          "| max batch per GPU | GPUs for 512 | 8 x 64 (paper) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        print(
            f"| {r['joint_module_width']} | {r['precision']} | {r['gb_per_image']:.4f} | {r['fixed_gb']:.2f} "
            f"| {r['gb_for_batch_on_one']:.1f} | {r['gpu']} | {r['max_batch']} | {r['replicas'] or '-'} "
            f"| {r['paper_layout']} |"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=("gpu", "xla-cpu", "line"), required=False)
    parser.add_argument("--gpu-json", default=None, help="gpu_run.json (--source gpu)")
    parser.add_argument("--batches", default="8,16", help="two batch sizes, multiples of 4 with 2+ identities (xla-cpu)")
    parser.add_argument("--widths", default="2048,512", help="Joint Module widths (xla-cpu)")
    parser.add_argument("--precisions", default="bfloat16,float32", help="(xla-cpu)")
    parser.add_argument("--per-image-gb", type=float, default=None, help="(line)")
    parser.add_argument("--fixed-gb", type=float, default=None, help="(line)")
    parser.add_argument("--width", type=int, default=FULL_WIDTH, help="Joint Module width of the given line (line)")
    parser.add_argument("--precision", default="bfloat16", help="precision of the given line (line)")
    parser.add_argument("--usable", type=float, default=0.9, help="fraction of a GPU's memory a step may use")
    parser.add_argument("--json-out", default=None)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        batch, width, precision = args.child
        xla_child(int(batch), int(width), precision)
        return 0
    if not 0 < args.usable <= 1:
        parser.error(f"--usable must be in (0, 1], got {args.usable}")
    if args.source == "gpu":
        if not args.gpu_json:
            parser.error("--source gpu needs --gpu-json")
        lines = lines_from_gpu_json(args.gpu_json)
    elif args.source == "xla-cpu":
        batches = [int(b) for b in args.batches.split(",")]
        if len(set(batches)) < 2 or any(b % K or b < 2 * K for b in batches):
            parser.error(f"--batches: two or more sizes, multiples of {K} of at least {2 * K}; got {args.batches}")
        lines = lines_from_xla_cpu(batches, [int(w) for w in args.widths.split(",")], args.precisions.split(","))
    elif args.source == "line":
        if args.per_image_gb is None or args.fixed_gb is None:
            parser.error("--source line needs --per-image-gb and --fixed-gb")
        if args.per_image_gb <= 0:
            parser.error(f"--per-image-gb must be positive, got {args.per_image_gb}")
        lines = {(args.width, args.precision): {
            "bytes_per_image": args.per_image_gb * 1e9, "fixed_bytes": args.fixed_gb * 1e9, "source": "given by hand",
        }}  # fmt: skip
    else:
        parser.error("--source is required (gpu, xla-cpu or line)")
    result = report(lines, args.usable)
    print_report(result)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
