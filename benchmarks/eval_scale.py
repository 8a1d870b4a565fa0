"""Re-id evaluation at VeRi-Wild-large scale: chunked counting vs full sort.

Random 512-d features with planted true matches, shaped like the VeRi-Wild large
test list (10,000 queries, one per identity; 128,517 gallery images of the same
10,000 identities; 174 cameras), are evaluated in the same run by

- ``chunked``: :func:`anet_tf.evaluation.evaluate_features` (query chunks, match
  ranks counted, no sort of a gallery row);
- ``straightforward``: the full float32 distance matrix, a full stable argsort of
  every row into an int64 index matrix, then a per-query pass over the sorted row,
  as FastReID's Cython ``evaluate_cy`` does (with its python ``eval_func``'s
  arithmetic, vectorised).

Each method runs in its own child process, so its peak resident memory is measured
alone (``ru_maxrss`` of that child, from ``os.wait4``); both children load the same
features from ``.npy`` files, so the feature arrays count in both. Times are of the
evaluation call only (distances included, loading excluded): the median of
``--repeats`` runs after ``--warmup`` runs, with min and max. The CMC, mAP and mINP
of the two must agree within 1e-6.

A second table repeats the comparison for smaller galleries (same queries) to show
how time and memory grow with the gallery. The straightforward path needs about
12 bytes per query x gallery pair (float32 distances + int64 indices); at a size
where that does not fit in the available memory it is skipped and the run says so.

    python benchmarks/eval_scale.py --json-out eval_scale.json
    python benchmarks/eval_scale.py --quick          # small, for development
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from machine import machine_info  # noqa: E402

VERI_WILD_LARGE = dict(queries=10_000, gallery=128_517, cameras=174)
CAMERAS_PER_ID = 6


# ------------------------------------------------------------------------- data


def make_data(
    num_query: int,
    num_gallery: int,
    num_ids: int,
    dim: int,
    num_cameras: int,
    seed: int,
    noise: float,
    camera_style: float,
) -> dict:
    """Random features with planted matches.

    Identity i has a random unit centre c_i and is seen by CAMERAS_PER_ID of the
    cameras. An image of i from camera k is normalise(c_i + noise * n / sqrt(dim)
    + camera_style * b_k) with n ~ N(0, I) and b_k a per-camera unit "style", so
    images of one id from one camera (the junk of the protocol) are closer than the
    other true matches. Query j is an image of identity j mod num_ids; gallery
    images are spread evenly over the identities.
    """
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((num_ids, dim), dtype=np.float32))
    styles = _unit(rng.standard_normal((num_cameras, dim), dtype=np.float32))
    id_cameras = np.stack(
        [rng.choice(num_cameras, CAMERAS_PER_ID, replace=False) for _ in range(num_ids)]
    )
    q_pids = np.arange(num_query) % num_ids
    g_pids = rng.permutation(np.arange(num_gallery) % num_ids)
    out = {"q_pids": q_pids, "g_pids": g_pids}
    for prefix, pids in (("q", q_pids), ("g", g_pids)):
        camids = id_cameras[pids, rng.integers(0, CAMERAS_PER_ID, pids.size)]
        feats = np.empty((pids.size, dim), dtype=np.float32)
        for start in range(0, pids.size, 8192):
            sl = slice(start, start + 8192)
            n = rng.standard_normal((feats[sl].shape[0], dim), dtype=np.float32)
            feats[sl] = _unit(
                centres[pids[sl]]
                + np.float32(noise / np.sqrt(dim)) * n
                + np.float32(camera_style) * styles[camids[sl]]
            )
        out[f"{prefix}_camids"] = camids
        out[f"{prefix}_features"] = feats
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ------------------------------------------------------------------- evaluators


def straightforward_evaluate(
    qf, gf, q_pids, g_pids, q_camids, g_camids, max_rank=50, metric="cosine"
) -> dict:
    """Full distance matrix, full stable argsort, then one pass per query."""
    from anet_tf.evaluation.metrics import pairwise_distance

    distmat = pairwise_distance(qf, gf, metric)
    indices = np.argsort(distmat, axis=1, kind="stable")
    del distmat
    num_q = indices.shape[0]
    cmc_sum = np.zeros(max_rank)
    all_ap, all_inp = [], []
    for q_idx in range(num_q):
        order = indices[q_idx]
        matches = g_pids[order] == q_pids[q_idx]
        keep = ~(matches & (g_camids[order] == q_camids[q_idx]))
        raw_cmc = matches[keep]
        if not raw_cmc.any():
            continue
        hits = raw_cmc.cumsum()
        pos = np.flatnonzero(raw_cmc)
        all_inp.append(hits[pos[-1]] / (pos[-1] + 1.0))
        first = pos[0]
        if first < max_rank:
            cmc_sum[first:] += 1
        precision = hits / np.arange(1.0, raw_cmc.size + 1)
        all_ap.append(precision[raw_cmc].sum() / raw_cmc.sum())
    return {
        "cmc": cmc_sum / len(all_ap),
        "mAP": float(np.mean(all_ap)),
        "mINP": float(np.mean(all_inp)),
        "num_valid_queries": len(all_ap),
    }


def chunked_evaluate(qf, gf, q_pids, g_pids, q_camids, g_camids, chunk_size, metric):
    from anet_tf.evaluation.metrics import evaluate_features

    return evaluate_features(
        qf, gf, q_pids, g_pids, q_camids, g_camids, metric=metric, chunk_size=chunk_size
    )


def run_child(args) -> None:
    """Child process: load the data, time one method, write its numbers."""
    data = {k: np.load(os.path.join(args.data, k + ".npy")) for k in DATA_KEYS}
    inputs = (
        data["q_features"],
        data["g_features"],
        data["q_pids"],
        data["g_pids"],
        data["q_camids"],
        data["g_camids"],
    )
    times = []
    for i in range(args.warmup + args.repeats):
        start = time.perf_counter()
        if args.child == "chunked":
            result = chunked_evaluate(
                *inputs, chunk_size=args.chunk_size, metric=args.metric
            )
        else:
            result = straightforward_evaluate(*inputs, metric=args.metric)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
        result.pop("num_skipped_queries", None)
        last = result
    last["cmc"] = last["cmc"].tolist()
    last["times"] = times
    with open(args.out, "w") as fh:
        json.dump(last, fh)


DATA_KEYS = ("q_features", "g_features", "q_pids", "g_pids", "q_camids", "g_camids")


# ----------------------------------------------------------------------- parent


def mem_available() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def spawn(method: str, data_dir: str, args) -> dict:
    out = os.path.join(data_dir, f"{method}.json")
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        method,
        "--data",
        data_dir,
        "--out",
        out,
        "--repeats",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
        "--chunk-size",
        str(args.chunk_size),
        "--metric",
        args.metric,
    ]
    load_before = os.getloadavg()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} child failed with exit code {proc.returncode}")
    with open(out) as fh:
        result = json.load(fh)
    result["peak_rss_bytes"] = usage.ru_maxrss * 1024
    result["loadavg_before"] = load_before
    result["loadavg_after"] = os.getloadavg()
    t = np.array(result["times"])
    result["time_median_s"] = float(np.median(t))
    result["time_min_s"] = float(t.min())
    result["time_max_s"] = float(t.max())
    return result


def machine() -> dict:
    return machine_info()


def compare(a: dict, b: dict) -> dict:
    return {
        "cmc_max_abs_diff": float(
            np.max(np.abs(np.array(a["cmc"]) - np.array(b["cmc"])))
        ),
        "mAP_abs_diff": abs(a["mAP"] - b["mAP"]),
        "mINP_abs_diff": abs(a["mINP"] - b["mINP"]),
        "num_valid_queries_equal": a["num_valid_queries"] == b["num_valid_queries"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=VERI_WILD_LARGE["queries"])
    parser.add_argument(
        "--gallery-sizes",
        default="10000,40000,128517",
        help="comma-separated gallery sizes; the last one is checked for acceptance",
    )
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--cameras", type=int, default=VERI_WILD_LARGE["cameras"])
    parser.add_argument("--metric", default="cosine", choices=["cosine", "euclidean"])
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--noise", type=float, default=1.9)
    parser.add_argument("--camera-style", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="1,000 queries, 128-d, galleries 2k/5k/12k"
    )
    parser.add_argument("--json-out", default=None)
    parser.add_argument(
        "--child", choices=["chunked", "straightforward"], help=argparse.SUPPRESS
    )
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args)
        return 0
    if args.quick:
        args.queries, args.dim, args.gallery_sizes = 1000, 128, "2000,5000,12000"
    sizes = [int(s) for s in args.gallery_sizes.split(",")]
    num_ids = args.queries  # one query per identity, as VeRi-Wild

    info = machine()
    params = {k: v for k, v in vars(args).items() if k not in ("child", "data", "out")}
    print("machine:", json.dumps(info))
    print("params: ", json.dumps(params))
    print(f"load average at start: {os.getloadavg()}")
    rows = []
    for size in sizes:
        data_dir = tempfile.mkdtemp(prefix="eval_scale_")
        try:
            data = make_data(
                args.queries,
                size,
                num_ids,
                args.dim,
                args.cameras,
                args.seed,
                args.noise,
                args.camera_style,
            )
            for key in DATA_KEYS:
                np.save(os.path.join(data_dir, key + ".npy"), data[key])
            feature_bytes = data["q_features"].nbytes + data["g_features"].nbytes
            del data
            row = {"queries": args.queries, "gallery": size}
            row["chunked"] = spawn("chunked", data_dir, args)
            need = 12 * args.queries * size + 3 * feature_bytes
            available = mem_available()
            if available < 1.1 * need:
                row["straightforward"] = None
                row["skipped"] = (
                    f"straightforward needs ~{need / 2**30:.1f} GiB, "
                    f"{available / 2**30:.1f} GiB available"
                )
                print(f"gallery {size}: {row['skipped']}; skipped")
            else:
                row["straightforward"] = spawn("straightforward", data_dir, args)
                row["agreement"] = compare(row["chunked"], row["straightforward"])
                s, c = row["straightforward"], row["chunked"]
                row["time_ratio"] = s["time_median_s"] / c["time_median_s"]
                row["memory_ratio"] = s["peak_rss_bytes"] / c["peak_rss_bytes"]
            rows.append(row)
            print_row(row)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)

    print()
    print(table(rows))
    final = rows[-1]
    verdict = acceptance(final)
    print()
    for line in verdict["lines"]:
        print(line)
    print(f"load average at end: {os.getloadavg()}")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(
                {
                    "machine": info,
                    "params": params,
                    "rows": rows,
                    "acceptance": verdict,
                },
                fh,
                indent=2,
            )
        print(f"wrote {args.json_out}")
    # The acceptance figures are defined at VeRi-Wild-large scale; a --quick run
    # reports them without failing.
    return 0 if verdict["passed"] or args.quick else 1


def print_row(row: dict) -> None:
    c = row["chunked"]
    print(
        f"gallery {row['gallery']}: chunked {c['time_median_s']:.2f} s, "
        f"{c['peak_rss_bytes'] / 2**20:.0f} MiB, mAP {c['mAP']:.6f}, "
        f"R1 {c['cmc'][0]:.6f}, mINP {c['mINP']:.6f}, "
        f"valid queries {c['num_valid_queries']}"
    )
    s = row.get("straightforward")
    if s:
        a = row["agreement"]
        print(
            f"  straightforward {s['time_median_s']:.2f} s, "
            f"{s['peak_rss_bytes'] / 2**20:.0f} MiB; max |diff| cmc "
            f"{a['cmc_max_abs_diff']:.1e} mAP {a['mAP_abs_diff']:.1e} "
            f"mINP {a['mINP_abs_diff']:.1e}"
        )


def table(rows: list[dict]) -> str:
    header = (
        "| queries x gallery | chunked time s (min-max) | straightforward time s (min-max) "
        "| time ratio | chunked peak RSS MiB | straightforward peak RSS MiB | memory ratio "
        "| max abs diff (cmc, mAP, mINP) | load avg (1 min) |"
    )
    lines = [header, "|" + "---|" * 9]
    for row in rows:
        c, s = row["chunked"], row.get("straightforward")

        def t(x):
            return f"{x['time_median_s']:.2f} ({x['time_min_s']:.2f}-{x['time_max_s']:.2f})"

        if s:
            a = row["agreement"]
            diff = max(a["cmc_max_abs_diff"], a["mAP_abs_diff"], a["mINP_abs_diff"])
            cells = [
                t(s),
                f"{row['time_ratio']:.1f}x",
                f"{c['peak_rss_bytes'] / 2**20:.0f}",
                f"{s['peak_rss_bytes'] / 2**20:.0f}",
                f"{row['memory_ratio']:.1f}x",
                f"{diff:.1e}",
            ]
            load = f"{c['loadavg_before'][0]:.2f} / {s['loadavg_before'][0]:.2f}"
        else:
            cells = [
                "skipped",
                "-",
                f"{c['peak_rss_bytes'] / 2**20:.0f}",
                "-",
                "-",
                "-",
            ]
            load = f"{c['loadavg_before'][0]:.2f}"
        lines.append(
            f"| {row['queries']} x {row['gallery']} | {t(c)} | "
            + " | ".join(cells)
            + f" | {load} |"
        )
    return "\n".join(lines)


def acceptance(row: dict) -> dict:
    lines = [f"acceptance at {row['queries']} x {row['gallery']}:"]
    if not row.get("straightforward"):
        lines.append(f"  NOT CHECKED: {row.get('skipped')}")
        return {"passed": False, "lines": lines}
    a = row["agreement"]
    checks = {
        "same CMC, mAP, mINP within 1e-6": max(
            a["cmc_max_abs_diff"], a["mAP_abs_diff"], a["mINP_abs_diff"]
        )
        <= 1e-6
        and a["num_valid_queries_equal"],
        f"peak memory >= 5x lower ({row['memory_ratio']:.1f}x)": row["memory_ratio"]
        >= 5,
        f"wall time >= 2x lower ({row['time_ratio']:.1f}x)": row["time_ratio"] >= 2,
    }
    for name, ok in checks.items():
        lines.append(f"  {'PASS' if ok else 'FAIL'}: {name}")
    return {"passed": all(checks.values()), "lines": lines, "checks": checks}


if __name__ == "__main__":
    sys.exit(main())
