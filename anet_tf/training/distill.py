"""Distillation of a trained run (the teacher, normally ANet) into a network without
the Joint Module (the student: VAN, ``f`` and the attribute branches, or the
Baseline).

ANet's Joint Module (two 3x3 convolutions at the backbone's width) costs most of
its serving time; the student serves the same kinds of outputs (an embedding and
the attributes) without it. It trains as an ordinary run (its own config,
``network.json``, checkpoints, evaluation and export) with :class:`DistillTrainer`,
whose step adds the terms of :func:`anet_tf.losses.compute_distill_losses` against
the frozen teacher's outputs, computed in the same step from the same augmented
images. (A cache of the teacher's features per training image would give the
teacher's feature of another image than the one the student sees, since every step
flips, zooms and erases its images anew; docs/training.md gives the measured cost
of computing them on the fly.)

The run records its teacher in ``RUN/teacher.json`` (:func:`record_teacher`): the
teacher's run, the weights file and their SHA-256. Training reads it
(:func:`recorded_teacher`), so ``anet-tf fit --resume`` continues a distillation as
it continues any run, and refuses when the teacher's weights have changed since.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os

import keras

from anet_tf import losses as L
from anet_tf.config import Config
from anet_tf.config import ConfigError
from anet_tf.io import atomic_write_text
from anet_tf.io import damaged
from anet_tf.io import read_json_file
from anet_tf.model.anet import select_test_feature
from anet_tf.training.run import TEACHER_FILE
from anet_tf.training.run import RunFolderError
from anet_tf.training.run_checkpoints import Run
from anet_tf.training.trainer import ANetTrainer

TEACHER_FORMAT = "anet-tf-teacher/1"
# The variants a student may be: those without the Joint Module.
STUDENT_VARIANTS = ("van", "baseline")


class DistillTrainer(ANetTrainer):
    """:class:`~anet_tf.training.trainer.ANetTrainer` whose loss adds the
    distillation terms against a frozen teacher network.

    Args:
        net: the student network (``variant`` van or baseline).
        teacher: the teacher network; frozen here and always run in inference mode.
        student_feature: the student's test feature (``eval.feature``).
        teacher_feature: the teacher's test feature (its ``eval.feature``).
        teacher_attribute_names: the teacher's attributes (for its ``fa`` feature).
        distilled_attributes: the attributes whose logits learn the teacher's
            probabilities (none when ``lambda_attribute`` is 0 or the student has
            no branches).
        distill_kwargs: the weights and temperature
            (:func:`anet_tf.losses.distill_kwargs_from_config`).
        **kwargs: those of :class:`ANetTrainer`.
    """

    def __init__(
        self,
        net,
        teacher,
        *,
        student_feature: str,
        teacher_feature: str,
        teacher_attribute_names,
        distilled_attributes,
        distill_kwargs: dict,
        **kwargs,
    ):
        super().__init__(net, **kwargs)
        teacher.trainable = False
        self.teacher = teacher
        self.student_feature = student_feature
        self.teacher_feature = teacher_feature
        self.teacher_attribute_names = list(teacher_attribute_names)
        self.distilled_attributes = list(distilled_attributes)
        self.distill_kwargs = dict(distill_kwargs)
        for name in L.distill_term_names(self.distilled_attributes)[:-1]:
            self.trackers[name] = keras.metrics.Mean(name=name)

    def compute_terms(self, images, targets, training: bool):
        outputs = self.net(images, training=training)
        terms = L.compute_losses(
            outputs,
            targets,
            attribute_names=self.attribute_names,
            variant=self.variant,
            stage=self.stage,
            **self.loss_kwargs,
        )
        taught = self.teacher(images, training=False)
        logits = [f"a_{n}_logits" for n in self.distilled_attributes]
        student = {k: outputs[k] for k in logits}
        student["feature"] = select_test_feature(
            outputs, self.student_feature, self.attribute_names
        )
        teacher = {k: taught[k] for k in logits}
        teacher["feature"] = select_test_feature(
            taught, self.teacher_feature, self.teacher_attribute_names
        )
        distilled = L.compute_distill_losses(
            student,
            teacher,
            attribute_names=self.distilled_attributes,
            **self.distill_kwargs,
        )
        total = terms.pop("total") + distilled.pop("total")
        return {**terms, **distilled, "total": total}


def distilled_attributes(cfg: Config) -> list[str]:
    """The student's attributes that learn the teacher's probabilities."""
    if cfg.model.variant == "baseline" or cfg.distill.lambda_attribute == 0:
        return []
    return list(cfg.data.attributes)


def distill_trainer(cfg: Config, net, teacher: Run, **trainer_kwargs) -> DistillTrainer:
    """The :class:`DistillTrainer` of ``net`` (built from ``cfg``) and the teacher
    run's network (built here: call it inside the strategy's scope).

    Raises:
        ConfigError: on the JAX backend, whose stateless step
            (:mod:`anet_tf.training.jax_step`) has no distillation terms.
    """
    if keras.backend.backend() == "jax":
        raise ConfigError(
            "distillation trains on the TensorFlow backend: run it with "
            "KERAS_BACKEND=tensorflow (the student exports and serves like any run)"
        )
    teacher_cfg = teacher.config
    return DistillTrainer(
        net,
        teacher.network(),
        student_feature=cfg.eval.feature,
        teacher_feature=teacher_cfg.eval.feature,
        teacher_attribute_names=branch_attributes(teacher_cfg),
        distilled_attributes=distilled_attributes(cfg),
        distill_kwargs=L.distill_kwargs_from_config(cfg.distill),
        **trainer_kwargs,
    )


def branch_attributes(cfg: Config) -> list[str]:
    """The attributes of a run's branches (none for the baseline)."""
    return list(cfg.data.attributes) if cfg.model.variant != "baseline" else []


# ------------------------------------------------------------------ the checks
def check_teacher(cfg: Config, teacher: Run, attribute_classes: dict | None) -> None:
    """Refuse, in one line, a student config that cannot learn from ``teacher``.

    Args:
        cfg: the student's config.
        teacher: the teacher run.
        attribute_classes: {attribute: class names} of the student's dataset;
            None: the attributes are not checked (the dataset is not read yet).

    Raises:
        ConfigError: a student with a Joint Module, another input size, a test
            feature of another dimension (for the feature hint), or attributes the
            teacher does not predict with the same classes (for the soft labels).
    """
    description = teacher.description()
    if cfg.model.variant not in STUDENT_VARIANTS:
        raise ConfigError(
            f"{cfg.origin('model.variant')}: model.variant: a student has no Joint "
            f"Module: {' or '.join(STUDENT_VARIANTS)}, got {cfg.model.variant!r}"
        )
    size = tuple(int(x) for x in cfg.data.image_size)
    if size != tuple(description.input_size):
        raise ConfigError(
            f"{cfg.origin('data.image_size')}: data.image_size {list(size)} is not the "
            f"teacher's input size {list(description.input_size)} ({teacher.dir}): "
            "the student sees the teacher's images; set data.image_size="
            f"{list(description.input_size)}"
        )
    if attribute_classes is not None and distilled_attributes(cfg):
        taught = dict(zip(description.attribute_names, description.attribute_classes))
        taught = {
            n: taught[n] for n in branch_attributes(teacher.config) if n in taught
        }
        for name in distilled_attributes(cfg):
            classes = list(attribute_classes.get(name, ()))
            if list(taught.get(name, ())) != classes:
                got = (
                    "does not predict it"
                    if name not in taught
                    else (f"predicts the classes {list(taught[name])}")
                )
                raise ConfigError(
                    f"{cfg.origin('distill.lambda_attribute')}: distill.lambda_attribute: "
                    f"the student's attribute {name!r} has the classes {classes} and "
                    f"the teacher ({teacher.dir}) {got}; set distill.lambda_attribute=0 "
                    "to learn it from the labels alone"
                )


def check_feature_dimensions(cfg: Config, student_net, teacher: Run) -> None:
    """The feature hint compares the two test features: refuse (one line) when
    their dimensions differ and ``distill.lambda_feature`` is not 0.

    Args:
        student_net: the student network built from ``cfg`` (any weights).
    """
    if not cfg.distill.lambda_feature:
        return
    student_dim = _feature_dimension(
        student_net, cfg.eval.feature, branch_attributes(cfg)
    )
    teacher_dim = _feature_dimension(
        teacher.network(),
        teacher.config.eval.feature,
        branch_attributes(teacher.config),
    )
    if student_dim != teacher_dim:
        raise ConfigError(
            f"{cfg.origin('distill.lambda_feature')}: distill.lambda_feature: the "
            f"student's feature {cfg.eval.feature} has {student_dim} dimensions and the "
            f"teacher's {teacher.config.eval.feature} {teacher_dim}; give the student the "
            "teacher's dimension (model.s_f) or set distill.lambda_feature=0"
        )


def _feature_dimension(net, feature: str, attribute_names: list[str]) -> int:
    return int(select_test_feature(net.output, feature, attribute_names).shape[-1])


# ------------------------------------------------------------------ the record
def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_teacher(run_dir: str, teacher: Run) -> dict:
    """Write ``RUN/teacher.json``: the teacher's run folder, the weights file it
    is used through, their SHA-256, its variant, test feature and input size."""
    weights = os.path.abspath(teacher.weights())
    record = {
        "format": TEACHER_FORMAT,
        "run": os.path.abspath(teacher.dir),
        "weights": weights,
        "weights_sha256": file_sha256(weights),
        "variant": teacher.config.model.variant,
        "feature": teacher.config.eval.feature,
        "input_size": list(teacher.description().input_size),
        "recorded": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    os.makedirs(run_dir, exist_ok=True)
    atomic_write_text(
        os.path.join(run_dir, TEACHER_FILE), json.dumps(record, indent=2) + "\n"
    )
    return record


def read_teacher_record(run_dir: str) -> dict | None:
    """The run's teacher record, or None for a run that was not distilled.

    Raises:
        DamagedFileError: not a record of this format.
    """
    path = os.path.join(run_dir, TEACHER_FILE)
    if not os.path.isfile(path):
        return None
    record = read_json_file(path, "restore it from a backup")
    if (
        not isinstance(record, dict)
        or record.get("format") != TEACHER_FORMAT
        or not all(
            isinstance(record.get(k), str) for k in ("weights", "weights_sha256")
        )
    ):
        raise damaged(
            path, f"not a {TEACHER_FORMAT} record", "restore it from a backup"
        )
    return record


def recorded_teacher(run_dir: str) -> Run | None:
    """The teacher ``RUN/teacher.json`` names, used through the weights it
    recorded; None for a run that was not distilled.

    Raises:
        RunFolderError: the teacher's weights are gone or have changed since the
            distillation started (one line).
    """
    record = read_teacher_record(run_dir)
    if record is None:
        return None
    weights = record["weights"]
    where = os.path.join(run_dir, TEACHER_FILE)
    if not os.path.isfile(weights):
        raise RunFolderError(
            f"{run_dir}: the teacher's weights {weights} (recorded in {where}) are "
            "gone; the distillation cannot continue: restore them or distil anew"
        )
    if file_sha256(weights) != record["weights_sha256"]:
        raise RunFolderError(
            f"{run_dir}: the teacher's weights {weights} changed since the "
            f"distillation started (SHA-256 recorded in {where}); it cannot continue "
            "with another teacher: distil anew into another --out"
        )
    return Run(weights)
