"""A trained run is a portable artifact: copied elsewhere with its dataset deleted,
it loads, embeds, exports, evaluates on another dataset and draws, through one
`Run` that rebuilds the network from the run alone (config + network.json)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from helpers import TINY_OVERRIDES

from anet_tf.cli import main


def _generate(root, seed):
    from anet_tf.data.synthetic import generate

    generate(str(root), ids=10, test_ids=4, cameras=3, images_per_id=5, image_size=32, seed=seed)
    return str(root)


@pytest.fixture(scope="module")
def moved_run(tmp_path_factory):
    """(copy of a trained run whose dataset is gone, embeddings before the move,
    query images kept aside, the original run folder)."""
    import anet_tf

    base = tmp_path_factory.mktemp("portable")
    data = _generate(base / "data", seed=3)
    run = str(base / "run")
    argv = ["fit", "--out", run, "--set", f"data.root={data}"]
    for item in [*TINY_OVERRIDES, "export.formats=[saved_model,tflite]"]:
        argv += ["--set", item]
    assert main(argv) == 0
    images = str(base / "images")
    os.makedirs(images)
    for name in sorted(os.listdir(os.path.join(data, "images")))[:3]:
        shutil.copy(os.path.join(data, "images", name), images)
    paths = [os.path.join(images, n) for n in sorted(os.listdir(images))]
    model = anet_tf.load(run)
    before = (model.embed(paths), model.predict_attributes(paths))
    copy = str(base / "elsewhere" / "run")
    shutil.copytree(run, copy)
    shutil.rmtree(data)
    return copy, before, paths, run


def test_fit_writes_the_network_description_and_every_export_format(moved_run):
    _, _, _, run = moved_run
    with open(os.path.join(run, "network.json"), encoding="utf-8") as fh:
        described = json.load(fh)
    assert described["num_ids"] == 6  # 10 vehicles, 4 of them held out for the test
    assert [a["name"] for a in described["attributes"]] == ["color", "type"]
    assert all(a["classes"] for a in described["attributes"])
    assert described["input_size"] == [32, 32]
    # export.formats=[saved_model,tflite]: both under the run's export/
    assert os.path.isfile(os.path.join(run, "export", "anet", "1", "saved_model.pb"))
    assert os.path.isfile(os.path.join(run, "export", "tflite", "model.tflite"))
    # TF Serving's config and guide beside the model base folder they name
    for name in ("models.config", "batching_parameters.txt", "SERVING.md"):
        assert os.path.isfile(os.path.join(run, "export", name)), name


def test_a_moved_run_without_its_dataset_embeds_as_before(moved_run):
    import anet_tf

    copy, before, paths, _ = moved_run
    model = anet_tf.load(copy)
    after = (model.embed(paths), model.predict_attributes(paths))
    assert np.max(np.abs(after[0] - before[0])) <= 1e-6
    assert set(after[1]) == set(before[1]) == {"color", "type"}
    for name, prediction in before[1].items():
        assert after[1][name].classes == prediction.classes
        np.testing.assert_array_equal(after[1][name].labels, prediction.labels)


def test_a_moved_run_exports_savedmodel_and_tflite_without_its_dataset(moved_run, tmp_path, capsys):
    copy, *_ = moved_run
    out = str(tmp_path / "exported")
    code = main(["export", "--run", copy, "--out", out, "--formats", "saved_model,tflite",
                 "--quantize", "int8", "--quiet"])
    captured = capsys.readouterr()
    # full-integer int8 calibrates on the training images, which are gone: one
    # line says so; the SavedModel, fp32 and int8-dynamic are written.
    assert code == 1
    refused = [line for line in captured.err.splitlines() if "int8 refused" in line]
    assert len(refused) == 1 and "calibrates on training images" in refused[0]
    assert "Traceback" not in captured.err
    assert os.path.isfile(os.path.join(out, "anet", "1", "saved_model.pb"))
    assert os.path.isfile(os.path.join(out, "tflite", "model.tflite"))
    assert os.path.isfile(os.path.join(out, "tflite", "model_int8_dynamic.tflite"))
    assert not os.path.exists(os.path.join(out, "tflite", "model_int8.tflite"))


def test_a_moved_run_evaluates_on_another_dataset(moved_run, tmp_path, capsys):
    copy, *_ = moved_run
    # another dataset: other vehicles, other identity count (12 training ids)
    from anet_tf.data.synthetic import generate

    other = str(tmp_path / "other")
    generate(other, ids=16, test_ids=4, cameras=3, images_per_id=4, image_size=32, seed=9)
    code = main(["evaluate", "--run", copy, "--set", f"data.root={other}",
                 "--json-out", str(tmp_path / "m.json")])
    assert code == 0, capsys.readouterr().err
    with open(tmp_path / "m.json", encoding="utf-8") as fh:
        metrics = json.load(fh)["metrics"]
    assert 0.0 <= metrics["mAP"] <= 1.0 and "R1" in metrics
    # the synthetic attribute classes are the same: both attributes are scored
    assert set(metrics["attributes"]) == {"color", "type"}


def test_a_moved_run_draws_activation_maps(moved_run, tmp_path):
    copy, _, paths, _ = moved_run
    out = str(tmp_path / "act.png")
    assert main(["visualize", "activation", "--run", copy, "--image", paths[0], "--out", out]) == 0
    assert os.path.getsize(out) > 1000


def test_a_run_from_before_network_json_is_described_from_its_dataset(
    moved_run, tmp_path, capsys
):
    """An old run (no network.json) with its dataset present still loads, and the
    loading writes the description (one line says so), so the run is portable
    from then on."""
    from anet_tf.training.run_checkpoints import Run

    _, _, paths, run = moved_run
    old = str(tmp_path / "old-run")
    shutil.copytree(run, old, ignore=shutil.ignore_patterns("export"))
    os.remove(os.path.join(old, "network.json"))
    data = _generate(tmp_path / "data", seed=3)  # the same dataset, regenerated
    config = os.path.join(old, "config.yaml")
    with open(config, encoding="utf-8") as fh:
        text = fh.read()
    import yaml

    raw = yaml.safe_load(text)
    raw["data"]["root"] = data
    with open(config, "w", encoding="utf-8") as fh:
        yaml.safe_dump(raw, fh, sort_keys=False)
    net = Run(old).network()
    err = capsys.readouterr().err
    assert f"wrote {os.path.join(old, 'network.json')}" in err
    assert os.path.isfile(os.path.join(old, "network.json"))
    assert net.get_layer("f_head") is not None
    # from now on the old run loads without its dataset too
    shutil.rmtree(data)
    assert Run(old).network().count_params() == net.count_params()


def test_a_damaged_network_description_is_one_line_naming_it(moved_run, tmp_path):
    from anet_tf.io import DamagedFileError
    from anet_tf.training.run_checkpoints import Run

    copy, *_ = moved_run
    broken = str(tmp_path / "broken")
    shutil.copytree(copy, broken, ignore=shutil.ignore_patterns("export"))
    path = os.path.join(broken, "network.json")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('{"format": "anet-tf-network/1", "num_ids": 0}')
    with pytest.raises(DamagedFileError, match=r"network\.json is damaged \(num_ids") as info:
        Run(broken).network()
    assert "\n" not in str(info.value)
