"""Throughput of the training input pipeline (read + decode + augment + batch).

    python benchmarks/input_pipeline.py --json-out input_pipeline.json

Writes ``--ids x --images-per-id`` synthetic JPEG images (``--source-size`` pixels
square) to a temporary folder, or reads the images of ``--data DIR`` (one sub-folder
per identity), builds :func:`anet_tf.data.pipeline.build_train_dataset` at
``--image-size`` with all augmentations, warms up, and measures images/s over
``--runs`` runs of ``--batches`` batches. As a baseline measured in the same process,
the same pipeline runs with every augmentation probability at 0 (read + decode +
resize + normalise only); the ratio is the cost of augmenting. Besides wall-clock
images/s it reports the process's CPU time per image, which drifts less than wall
clock when other jobs share the cores (images/s on N idle cores ~ N / CPU s/image).

Target (the issue): >= 300 images/s at 256x256 on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time

import numpy as np
from machine import machine_info  # noqa: E402


def machine() -> dict:
    return machine_info()


def write_images(root: str, ids: int, per_id: int, size: int, seed: int) -> list:
    """Smooth random 'scenes' saved as JPEG quality 90 (noise would decode slower
    than real photos and overstate the cost)."""
    from PIL import Image

    from anet_tf.data.records import Record

    rng = np.random.default_rng(seed)
    records = []
    for pid in range(ids):
        folder = os.path.join(root, f"{pid:04d}")
        os.makedirs(folder, exist_ok=True)
        for j in range(per_id):
            coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
            path = os.path.join(folder, f"{j:03d}.jpg")
            image.save(path, quality=90)
            records.append(Record(path, pid, j % 4, (pid % 10, pid % 5), "train"))
    return records


def read_folder(root: str) -> list:
    from anet_tf.data.records import Record

    records = []
    for pid, name in enumerate(sorted(os.listdir(root))):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        for j, file in enumerate(sorted(os.listdir(folder))):
            if file.lower().endswith((".jpg", ".jpeg", ".png")):
                path = os.path.abspath(os.path.join(folder, file))
                records.append(Record(path, pid, j % 4, (0, 0), "train"))
    if not records:
        raise SystemExit(f"--data {root}: no <identity>/<image>.jpg files found")
    return records


def measure(ds, batch: int, warmup: int, batches: int, runs: int) -> dict:
    """images/s (wall clock) and CPU ms per image (all threads of this process;
    less sensitive than wall clock to other processes sharing the cores)."""
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    rates, cpu_ms = [], []
    for _ in range(runs):
        wall = time.perf_counter()
        cpu = time.process_time()
        for _ in range(batches):
            images, _ = next(it)
        _ = images.numpy()[0, 0, 0, 0]
        cpu = time.process_time() - cpu
        wall = time.perf_counter() - wall
        rates.append(batches * batch / wall)
        cpu_ms.append(1000.0 * cpu / (batches * batch))
    return {
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "runs": rates,
        "cpu_ms_per_image_median": statistics.median(cpu_ms),
        "cpu_ms_per_image_runs": cpu_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="folder of <identity>/<image>.jpg to use")
    parser.add_argument("--ids", type=int, default=64)
    parser.add_argument("--images-per-id", type=int, default=8)
    parser.add_argument("--source-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, nargs=2, default=(256, 256))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-instances", type=int, default=4)
    parser.add_argument("--num-parallel-calls", type=int, default=-1)
    parser.add_argument("--warmup", type=int, default=5, help="batches")
    parser.add_argument("--batches", type=int, default=10, help="batches per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--json-out", help="write the result here as JSON")
    args = parser.parse_args()

    from anet_tf.config import AugmentConfig
    from anet_tf.config import DataConfig
    from anet_tf.data.pipeline import build_train_dataset
    from anet_tf.data.records import ReidDataset

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="anet_bench_") as tmp:
        if args.data:
            records = read_folder(args.data)
        else:
            records = write_images(
                tmp, args.ids, args.images_per_id, args.source_size, seed=0
            )
        dataset = ReidDataset(
            "bench",
            args.data or tmp,
            ["color", "type"],
            [[str(i) for i in range(10)], [str(i) for i in range(5)]],
            train=records,
        )
        cfg = DataConfig(
            image_size=tuple(args.image_size),
            batch_size=args.batch_size,
            num_instances=args.num_instances,
            num_parallel_calls=args.num_parallel_calls,
        )
        params = {
            "images": len(records),
            "source": args.data or f"synthetic {args.source_size}px JPEG q90",
            **{k: v for k, v in vars(args).items() if k not in ("json_out", "data")},
            "augment": dataclasses.asdict(cfg.augment),
        }
        results = {}
        ds, _ = build_train_dataset(dataset, cfg)
        results["augmented"] = measure(
            ds, args.batch_size, args.warmup, args.batches, args.runs
        )
        if not args.no_baseline:
            plain = dataclasses.replace(
                cfg,
                augment=AugmentConfig(flip_prob=0.0, zoom_prob=0.0, erasing_prob=0.0),
            )
            ds, _ = build_train_dataset(dataset, plain)
            results["no_augment"] = measure(
                ds, args.batch_size, args.warmup, args.batches, args.runs
            )
            results["ratio_augmented_vs_no_augment"] = (
                results["augmented"]["median"] / results["no_augment"]["median"]
            )
    load_after = os.getloadavg()

    out = {
        "benchmark": "input_pipeline",
        "machine": machine(),
        "load_average_1min": {"before": load_before[0], "after": load_after[0]},
        "params": params,
        "images_per_s": results,
        "target_images_per_s": 300,
    }
    m = out["machine"]
    print(
        f"machine: {m['cpu']}, {m['cores_usable']}/{m['cores']} cores usable, "
        f"TF {m['tensorflow']}, Keras {m['keras']}"
    )
    print(
        f"load average (1 min): {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(
        f"params: {params['images']} images ({params['source']}) -> "
        f"{args.image_size[0]}x{args.image_size[1]}, batch {args.batch_size} "
        f"(K={args.num_instances}), num_parallel_calls={args.num_parallel_calls}, "
        f"{args.runs} runs x {args.batches} batches after {args.warmup} warm-up"
    )
    for name in ("augmented", "no_augment"):
        if name in results:
            r = results[name]
            print(
                f"{name:>11}: median {r['median']:.0f} images/s "
                f"(min {r['min']:.0f}, max {r['max']:.0f}); "
                f"{r['cpu_ms_per_image_median']:.2f} CPU ms/image"
            )
    if "ratio_augmented_vs_no_augment" in results:
        print(
            f"ratio augmented / no_augment: {results['ratio_augmented_vs_no_augment']:.2f}"
        )
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)
        print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
