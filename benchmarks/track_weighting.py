"""Track features: the plain mean of a track's crop features against the mean
weighted by crop area, on synthetic tracks, with a trained run.

The synthetic generator's tracks (``anet-tf synth --track-length N``) grow their
crops from 70 % to 100 % of the image size as the vehicle comes closer, so the
earlier crops hold less detail: the case where weighting by crop area could help.
The script scores the run's test features (``eval.feature``) with the three track
protocols (:mod:`anet_tf.evaluation.tracks`) once with the plain mean and once
with area-weighted means, and prints both and their difference. Prepare a run:

    anet-tf synth --out /tmp/trk/data --ids 80 --test-ids 30 --cameras 4 \\
        --images-per-id 6 --image-size 64 --track-length 4
    anet-tf fit --config synthetic_80 --set data.root=/tmp/trk/data \\
        --set "data.synth={ids: 80, test_ids: 30, cameras: 4, images_per_id: 6, image_size: 64, track_length: 4}" \\
        --set "data.image_size=[64, 64]" --set model.base_width=16 \\
        --set train.stage1.epochs=8 --set train.stage2.epochs=2 --no-export --out /tmp/trk/run
    python benchmarks/track_weighting.py --run /tmp/trk/run --json-out weighting.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from machine import machine_info

from anet_tf.config import TRACK_PROTOCOLS
from anet_tf.data.readers import load_dataset
from anet_tf.evaluation.extract import keras_predict_fn
from anet_tf.evaluation.extract import split_outputs
from anet_tf.evaluation.tracks import PROTOCOL_FUNCTIONS
from anet_tf.evaluation.tracks import crop_areas
from anet_tf.evaluation.tracks import track_protocol_kwargs
from anet_tf.training.run_checkpoints import Run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", required=True, help="a trained run on data with tracks"
    )
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()

    run = Run(args.run)
    cfg = run.config
    dataset = load_dataset(cfg)
    names = list(cfg.data.attributes) if cfg.model.variant != "baseline" else []
    predict = keras_predict_fn(run.network(), cfg.eval.feature, names)
    q, _ = split_outputs(predict, dataset.query, cfg, dataset.num_classes)
    g, _ = split_outputs(predict, dataset.gallery, cfg, dataset.num_classes)
    weights = {
        "query_weights": crop_areas([r.path for r in dataset.query]),
        "gallery_weights": crop_areas([r.path for r in dataset.gallery]),
    }
    protocol = track_protocol_kwargs(cfg.eval)
    rows = {}
    for name in TRACK_PROTOCOLS:
        fn = PROTOCOL_FUNCTIONS[name]
        plain = fn(q, g, dataset.query, dataset.gallery, **protocol)
        area = fn(q, g, dataset.query, dataset.gallery, **weights, **protocol)
        rows[name] = {
            w: {"mAP": r["mAP"], "R1": r["R1"], "mINP": r["mINP"]}
            for w, r in (("mean", plain), ("area", area))
        }
    print(json.dumps(machine_info()))
    print(f"run {args.run}: {len(dataset.query)} query, {len(dataset.gallery)} gallery "
          f"crops, feature {cfg.eval.feature}; one deterministic pass (no timing)")  # fmt: skip
    print("| protocol | mean mAP | area mAP | mean R1 | area R1 | mAP change |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        m, a = r["mean"], r["area"]
        print(
            f"| {name} | {100 * m['mAP']:.2f} | {100 * a['mAP']:.2f} | "
            f"{100 * m['R1']:.2f} | {100 * a['R1']:.2f} | "
            f"{100 * (a['mAP'] - m['mAP']):+.2f} |"
        )
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump({"machine": machine_info(), "run": args.run, "results": rows},
                      fh, indent=2, default=float)  # fmt: skip


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
