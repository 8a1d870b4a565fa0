"""What the allocator does to a real `anet-tf fit`: system time, page faults, speed.

Runs the same short `anet-tf fit` (default synthetic config, ``--epochs`` stage-1 and
``--stage2-epochs`` stage-2 epochs, no export) once per allocator, each in its own
process started with ``ANET_TF_MALLOC=<choice>`` (see anet_tf/allocator.py), and
reports per run: wall, user and system CPU seconds, minor page faults, cores kept busy
((user+system)/wall) and the stage-1 images/s of the training epochs after the first
(read from the run's log.csv). Ratios are against the first allocator listed (the
system's malloc by default), measured in the same invocation. With ``--in-memory``
(default on) it also times the in-memory ANet stage-1 step of
``train_throughput.py`` under each allocator, so the cost of the input pipeline and
callbacks inside ``fit`` shows as a ratio.

    python benchmarks/fit_allocator.py                      # system vs auto (tcmalloc/jemalloc)
    python benchmarks/fit_allocator.py --allocators system,tcmalloc,jemalloc --epochs 4
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from machine import machine_info  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def run_child(cmd: list[str], env: dict, log_path: str) -> dict:
    """Run ``cmd`` to completion; wall time and the child's own rusage."""
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        with open(log_path) as fh:
            tail = fh.read()[-2000:]
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); log {log_path}:\n{tail}")
    return {
        "wall_s": wall,
        "user_s": ru.ru_utime,
        "system_s": ru.ru_stime,
        "minor_faults": ru.ru_minflt,
        "cores_busy": (ru.ru_utime + ru.ru_stime) / wall,
        "system_share": ru.ru_stime / max(ru.ru_utime + ru.ru_stime, 1e-9),
    }


def stage1_rates(run_dir: str) -> list[float]:
    with open(os.path.join(run_dir, "log.csv"), newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["stage"] == "1"]
    return [float(r["images_per_s"]) for r in rows]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="synthetic dataset folder (default: generated with `anet-tf synth`)")
    parser.add_argument("--allocators", default="system,auto", help="comma-separated ANET_TF_MALLOC values")
    parser.add_argument("--epochs", type=int, default=3, help="stage-1 epochs")
    parser.add_argument("--stage2-epochs", type=int, default=1)
    parser.add_argument("--in-memory", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    allocators = [a.strip() for a in args.allocators.split(",") if a.strip()]

    info = machine_info()
    print(f"machine: {json.dumps(info)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="anet_fit_alloc_") as tmp:
        data = args.data
        if not data:
            data = os.path.join(tmp, "synthetic")
            subprocess.run([sys.executable, "-m", "anet_tf", "synth", "--out", data], check=True,
                           stdout=subprocess.DEVNULL, env=dict(os.environ, ANET_TF_MALLOC="system"))
        for name in allocators:
            env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ANET_TF_MALLOC_CHOSEN")}
            env["ANET_TF_MALLOC"] = name
            env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            in_use = subprocess.run(
                [sys.executable, "-c", "import sys; from anet_tf import allocator; "
                 "allocator.relaunch([], command=[sys.executable, '-c', "
                 "'from anet_tf import allocator; print(allocator.in_use())']); "
                 "print(allocator.in_use())"],  # printed here when nothing was preloaded
                env=env, capture_output=True, text=True, check=True,
            ).stdout.strip()
            run_dir = os.path.join(tmp, f"run-{name}")
            cmd = [
                sys.executable, "-m", "anet_tf", "fit", "--out", run_dir, "--no-export", "--quiet",
                "--set", f"data.root={data}",
                "--set", f"train.stage1.epochs={args.epochs}",
                "--set", f"train.stage2.epochs={args.stage2_epochs}",
            ]
            print(f"fit with ANET_TF_MALLOC={name} ({in_use}) ...", flush=True)
            r = run_child(cmd, env, os.path.join(tmp, f"fit-{name}.log"))
            rates = stage1_rates(run_dir)
            r.update(allocator=name, in_use=in_use, stage1_images_per_s=rates,
                     fit_images_per_s=statistics.median(rates[1:] or rates))
            if args.in_memory:
                out = os.path.join(tmp, f"step-{name}.json")
                run_child([sys.executable, os.path.join(HERE, "train_throughput.py"), "--config", "synthetic",
                           "--steps", "10", "--warmup", "2", "--no-anchor", "--json-out", out],
                          env, os.path.join(tmp, f"step-{name}.log"))
                with open(out) as fh:
                    step = [x for x in json.load(fh)["rows"] if x["model"] == "anet" and x["stage"] == 1][0]
                r["in_memory_images_per_s"] = step["images_per_s_median"]
                r["fit_to_in_memory"] = r["fit_images_per_s"] / step["images_per_s_median"]
            rows.append(r)

    ref = rows[0]
    print(f"\ndefault config, {args.epochs}+{args.stage2_epochs} epochs, no export; "
          f"cpu: {info['cpu']} ({info['vector_extensions']}), {info['cores_usable']} cores")
    print("| ANET_TF_MALLOC | allocator | wall s | user s | system s | system share | minor faults "
          "| cores busy | fit stage-1 img/s | in-memory step img/s | fit / in-memory | wall ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mem = f"{r['in_memory_images_per_s']:.1f}" if "in_memory_images_per_s" in r else "-"
        share = f"{r['fit_to_in_memory']:.2f}" if "fit_to_in_memory" in r else "-"
        print(
            f"| {r['allocator']} | {r['in_use']} | {r['wall_s']:.0f} | {r['user_s']:.0f} | {r['system_s']:.0f} "
            f"| {r['system_share']:.1%} | {r['minor_faults'] / 1e6:.1f} M | {r['cores_busy']:.2f} "
            f"| {r['fit_images_per_s']:.1f} | {mem} | {share} | {r['wall_s'] / ref['wall_s']:.2f} |"
        )
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"machine": info, "epochs": [args.epochs, args.stage2_epochs], "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
