"""``anet-tf ablate``: the ablation study of section 4.3 (Tables 1 and 2) as ordinary
runs, repeated over seeds and summarised as mean ± std.

A variant is a set of ``--set`` overrides and a test feature (:data:`VARIANTS`).
Every variant x seed is a run folder made by
:func:`anet_tf.jobs.fit_evaluate_export.fit_and_report`::

    DIR/study.yaml              base config, overrides, variants, seeds, invocations
    DIR/<variant>/seed<k>/      an ordinary run (config.yaml, checkpoints/, log.csv,
                                metrics.json); metrics.json present = finished
    DIR/van_fa/seed<k>/metrics.json
                                van_f's run of seed k evaluated on ``fa`` (no model
                                of its own; ``source_run`` names the run)
    DIR/ablation.md, .json, .png  the reports

A finished run is skipped, an interrupted one resumed from its last checkpoint, so
the study survives ``kill -9`` and is continued by running the same command again.
A study keeps one base config: continuing it with other settings is refused, while
variants and seeds may be added. Seed k sets ``train.seed`` and ``data.seed``: the
weight initialisation, the P x K sampling and the augmentation change; the dataset
and its split (``data.synth.seed`` for the synthetic one) and the VehicleID test
draws (``eval.seed``) do not.

The command (its arguments, what it prints) is
:func:`anet_tf.commands.fit.cmd_ablate`.

==================  ==========================================================
module              holds
==================  ==========================================================
``definition``      the variants (overrides, test feature), seeds, parsing
                    ``--variants`` / ``--seeds``, where a run of the study lives
``study_file``      ``study.yaml``: reading, writing, opening or continuing it
``running``         scheduling and running (or resuming, or skipping) the runs
``report``          ``ablation.json``, ``ablation.md``, ``ablation.png``
``machine``         the machine description recorded with each invocation
==================  ==========================================================
"""

from anet_tf.jobs.study.definition import SEED_KEYS
from anet_tf.jobs.study.definition import TABLE1
from anet_tf.jobs.study.definition import VARIANT_KEYS
from anet_tf.jobs.study.definition import VARIANTS
from anet_tf.jobs.study.definition import Variant
from anet_tf.jobs.study.definition import parse_seeds
from anet_tf.jobs.study.definition import parse_variants
from anet_tf.jobs.study.definition import run_dir_of
from anet_tf.jobs.study.definition import seed_overrides
from anet_tf.jobs.study.definition import variant_config
from anet_tf.jobs.study.machine import describe_machine
from anet_tf.jobs.study.report import REPORT_JSON
from anet_tf.jobs.study.report import REPORT_MD
from anet_tf.jobs.study.report import REPORT_PNG
from anet_tf.jobs.study.report import format_markdown
from anet_tf.jobs.study.report import summarize
from anet_tf.jobs.study.report import write_reports
from anet_tf.jobs.study.running import evaluate_variant_run
from anet_tf.jobs.study.running import run_state
from anet_tf.jobs.study.running import run_study
from anet_tf.jobs.study.running import start_from_stage1
from anet_tf.jobs.study.running import train_run
from anet_tf.jobs.study.study_file import STUDY_FILE
from anet_tf.jobs.study.study_file import open_study
from anet_tf.jobs.study.study_file import read_study
from anet_tf.jobs.study.study_file import write_study

__all__ = [
    "REPORT_JSON",
    "REPORT_MD",
    "REPORT_PNG",
    "SEED_KEYS",
    "STUDY_FILE",
    "TABLE1",
    "VARIANTS",
    "VARIANT_KEYS",
    "Variant",
    "describe_machine",
    "evaluate_variant_run",
    "format_markdown",
    "open_study",
    "parse_seeds",
    "parse_variants",
    "read_study",
    "run_dir_of",
    "run_state",
    "run_study",
    "seed_overrides",
    "start_from_stage1",
    "summarize",
    "train_run",
    "variant_config",
    "write_reports",
    "write_study",
]
