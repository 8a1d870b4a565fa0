"""The Amelioration Constraint's sensitivity to the stage-2 learning rate.

For each seed of a finished ``anet-tf ablate`` study, trains stage 2 only, from the
study's ANet ``checkpoints/stage1`` snapshot of that seed, with and without AC at a
constant ``train.stage2.lr`` (the study's own ``train_run``, as ``anet_noac`` does),
and prints mAP and R1 of each run. Compare with the study's ``anet`` and
``anet_noac`` rows, which ran stage 2 at the schedule's lr.

    python benchmarks/ac_stage2_lr.py --study studies/synthetic --out studies/ac_lr \\
        --lrs 6e-4 --seeds 0,1

docs/reproduction.md (section 4a) has the numbers it printed.
"""

from __future__ import annotations

import argparse
import json
import os


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", required=True, help="a finished anet-tf ablate folder")
    p.add_argument("--out", required=True, help="folder for the stage-2 runs")
    p.add_argument("--lrs", default="6e-4", help="comma-separated stage-2 lrs")
    p.add_argument("--seeds", default="0,1")
    args = p.parse_args()

    from anet_tf.ablation import train_run
    from anet_tf.config import apply_overrides
    from anet_tf.training.fit import load_run_config

    for lr in args.lrs.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            source = os.path.join(args.study, "anet", f"seed{seed}")
            base = load_run_config(source)
            for use_ac in ("true", "false"):
                cfg = apply_overrides(base, [f"train.stage2.lr={lr}", f"loss.use_ac={use_ac}"])
                name = "anet" if use_ac == "true" else "anet_noac"
                run = os.path.join(args.out, f"lr{lr}", name, f"seed{seed}")
                outcome = train_run(cfg, run, verbose=False, stage1_source=source)
                with open(os.path.join(run, "metrics.json"), encoding="utf-8") as fh:
                    m = json.load(fh)["metrics"]
                print(
                    f"stage2.lr={lr} seed={seed} {name}: mAP {100 * m['mAP']:.2f} "
                    f"R1 {100 * m['cmc'][0]:.2f} ({outcome})",
                    flush=True,
                )


if __name__ == "__main__":
    main()
