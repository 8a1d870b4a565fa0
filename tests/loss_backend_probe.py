"""Evaluates every function of anet_tf.losses on one Keras backend.

Not a test module: tests/test_losses.py runs it in a fresh process per backend
(Keras picks its backend once, at import, from KERAS_BACKEND) as

    KERAS_BACKEND=jax python tests/loss_backend_probe.py INPUTS.npz SPEC.json OUT.npz

and compares what it writes with the NumPy references. INPUTS.npz holds the fixed
random inputs, SPEC.json the attribute names, the (variant, stage, use_ac) cases and
the keyword arguments of compute_losses. OUT.npz holds one array per result, its
dtype under ``<name>/dtype``, gradients under ``<name>/grad/<input>``, error messages
under ``error/<case>`` and ``tensorflow_imported``.

Under any backend but TensorFlow, importing TensorFlow is refused before anything
else is imported, so a run proves that the losses do not need it. Gradients come
from the backend's own machinery (``jax.value_and_grad``, ``tf.GradientTape``), and
compute_losses is also differentiated compiled (``jax.jit``, ``tf.function``), as a
training step runs it.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import sys

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")


class _RefuseTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"{name} is refused: the losses must not need it")
        return None


if BACKEND != "tensorflow":
    sys.meta_path.insert(0, _RefuseTensorFlow())

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from anet_tf import losses  # noqa: E402

OUT: dict[str, np.ndarray] = {}


def store(name: str, value) -> None:
    """Store a backend tensor (or a tuple of them as ``name/0``, ``name/1``...)."""
    if isinstance(value, tuple | list):
        for i, item in enumerate(value):
            store(f"{name}/{i}", item)
        return
    OUT[name] = ops.convert_to_numpy(value)
    OUT[f"{name}/dtype"] = np.array(keras.backend.standardize_dtype(value.dtype))


def put(name: str, fn, *arrays, **kwargs) -> None:
    """Store ``fn(*arrays, **kwargs)``, run eagerly."""
    store(name, fn(*arrays, **kwargs))


def value_and_grad(fn, wrt: dict[str, np.ndarray], compiled: bool = False):
    """``fn(tensors) -> (scalar, aux)``; returns ``(scalar, aux, grads)`` as NumPy, with
    the gradient of the scalar with respect to each of ``wrt`` (zeros where it does
    not depend on one). Eager, or with ``compiled`` as a training step runs it
    (``jax.jit``, ``tf.function``)."""
    if BACKEND == "jax":
        import jax

        run = jax.value_and_grad(fn, has_aux=True)
        if compiled:
            run = jax.jit(run)
        (value, aux), grads = run({k: jax.numpy.asarray(v) for k, v in wrt.items()})
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        def run(tensors):
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                value, aux = fn(tensors)
            grads = tape.gradient(
                value, tensors, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
            return value, aux, grads

        if compiled:
            run = tf.function(run)
        value, aux, grads = run({k: tf.constant(v) for k, v in wrt.items()})
    else:
        raise SystemExit(f"no gradient machinery for backend {BACKEND!r}")
    as_np = ops.convert_to_numpy
    return (
        as_np(value),
        {k: as_np(v) for k, v in aux.items()},
        {k: as_np(v) for k, v in grads.items()},
    )


def put_grad(name: str, fn, wrt, compiled: bool = False) -> dict[str, np.ndarray]:
    """Store the scalar of ``fn`` as ``name`` and its gradients as
    ``name/grad/<input>``; returns the aux dict (as NumPy)."""
    value, aux, grads = value_and_grad(fn, wrt, compiled)
    OUT[name] = value
    for key, grad in grads.items():
        OUT[f"{name}/grad/{key}"] = grad
    return aux


def building_blocks(x: dict[str, np.ndarray]) -> None:
    ce = losses.cross_entropy_label_smooth
    for eps in (0.0, 0.1, 0.5):
        put(f"ce/{eps}", ce, x["ce/logits"], x["ce/labels"], epsilon=eps)
    put("ce16", ce, x["ce16/logits"], x["ce16/labels"])

    def att_and_mean(logits, labels, epsilon):
        loss, mask = losses.attribute_cross_entropy(logits, labels, epsilon)
        return loss, mask, losses.masked_mean(loss, mask)

    for eps in (0.0, 0.1):
        put(f"att/{eps}", att_and_mean, x["att/logits"], x["att/labels"], epsilon=eps)
    for name in ("att_some", "att_none"):
        labels = x[f"{name}/labels"]

        def att_mean(t, labels=labels):
            loss, mask = losses.attribute_cross_entropy(t["logits"], labels)
            return losses.masked_mean(loss, mask), {"loss": loss, "mask": mask}

        aux = put_grad(name, att_mean, {"logits": x["att/logits"][: len(labels)]})
        OUT[f"{name}/loss"], OUT[f"{name}/mask"] = aux["loss"], aux["mask"]
    put_grad(
        "masked_mean",
        lambda t: (losses.masked_mean(t["values"], x["mm/mask"]), {}),
        {"values": x["mm/values"]},
    )
    put("masked_mean_empty", losses.masked_mean, x["mm/values"], np.zeros(4, "float32"))

    for metric in losses.METRICS:
        dist = losses.pairwise_distance
        put(f"dist/{metric}/xx", dist, x["dist/x"], metric=metric)
        put(f"dist/{metric}/xy", dist, x["dist/x"], x["dist/y"], metric=metric)
        put_grad(
            f"dist/{metric}/identical",
            lambda t, m=metric: (
                ops.sum(losses.pairwise_distance(t["x"], metric=m)),
                {},
            ),
            {"x": x["dist/identical"]},
        )

    triplet = losses.batch_hard_triplet
    for soft in (False, True):
        put(f"tri/{soft}", triplet, x["tri/x"], x["tri/labels"], soft_margin=soft)
        for name in ("tri_ident", "tri_ones"):
            put_grad(
                f"{name}/{soft}",
                lambda t, s=soft: (
                    ops.sum(triplet(t["x"], x["tri_ident/labels"], soft_margin=s)[0]),
                    {},
                ),
                {"x": x[f"{name}/x"]},
            )
    put("tri16", triplet, x["tri16/x"], x["tri/labels"])
    put("tri_alone", triplet, x["tri_small/x"], x["tri_alone/labels"], margin=2.0)
    put_grad(
        "tri_noneg",
        lambda t: (ops.sum(triplet(t["x"], x["tri_noneg/labels"])[0]), {}),
        {"x": x["tri_noneg/x"]},
    )

    put("pattern", losses.pattern_triplet, x["pattern/g"], x["pattern/patterns"])
    for i in range(3):
        patterns = x[f"pattern_none{i}/patterns"]
        put_grad(
            f"pattern_none{i}",
            lambda t, p=patterns: (
                losses.masked_mean(*losses.pattern_triplet(t["g"], p)),
                {},
            ),
            {"g": x["pattern_none/g"]},
        )

    put("ac_id", losses.ac_id, x["ac_id/ce_j"], x["ac_id/ce_f"])
    put(
        "ac_tri",
        losses.ac_tri,
        *(x[f"ac_tri/{k}"] for k in ("f", "j", "pos", "neg")),
    )

    def ac_id_of_logits(t):
        ce_f = losses.cross_entropy_label_smooth(t["f_logits"], x["ac_grad/pid"])
        ce_j = losses.cross_entropy_label_smooth(t["j_logits"], x["ac_grad/pid"])
        return ops.mean(losses.ac_id(ce_j, ce_f)), {}

    put_grad(
        "ac_id_grad",
        ac_id_of_logits,
        {"f_logits": x["ac_grad/f_logits"], "j_logits": x["ac_grad/j_logits"]},
    )

    def ac_tri_mined_on_j(t):
        _, pos_idx, neg_idx = triplet(t["j"], x["ac_tri_grad/labels"])
        return ops.sum(losses.ac_tri(t["f"], t["j"], pos_idx, neg_idx)), {}

    put_grad(
        "ac_tri_grad",
        ac_tri_mined_on_j,
        {"f": x["ac_tri_grad/f"], "j": x["ac_tri_grad/j"]},
    )


def composition(x: dict[str, np.ndarray], spec: dict) -> None:
    attribute_names = spec["attributes"]
    out_keys = spec["outputs"]
    targets = {k: x[f"batch/tgt/{k}"] for k in ("pid", "attributes", "pattern")}
    outputs = {k: x[f"batch/out/{k}"] for k in out_keys}

    def terms_of(t, tgts, variant, stage, kwargs):
        return losses.compute_losses(
            t,
            tgts,
            attribute_names=attribute_names,
            variant=variant,
            stage=stage,
            **kwargs,
        )

    for variant, stage, use_ac in spec["cases"]:
        for soft in (False, True):
            kwargs = dict(spec["kwargs"], use_ac=use_ac, soft_margin=soft)
            name = f"cl/{variant}/{stage}/{use_ac}/{soft}"

            # The order of the terms, seen while tracing: a dict that comes back
            # through a JAX transformation has sorted keys.
            names = []

            def total(t, variant=variant, stage=stage, kwargs=kwargs, names=names):
                terms = terms_of(t, targets, variant, stage, kwargs)
                names[:] = list(terms)
                return terms["total"], terms

            # Eager: every case compiles little more than the operations of the first
            # (JAX compiles each operation once per shape); one case is also compiled.
            terms = put_grad(name, total, outputs)
            OUT[f"{name}/names"] = np.array(names)
            for term, value in terms.items():
                OUT[f"{name}/{term}"] = value
            if variant == "anet" and stage == 2 and use_ac and not soft:
                terms = put_grad(f"{name}/compiled", total, outputs, compiled=True)
                OUT[f"{name}/compiled/names"] = np.array(names)
                for term, value in terms.items():
                    OUT[f"{name}/compiled/{term}"] = value
            if variant == "anet" and stage == 2 and not soft:
                # id_f and tri_f depend on disjoint inputs (f_logits, f): their sum
                # has a zero gradient only if each has.
                def f_terms(t, kwargs=kwargs):
                    terms = terms_of(t, targets, "anet", 2, kwargs)
                    return terms["id_f"] + terms["tri_f"], terms

                put_grad(f"{name}/f_terms", f_terms, outputs)

    # Eager on every backend, in float16 as under mixed precision.
    half = {k: v.astype(np.float16) for k, v in outputs.items()}
    store("cl16", tuple(terms_of(half, targets, "anet", 2, {}).values()))
    OUT["cl16/names"] = np.array(losses.loss_term_names(attribute_names, "anet", 2))

    unknown = dict(
        targets,
        attributes=np.full_like(targets["attributes"], -1),
        pattern=np.full_like(targets["pattern"], -1),
    )

    def total_unknown(t):
        terms = terms_of(t, unknown, "anet", 2, {})
        return terms["total"], terms

    terms = put_grad("cl_unknown", total_unknown, outputs)
    for term, value in terms.items():
        OUT[f"cl_unknown/{term}"] = value

    bad = {
        "variant": (outputs, targets, "vanilla", 1, attribute_names),
        "stage": (outputs, targets, "anet", 3, attribute_names),
        "output": (
            {k: v for k, v in outputs.items() if k != "j_logits"},
            targets,
            "anet",
            1,
            attribute_names,
        ),
        "attributes": (outputs, targets, "van", 1, [*attribute_names, "model"]),
    }
    for case, (outs, tgts, variant, stage, names) in bad.items():
        try:
            losses.compute_losses(
                outs, tgts, attribute_names=names, variant=variant, stage=stage
            )
        except ValueError as err:
            OUT[f"error/{case}"] = np.array(str(err))


def main(inputs: str, spec: str, out: str) -> None:
    if keras.backend.backend() != BACKEND:
        raise SystemExit(f"Keras runs {keras.backend.backend()}, not {BACKEND}")
    with np.load(inputs) as data:
        x = dict(data)
    with open(spec) as fh:
        spec_dict = json.load(fh)
    # The batch of compute_losses first: the building blocks then reuse most of
    # the operations JAX compiled for its shapes.
    composition(x, spec_dict)
    building_blocks(x)
    OUT["tensorflow_imported"] = np.array("tensorflow" in sys.modules)
    np.savez(out, **OUT)


if __name__ == "__main__":
    main(*sys.argv[1:])
