"""The job of ``anet-tf calibrate``: a model's same-vehicle calibration file
(:mod:`anet_tf.evaluation.calibration`) from its features of a dataset's test
split, extracted as ``anet-tf evaluate`` extracts them."""

from __future__ import annotations

from anet_tf.config import Config


def model_predictor(cfg: Config, *, run=None, model_dir: str | None = None):
    """(predictor, model record) of a trained run's network or an exported
    SavedModel, as ``evaluate`` measures them (:func:`~anet_tf.evaluation.
    extract.evaluate_predictor`). The record's fingerprint is the SavedModel's
    (:func:`anet_tf.search.serving.model_fingerprint`, what ``search`` checks),
    or for a run's weights the first 16 hex digits of their digest
    (:func:`~anet_tf.model.digest.weights_digest`), which an export of those
    weights records in its metadata, so ``search`` takes the file for the
    export's galleries too."""
    if model_dir is not None:
        from anet_tf.export.saved_model import load_predictor
        from anet_tf.search.serving import model_fingerprint

        return load_predictor(model_dir), {
            "fingerprint": model_fingerprint(model_dir),
            "kind": "saved_model",
            "path": model_dir,
        }
    from anet_tf.evaluation.extract import keras_predict_fn
    from anet_tf.model.digest import weights_digest

    net = run.network()
    names = (
        list(run.description().attribute_names)
        if cfg.model.variant != "baseline"
        else []
    )
    return keras_predict_fn(net, cfg.eval.feature, names), {
        "fingerprint": weights_digest(net)[:16],
        "kind": "run_weights",
        "path": run.weights(),
    }


def calibrate(
    cfg: Config,
    out: str,
    *,
    run=None,
    model_dir: str | None = None,
    max_pairs: int | None = None,
    seed: int | None = None,
    verbose: bool = True,
) -> dict:
    """Measure the model of ``run`` or ``model_dir`` on the test split of ``cfg``'s
    dataset and write its calibration to ``out``.

    Args:
        max_pairs: pairs fitted and measured at most (default
            :data:`~anet_tf.evaluation.calibration.MAX_PAIRS`).
        seed: the vehicle split and the pair sample (default ``eval.seed``).

    Returns:
        What was written.
    """
    from anet_tf.data.readers import load_dataset
    from anet_tf.evaluation.calibration import MAX_PAIRS
    from anet_tf.evaluation.calibration import build_calibration
    from anet_tf.evaluation.calibration import write_calibration
    from anet_tf.evaluation.extract import test_outputs
    from anet_tf.jobs.fit_evaluate_export import ensure_synthetic

    ensure_synthetic(cfg, verbose=verbose)
    dataset = load_dataset(cfg)
    predict, model = model_predictor(cfg, run=run, model_dir=model_dir)
    q, _, g, _ = test_outputs(predict, dataset, cfg, progress=verbose)
    payload = build_calibration(
        dataset.name,
        q,
        g,
        dataset.query,
        dataset.gallery,
        model={**model, "feature": cfg.eval.feature},
        metric=cfg.eval.metric,
        chunk_size=cfg.eval.chunk_size,
        seed=cfg.eval.seed if seed is None else seed,
        max_pairs=MAX_PAIRS if max_pairs is None else max_pairs,
    )
    payload["data"] = {
        "dataset": cfg.data.name,
        "root": cfg.data.root,
        "flip": cfg.eval.flip,
    }
    write_calibration(out, payload)
    return payload
