"""Attribute accuracy per camera, and each camera's most frequent confusions.

Reads the ``.npz`` files ``anet-tf embed`` writes (predicted ``<attr>_label`` beside
the known ``<attr>_known`` label and the camera id of each image), so what is
scored is what the SavedModel serves. For the synthetic dataset it also names each
camera's view (the generator gives camera k the view ``CAMERA_VIEWS[(k - 1) % 6]``),
since some types look nearly alike from the front or the rear.

    anet-tf embed dataset:query   --model RUN/export/anet/1 -o query.npz
    anet-tf embed dataset:gallery --model RUN/export/anet/1 -o gallery.npz
    python benchmarks/attribute_by_camera.py query.npz gallery.npz --attribute type

docs/reproduction.md (section 8) has what it printed for the default run.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("npz", nargs="+", help="files written by anet-tf embed")
    p.add_argument("--attribute", default="type")
    p.add_argument("--synthetic", action="store_true", help="name the synthetic cameras' views")
    p.add_argument("--top", type=int, default=4, help="confusions listed per camera")
    args = p.parse_args()

    cams, known, predicted = [], [], []
    for path in args.npz:
        with np.load(path, allow_pickle=False) as d:
            if f"{args.attribute}_known" not in d.files:
                raise SystemExit(f"{path}: no {args.attribute}_known / _label arrays "
                                 "(embed a labelled source with a model that has the attribute)")
            cams.append(d["camid"])
            known.append(d[f"{args.attribute}_known"].astype(str))
            predicted.append(d[f"{args.attribute}_label"].astype(str))
    cams, known, predicted = (np.concatenate(v) for v in (cams, known, predicted))
    labelled = known != ""
    views = {}
    if args.synthetic:
        from anet_tf.data.synthetic import CAMERA_VIEWS

        views = {c: CAMERA_VIEWS[(int(c) - 1) % len(CAMERA_VIEWS)] for c in np.unique(cams)}
    print(f"{args.attribute}: {labelled.sum()} labelled images, top-1 "
          f"{100 * np.mean(known[labelled] == predicted[labelled]):.1f} %")
    print("| camera | view | images | top-1 | most frequent confusions (true -> predicted: count) |")
    print("|---|---|---|---|---|")
    for c in np.unique(cams):
        m = labelled & (cams == c)
        if not m.any():
            continue
        wrong = Counter(
            (t, q) for t, q in zip(known[m], predicted[m], strict=True) if t != q
        ).most_common(args.top)
        text = ", ".join(f"{t} -> {q}: {n}" for (t, q), n in wrong) or "none"
        print(f"| {c} | {views.get(c, '')} | {m.sum()} | "
              f"{100 * np.mean(known[m] == predicted[m]):.1f} % | {text} |")


if __name__ == "__main__":
    main()
