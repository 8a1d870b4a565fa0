"""Memory per image of the paper-size train step, and what batch 512 needs.

Runs one warm-up and one timed train step (``train_throughput.measure``: every loss
term, gradients, optimizer update) in a fresh process per (model, stage, batch,
Joint Module width, precision) and reads the process's peak resident memory. Two
batch sizes give a line: the slope is the memory each image adds (activations kept
for the backward pass, their gradients, per-image workspace), the intercept what does
not grow with the batch (weights, optimizer slots, gradients of the weights, the TF
runtime). Extrapolating the slope to the paper's batch 512 says how much device memory
the step needs and how many 80 GB GPUs hold it with data parallelism (each replica
keeps the intercept, images split evenly).

On a CPU this measures host memory, which is an upper bound of what a GPU allocator
needs for the same graph (no pinned staging, but also no cuDNN workspace), so read
the GPU counts as estimates, measured here and extrapolated.

    python benchmarks/train_memory.py                                  # paper size, fp32
    python benchmarks/train_memory.py --widths 2048,512 --batches 8,16 --mixed
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

from machine import machine_info  # noqa: E402
from machine import use_fast_allocator  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.abspath(__file__)


def child(model: str, stage: int, batch: int, width: int, mixed: bool) -> None:
    from train_throughput import measure

    from anet_tf.config import load_config

    overrides = [f"data.batch_size={batch}", f"model.joint_module.width={width}"]
    if model == "baseline":
        overrides += ["model.variant=baseline", "eval.feature=f"]
    cfg = load_config("veri776", overrides)
    measure(cfg, stage=stage, batch=batch, steps=1, warmup=1, mixed=mixed, xla=False)


def peak_rss_gb(model: str, stage: int, batch: int, width: int, mixed: bool) -> float:
    cmd = [sys.executable, HERE, "--child", model, str(stage), str(batch), str(width), str(int(mixed))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return ru.ru_maxrss / 2**20  # KiB -> GiB


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--batches", default="8,12", help="two batch sizes (multiples of data.num_instances, 4)")
    parser.add_argument("--widths", default="2048", help="model.joint_module.width values (2048 = the paper's c)")
    parser.add_argument("--mixed", action="store_true", help="also mixed_float16")
    parser.add_argument("--target-batch", type=int, default=512)
    parser.add_argument("--gpu-gb", type=float, default=80.0)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    if args.child:
        model, stage, batch, width, mixed = args.child
        child(model, int(stage), int(batch), int(width), bool(int(mixed)))
        return 0
    use_fast_allocator()
    b1, b2 = (int(b) for b in args.batches.split(","))
    info = machine_info()
    print(f"machine: {json.dumps(info)}")
    combos = [("baseline", 1, 2048)]
    for width in (int(w) for w in args.widths.split(",")):
        combos += [("anet", 1, width), ("anet", 2, width)]
    rows = []
    for mixed in (False, True) if args.mixed else (False,):
        for model, stage, width in combos:
            r1, r2 = (peak_rss_gb(model, stage, b, width, mixed) for b in (b1, b2))
            per_image = (r2 - r1) / (b2 - b1)
            fixed = r1 - per_image * b1
            need = fixed + per_image * args.target_batch
            per_gpu = args.gpu_gb - fixed
            gpus = math.ceil(per_image * args.target_batch / per_gpu) if per_gpu > 0 else None
            rows.append(dict(model=model, stage=stage, width=width, mixed=mixed, batches=[b1, b2],
                             peak_gb=[r1, r2], per_image_gb=per_image, fixed_gb=fixed,
                             target_batch_gb=need, gpus=gpus))
            print(f"{model} stage {stage} width {width} {'mixed' if mixed else 'fp32'}: "
                  f"peak {r1:.2f} / {r2:.2f} GB at batch {b1} / {b2}", flush=True)
    print(f"\nResNet-50-IBN-a, last stride 1, 256x256; allocator {info['allocator']}; cpu {info['cpu']}")
    print(f"| model | stage | Joint Module width | precision | GB per image | fixed GB "
          f"| batch {args.target_batch} GB | {args.gpu_gb:.0f} GB GPUs for batch {args.target_batch} |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        width = "-" if r["model"] == "baseline" else r["width"]
        print(f"| {r['model']} | {r['stage']} | {width} | {'mixed fp16' if r['mixed'] else 'fp32'} "
              f"| {r['per_image_gb']:.3f} | {r['fixed_gb']:.2f} | {r['target_batch_gb']:.0f} | {r['gpus']} |")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"machine": info, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
