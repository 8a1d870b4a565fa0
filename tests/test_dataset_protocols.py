"""`anet-tf evaluate` runs each real dataset's protocol on data in its release layout.

The layouts come from the reader tests (quirks included); a small untrained network's
checkpoint is evaluated, so the numbers are arbitrary, but the protocol's shape is not:
VeRi-776 and VeRi-Wild score their fixed query/gallery with camera removal, VehicleID
draws 10 seeded random galleries and reports their mean R1/R5 and the per-trial values.
"""

import json

import pytest

from anet_tf.cli import main
from anet_tf.config import load_config

TINY = [
    "data.image_size=[32, 32]",
    "data.batch_size=8",
    "data.test_batch_size=8",
    "model.base_width=8",
    "model.s_f=16",
    "model.s_a=8",
    "model.s_j=16",
]


def tiny_checkpoint(config, root, tmp_path):
    from anet_tf.data.readers import load_dataset
    from anet_tf.training.fit import build_trainer

    cfg = load_config(config, [f"data.root={root}", *TINY])
    dataset = load_dataset(cfg)
    trainer = build_trainer(cfg, len(dataset.train_pids()), dataset.num_classes)
    path = str(tmp_path / "net.weights.h5")
    trainer.net.save_weights(path)
    return path


def run_evaluate(config, root, weights, out, capsys, *extra):
    args = ["evaluate", "--config", config, "--set", f"data.root={root}"]
    for item in TINY:
        args += ["--set", item]
    code = main([*args, *extra, "--checkpoint", weights, "--json-out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    return json.loads(out.read_text()), printed


@pytest.mark.filterwarnings("ignore:.*typeID.*:UserWarning")
def test_veri776_protocol(tmp_path, capsys, veri776_release):
    root = veri776_release.make(tmp_path / "VeRi")
    weights = tiny_checkpoint("veri776", root, tmp_path)
    result, printed = run_evaluate("veri776", root, weights, tmp_path / "m.json", capsys)
    m = result["metrics"]
    assert result["dataset"] == "veri776" and result["feature"] == "j"
    assert 0 < m["num_valid_queries"] and 0.0 <= m["mAP"] <= 1.0
    assert "| veri776 |" in printed and "mINP" in printed


def test_veriwild_protocol(tmp_path, capsys, veriwild_release):
    root = veriwild_release.make(tmp_path / "VERI-Wild")
    weights = tiny_checkpoint("veriwild", root, tmp_path)
    result, printed = run_evaluate("veriwild", root, weights, tmp_path / "m.json", capsys, "--feature", "f")
    assert result["feature"] == "f"
    assert 0.0 <= result["metrics"]["mAP"] <= 1.0
    assert "| veriwild |" in printed


def test_vehicleid_protocol_ten_seeded_trials(tmp_path, capsys, vehicleid_release):
    root = vehicleid_release.make(tmp_path / "VehicleID")
    weights = tiny_checkpoint("vehicleid", root, tmp_path)
    first, printed = run_evaluate("vehicleid", root, weights, tmp_path / "a.json", capsys)
    m = first["metrics"]
    assert len(m["trials"]) == 10
    r1 = [t["R1"] for t in m["trials"]]
    assert m["R1"] == pytest.approx(sum(r1) / 10)
    assert "R1" in printed and "R5" in printed and "| vehicleid |" in printed
    # Same weights and seed, same trials: the protocol is reproducible.
    second, _ = run_evaluate("vehicleid", root, weights, tmp_path / "b.json", capsys)
    assert [t["R1"] for t in second["metrics"]["trials"]] == r1
