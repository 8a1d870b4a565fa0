"""Inference speed of every export format, side by side, in one process.

    python benchmarks/inference.py --run RUN_DIR --json-out inference.json
    python benchmarks/inference.py            # untrained default synthetic model

Exports the network of ``--run`` (or an untrained network of ``--config``, default
the synthetic config: weights do not change the speed) to a SavedModel, the four
TFLite variants and ONNX, then measures on the same random pixels:

* latency at batch 1: milliseconds per call, median (min-max) of ``--repeats``;
* throughput at batch ``--batch``: images/s, median (min-max) of ``--repeats-batch``.

Rows: the Keras network in a ``tf.function`` (as evaluation calls it, on normalised
input), the SavedModel's ``serve_images`` signature (the baseline of the ratios),
its ``serving_default`` on JPEG bytes (decoding included), TFLite fp32 / fp16 /
int8_dynamic / int8 in the LiteRT interpreter (XNNPACK), and ONNX Runtime (CPU).
The formats take turns call by call, so load from other jobs on a shared machine
falls on all of them alike and the ratios hold where absolute times drift. Every
runtime gets ``--threads`` threads (default: the usable cores).

With ``--anchor`` (the default for ResNet-50 backbones) a stock
``keras.applications.ResNet50`` of the same input size and last stride runs beside
them, and the SavedModel's batch throughput is printed as a ratio to it. The
paper-size baseline against that anchor (``--formats`` limits the exports, which
take minutes at that size)::

    python benchmarks/inference.py --config veri776 --set model.variant=baseline \
        --formats saved_model,keras --repeats 3 --repeats-batch 5

Targets: TFLite int8 at least 2x faster than the SavedModel at batch 1; the
paper-size baseline's ``serve_images`` at batch 32 within 10 % of the anchor.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from input_pipeline import machine  # noqa: E402


def load_model(args):
    """(net, cfg, dataset, representative pixels)."""
    from anet_tf.export.tflite import representative_images
    from anet_tf.training.run_checkpoints import Run

    if args.run:
        run = Run(args.run)
        net, cfg, dataset = run.network(), run.config, run.dataset()
        return net, cfg, dataset, representative_images(dataset, cfg.data.image_size)

    from anet_tf.config import load_config
    from anet_tf.data.records import ReidDataset
    from anet_tf.model import build_model_from_config

    cfg = load_config(args.config, args.overrides)
    classes = [[f"{a}{i}" for i in range(6)] for a in cfg.data.attributes]
    dataset = ReidDataset(
        "synthetic", cfg.data.root, list(cfg.data.attributes), classes
    )
    net = build_model_from_config(cfg, 80, [len(c) for c in classes])
    rng = np.random.default_rng(1)
    representative = rng.uniform(0, 255, (32, *cfg.data.image_size, 3)).astype(
        np.float32
    )
    return net, cfg, dataset, representative


FORMATS = ("keras", "saved_model", "jpeg", "tflite", "onnx")
ANCHOR = "keras ResNet50 (anchor, tf.function)"


def anchor_runner(cfg):
    """The stock Keras ResNet-50 (weights=None, the config's input size and last
    stride, average-pooled) in a ``tf.function`` on normalised input: what a plain
    Keras network of the backbone's size costs here, for the baseline's ratio."""
    import tensorflow as tf
    from train_throughput import anchor_resnet50

    from anet_tf.data.preprocessing import normalize

    body = anchor_resnet50(cfg.data.image_size, cfg.model.last_stride)
    fn = tf.function(lambda x: body(x, training=False), reduce_retracing=True)
    return fn, lambda p: normalize(tf.constant(p))


def build_runners(net, cfg, dataset, representative, out_dir, threads, formats=FORMATS):
    """name -> (fn, make_input(pixels) -> that fn's input), and the file sizes, for
    the ``formats`` asked for (the SavedModel is always exported: the ratios'
    baseline)."""
    import tensorflow as tf

    from anet_tf.data.preprocessing import normalize
    from anet_tf.evaluation.extract import keras_embed_fn
    from anet_tf.export.onnx import OnnxRuntimeModel
    from anet_tf.export.onnx import export_onnx
    from anet_tf.export.saved_model import build_serving_module
    from anet_tf.export.saved_model import export_saved_model
    from anet_tf.export.tflite import TFLITE_FILES
    from anet_tf.export.tflite import LiteRTModel
    from anet_tf.export.tflite import export_tflite

    module = build_serving_module(net, cfg, dataset)
    saved = export_saved_model(net, cfg, dataset, out_dir, warmup=False)
    lite = {}
    if "tflite" in formats:
        lite = export_tflite(
            module, os.path.join(out_dir, "tflite"), list(TFLITE_FILES), representative
        )
    onnx_path = export_onnx(module, os.path.join(out_dir, "onnx")) if "onnx" in formats else None

    names = list(module.attribute_names)
    keras_fn = keras_embed_fn(net, cfg.eval.feature, names)
    signatures = tf.saved_model.load(saved).signatures

    def jpeg(pixels):
        return tf.constant(
            [tf.io.encode_jpeg(p.astype(np.uint8), quality=90).numpy() for p in pixels]
        )

    runners = {}
    if "keras" in formats:
        runners["keras (tf.function)"] = (keras_fn, lambda p: normalize(tf.constant(p)))
    runners["saved_model serve_images"] = (
        lambda x: signatures["serve_images"](images=x),
        tf.constant,
    )
    if "jpeg" in formats:
        runners["saved_model serving_default (JPEG)"] = (
            lambda x: signatures["serving_default"](image_bytes=x),
            jpeg,
        )
    for variant, path in lite.items():
        runners[f"tflite {variant}"] = (
            LiteRTModel(path, num_threads=threads),
            np.asarray,
        )
    if onnx_path:
        runners["onnxruntime"] = (
            OnnxRuntimeModel(onnx_path, num_threads=threads),
            np.asarray,
        )
    sizes = {
        "saved_model serve_images": _du(saved),
        "saved_model serving_default (JPEG)": _du(saved),
        **{f"tflite {v}": os.path.getsize(p) for v, p in lite.items()},
        "onnxruntime": os.path.getsize(onnx_path) if onnx_path else None,
    }
    return runners, sizes


def _du(path):
    return sum(
        os.path.getsize(os.path.join(d, f))
        for d, _, files in os.walk(path)
        for f in files
    )


def measure(runners, pixels, batch, repeats, warmup):
    """Seconds per call of each runner, the runners taking turns call by call."""
    inputs = {name: make(pixels[:batch]) for name, (_, make) in runners.items()}
    times = {name: [] for name in runners}
    for i in range(warmup + repeats):
        for name, (fn, _) in runners.items():
            t0 = time.perf_counter()
            fn(inputs[name])
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def summary(seconds, batch):
    ms = [s * 1000 for s in seconds]
    ips = [batch / s for s in seconds]
    return {
        "ms_median": statistics.median(ms),
        "ms_min": min(ms),
        "ms_max": max(ms),
        "images_per_s_median": statistics.median(ips),
        "images_per_s_min": min(ips),
        "images_per_s_max": max(ips),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run", default=None, help="run directory (default: untrained)"
    )
    parser.add_argument("--config", default=None, help="config without --run")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30, help="batch-1 calls")
    parser.add_argument(
        "--repeats-batch", type=int, default=8, help="large-batch calls"
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--out", default=None, help="keep the exported files here")
    parser.add_argument("--json-out", default=None)
    parser.add_argument(
        "--formats", default=",".join(FORMATS),
        help=f"comma-separated subset of {','.join(FORMATS)} (the SavedModel's "
        "serve_images always runs: it is the ratios' baseline)",
    )
    parser.add_argument(
        "--anchor", action=argparse.BooleanOptionalAction, default=None,
        help="also time the stock Keras ResNet50 (default: on for ResNet-50 backbones)",
    )
    args = parser.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        parser.error(f"--formats: unknown {unknown}; choose from {','.join(FORMATS)}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    net, cfg, dataset, representative = load_model(args)
    out_dir = args.out or tempfile.mkdtemp(prefix="anet-bench-")
    runners, sizes = build_runners(
        net, cfg, dataset, representative, out_dir, args.threads, formats
    )
    anchor = args.anchor if args.anchor is not None else cfg.model.backbone.startswith("resnet50")
    if anchor:
        runners[ANCHOR] = anchor_runner(cfg)
    h, w = cfg.data.image_size
    pixels = (
        np.random.default_rng(0)
        .uniform(0, 255, (args.batch, h, w, 3))
        .astype(np.float32)
    )
    params = {
        "run": args.run,
        "config": cfg.source,
        "backbone": cfg.model.backbone,
        "base_width": cfg.model.base_width,
        "image_size": [h, w],
        "feature": cfg.eval.feature,
        "batch": args.batch,
        "repeats": args.repeats,
        "repeats_batch": args.repeats_batch,
        "warmup": args.warmup,
        "threads": args.threads,
        "variant": cfg.model.variant,
        "last_stride": cfg.model.last_stride,
        "formats": formats,
        "anchor": anchor,
    }
    info = machine()
    print("machine:", json.dumps(info))
    print("params: ", json.dumps(params))

    one = measure(runners, pixels, 1, args.repeats, args.warmup)
    many = measure(runners, pixels, args.batch, args.repeats_batch, args.warmup)
    base = "saved_model serve_images"
    results = {}
    for name in runners:
        results[name] = {
            "batch1": summary(one[name], 1),
            f"batch{args.batch}": summary(many[name], args.batch),
            "bytes": sizes.get(name),
        }
    b1 = results[base]["batch1"]["ms_median"]
    bn = results[base][f"batch{args.batch}"]["images_per_s_median"]
    print()
    print(
        f"| format | size (MB) | batch 1 latency ms, median (min-max) | x vs SavedModel "
        f"| batch {args.batch} images/s, median (min-max) | x vs SavedModel |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        one_r, many_r = r["batch1"], r[f"batch{args.batch}"]
        r["speedup_batch1"] = b1 / one_r["ms_median"]
        r[f"speedup_batch{args.batch}"] = many_r["images_per_s_median"] / bn
        size = f"{r['bytes'] / 1e6:.1f}" if r["bytes"] else "-"
        print(
            f"| {name} | {size} | {one_r['ms_median']:.1f} ({one_r['ms_min']:.1f}-"
            f"{one_r['ms_max']:.1f}) | {r['speedup_batch1']:.2f} | "
            f"{many_r['images_per_s_median']:.0f} ({many_r['images_per_s_min']:.0f}-"
            f"{many_r['images_per_s_max']:.0f}) | {r[f'speedup_batch{args.batch}']:.2f} |"
        )
    if anchor:
        ratio = bn / results[ANCHOR][f"batch{args.batch}"]["images_per_s_median"]
        verdict = "within" if ratio >= 0.9 else "NOT within"
        print(
            f"\nserve_images at batch {args.batch}: {ratio:.2f}x the Keras ResNet50 "
            f"anchor's images/s ({verdict} the 10 % target)"
        )
    int8 = results.get("tflite int8", {}).get("speedup_batch1")
    if int8 is not None:
        verdict = "meets" if int8 >= 2 else "MISSES"
        print(
            f"\nTFLite int8 at batch 1: {int8:.2f}x the SavedModel ({verdict} the 2x target)"
        )
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(
                {"machine": info, "params": params, "results": results}, fh, indent=2
            )
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
