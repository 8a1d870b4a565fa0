"""How ``anet-tf data check`` scales with the number of manifest rows.

    python benchmarks/data_check.py --rows 10000 100000 --json-out data_check.json

For each ``--rows`` N it writes a folder dataset of N rows (4 images per vehicle,
a third of the vehicles split into query and gallery, one attribute) whose images
are hard links to ``--distinct`` JPEGs of ``--image-size`` pixels (so a million
rows cost directory entries, not disk), then times
:func:`anet_tf.data.check.check` on it: every row parsed, every image found and,
unless ``--no-decode``, decoded. It prints the median, min and max over ``--runs``
runs after a warm-up run on the smallest size, the time per row, and the ratio of
each size's time per row to the smallest size's, measured in the same process:
1.0 means linear, N / N_smallest would mean quadratic. The images are read from
the page cache after the warm-up, so the figures are the checking work, not the
disk's speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import machine_info  # noqa: E402

_LINKS_PER_FILE = 50_000  # below ext4's 65,000 hard links per inode


def write_dataset(root: str, rows: int, distinct: int, size: int) -> None:
    """A folder dataset of ``rows`` rows whose images are hard links."""
    import numpy as np
    from PIL import Image

    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "attributes"), exist_ok=True)
    with open(os.path.join(root, "attributes", "color.txt"), "w") as fh:
        fh.write("red\nblue\nwhite\n")
    rng = np.random.default_rng(0)
    sources: list[str] = []
    lines = ["path,vehicle_id,camera_id,split,color"]
    for i in range(rows):
        if i % (distinct * _LINKS_PER_FILE) == 0:
            sources = []  # fresh files: one inode holds only so many links
        if len(sources) < distinct:
            coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
            source = os.path.join(root, f"source-{i:07d}.jpg")
            image.save(source, quality=90)
            sources.append(source)
        name = f"images/{i // 4:06d}_{i:07d}.jpg"
        os.link(sources[i % len(sources)], os.path.join(root, name))
        pid = i // 4
        split = "train" if pid % 3 else ("query" if i % 4 == 0 else "gallery")
        lines.append(
            f"{name},{pid},{i % 4},{split},{('red', 'blue', 'white')[pid % 3]}"
        )
    with open(os.path.join(root, "manifest.csv"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


def time_check(root: str, runs: int, decode: bool) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds (this process, all threads) of each run."""
    from anet_tf.data.check import check

    wall, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        report = check(root, verify_images=decode)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if report["problems"]:
            raise SystemExit(f"unexpected problems: {report['problems'][:3]}")
    return wall, cpu


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--distinct", type=int, default=64, help="distinct JPEG files")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--no-decode", action="store_true", help="check without decoding")
    p.add_argument(
        "--data-dir",
        default=None,
        help="keep the generated datasets here and reuse them (default: a temporary "
        "folder, removed)",
    )
    p.add_argument("--json-out", default=None)
    args = p.parse_args()
    sizes = sorted(args.rows)
    info = machine_info()
    params = {**vars(args), "rows": sizes}
    print("machine:", json.dumps(info))
    print("params:", json.dumps(params))
    results = {}
    with tempfile.TemporaryDirectory(prefix="anet-data-check-") as tmp:
        for n in sizes:
            root = os.path.join(args.data_dir or tmp, f"{n}-{args.image_size}px")
            if not os.path.isfile(os.path.join(root, "manifest.csv")):
                shutil.rmtree(root, ignore_errors=True)
                write_dataset(root, n, args.distinct, args.image_size)
            if n == sizes[0]:
                time_check(root, 1, not args.no_decode)  # warm-up: imports, page cache
            times, cpu = time_check(root, args.runs, not args.no_decode)
            median = statistics.median(times)
            results[n] = {
                "median_s": round(median, 3),
                "min_s": round(min(times), 3),
                "max_s": round(max(times), 3),
                "cpu_s": round(statistics.median(cpu), 3),
                "us_per_row": round(median / n * 1e6, 1),
                "cpu_us_per_row": round(statistics.median(cpu) / n * 1e6, 1),
            }
            first = results[sizes[0]]
            r = results[n]
            r["per_row_vs_smallest"] = round(r["us_per_row"] / first["us_per_row"], 2)
            r["cpu_per_row_vs_smallest"] = round(
                r["cpu_us_per_row"] / first["cpu_us_per_row"], 2
            )
            print(
                f"rows {n:>9,}: median {r['median_s']:8.2f} s (min {r['min_s']:.2f}, "
                f"max {r['max_s']:.2f}), {r['us_per_row']:7.1f} us/row, per row "
                f"x{r['per_row_vs_smallest']} of {sizes[0]:,} rows; CPU "
                f"{r['cpu_s']:.2f} s, {r['cpu_us_per_row']:.1f} us/row, "
                f"x{r['cpu_per_row_vs_smallest']}",
                flush=True,
            )
            if not args.data_dir:
                shutil.rmtree(root)  # up to a million directory entries
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(
                {"machine": info, "params": params, "results": results}, fh, indent=2
            )
        print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
