"""Decisions in search answers: each match's P(same vehicle) and a same/different
decision at an operating point of the model's calibration, "no match" for a query
none of whose matches passes (JSON, table, Python, `visualize ranked`); the JSON
format's version; bad calibration input as one line with nothing written; and a
run's calibration (`calibrate --run`) taken for its own export's gallery (the
export records the weights' digest), refused for another model's."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from anet_tf.cli import main
from anet_tf.data.records import Record
from anet_tf.evaluation.calibration import CalibrationError
from anet_tf.evaluation.calibration import build_calibration
from anet_tf.evaluation.calibration import load_calibration
from anet_tf.evaluation.calibration import write_calibration
from anet_tf.search import answer
from anet_tf.search import operating_point
from anet_tf.search.embeddings import save_embeddings
from anet_tf.search.index import load_index

pytest.importorskip("faiss", reason="search needs faiss: pip install -e '.[search]'")

IDS, DIM, NOISE = 16, 16, 0.8
FINGERPRINT = "f00d"  # the model record of the random_embeddings fixture
K = 8  # matches in a picture


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def world():
    """Features of 16 vehicles (2 query and 4 gallery images each) and of a 17th
    vehicle seen once, as a model of fingerprint f00d would give them."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((IDS + 1, DIM))

    def part(per, split):
        pids = np.repeat(np.arange(IDS), per)
        feats = centres[pids] + NOISE * rng.standard_normal((pids.size, DIM))
        records = [
            Record(f"{split}/{i}.jpg", int(p), i % 3, (), split)
            for i, p in enumerate(pids)
        ]
        return feats.astype(np.float32), records

    q, qr = part(2, "query")
    g, gr = part(4, "gallery")
    stranger = centres[IDS] + NOISE * rng.standard_normal(DIM)
    return q, qr, g, gr, stranger


@pytest.fixture(scope="module")
def files(world, random_embeddings, fake_model, tmp_path_factory):
    """The calibration of the gallery's model (from the world's pairs), another
    model's, the gallery (64 images of the 16 vehicles) and two queries: an image
    of vehicle 0 (a gallery image of it, as a new file) and one of the 17th
    vehicle, whose best score is below every threshold of the calibration."""
    q, qr, g, gr, stranger = world
    root = tmp_path_factory.mktemp("decisions")
    out = {"root": str(root)}
    for name, fingerprint in (("calibration", FINGERPRINT), ("other", "beef")):
        out[name] = str(root / f"{name}.json")
        model = {**fake_model(DIM, fingerprint), "kind": "saved_model"}
        write_calibration(
            out[name], build_calibration("veri776", q, g, qr, gr, model=model)
        )
    gallery = random_embeddings(len(gr), DIM, seed=1)
    gallery.embedding = _unit(g)
    gallery.pids = np.asarray([r.pid for r in gr], np.int64)
    queries = random_embeddings(2, DIM, seed=2)
    queries.embedding = np.stack([gallery.embedding[0], _unit(stranger)])
    queries.pids = np.asarray([0, IDS], np.int64)
    queries.camids = np.asarray([-1, -1], np.int64)
    queries.paths = ["/queries/vehicle0.jpg", "/queries/stranger.jpg"]
    for name, emb in (("gallery", gallery), ("queries", queries)):
        out[name] = str(root / f"{name}.npz")
        save_embeddings(emb, out[name])
    out["index"] = str(root / "gallery.index")
    assert main(["index", "build", out["gallery"], "-o", out["index"]]) == 0
    out["gallery_emb"], out["queries_emb"] = gallery, queries
    return out


def _search(files, *extra):
    return [
        "search",
        "--index",
        files["index"],
        "--query-embeddings",
        files["queries"],
        "-k",
        "5",
        *extra,
    ]


def test_json_has_probabilities_decisions_and_no_match(files, capsys):
    capsys.readouterr()
    cal = load_calibration(files["calibration"], FINGERPRINT)
    threshold = cal.threshold(fmr=1e-3)
    g, q = files["gallery_emb"].embedding, files["queries_emb"].embedding
    best = (q @ g.T).max(1)
    assert best[0] >= threshold > best[1]  # the world is as the test needs
    args = _search(files, "--calibration", files["calibration"], "--fmr", "1e-3")
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "anet-tf-search/2"
    assert out["operating_point"] == {
        "calibration": files["calibration"],
        "calibration_model": FINGERPRINT,
        "fmr": 1e-3,
        "probability": None,
        "threshold": round(threshold, 6),
    }
    known, stranger = out["results"]
    assert (known["answer"], stranger["answer"]) == ("match", "no match")
    decisions = []
    for result in out["results"]:
        assert len(result["matches"]) == 5
        for m in result["matches"]:
            assert m["probability"] == pytest.approx(
                cal.probability([m["score"]])[0], abs=1e-5
            )
            assert m["decision"] == ("same" if m["score"] >= threshold else "different")
            decisions.append(m["decision"])
    assert known["matches"][0]["decision"] == "same"
    assert known["matches"][0]["pid"] == 0
    assert "different" in decisions
    assert {m["decision"] for m in stranger["matches"]} == {"different"}


def test_json_without_a_calibration_is_as_before_with_its_format(files, capsys):
    capsys.readouterr()
    assert main([*_search(files), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "anet-tf-search/2"
    assert "operating_point" not in out
    for result in out["results"]:
        assert set(result) == {"query", "attributes", "matches"}
        for m in result["matches"]:
            assert "probability" not in m and "decision" not in m


def test_the_table_says_no_match(files, capsys):
    capsys.readouterr()
    cal = load_calibration(files["calibration"], FINGERPRINT)
    threshold = cal.threshold(probability=0.9)
    args = _search(files, "--calibration", files["calibration"], "--probability", "0.9")
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"same vehicle at score >= {threshold:.4f} (P(same) 0.9 of "
        f"{files['calibration']})"
    )
    no_match = [i for i, line in enumerate(lines) if "no match" in line]
    stranger = lines.index(next(x for x in lines if "stranger.jpg" in x))
    assert len(no_match) == 1 and no_match[0] > stranger
    assert lines[no_match[0]] == (
        f"  no match: no gallery item reaches score {threshold:.4f} (P(same) 0.9)"
    )
    head = lines[stranger + 1]
    assert "P(same)" in head and "decision" in head
    rows = lines[stranger + 2 : no_match[0]]
    assert len(rows) == 5 and all("different" in r for r in rows)
    assert any(" same " in r for r in lines[3:stranger])


def test_the_python_api(files):
    index = load_index(files["index"])
    queries = files["queries_emb"]
    scores, ids = index.search(queries.embedding, 3)
    point = operating_point(files["calibration"], index.model, fmr=1e-2)
    assert point.threshold == load_calibration(files["calibration"], None).threshold(
        fmr=1e-2
    )
    decided = point.decide(index.matches(scores, ids))
    assert [answer(row) for row in decided] == ["match", "no match"]
    top = decided[0][0]
    assert top.decision == "same" and 0.5 < top.probability <= 1.0
    assert top.to_dict()["decision"] == "same"
    undecided = index.matches(scores, ids)[0][0]
    assert undecided.probability is None and "decision" not in undecided.to_dict()
    with pytest.raises(ValueError, match="without a decision"):
        answer(index.matches(scores, ids)[0])
    with pytest.raises(CalibrationError, match="calibrates another model"):
        operating_point(files["other"], index.model, fmr=1e-2)


def _error_line(capsys) -> tuple[str, str]:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    return captured.out, err


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--calibration", "{other}", "--fmr", "1e-3"], "calibrates another model"),
        (["--calibration", "{damaged}", "--fmr", "1e-3"], "missing or not"),
        (["--calibration", "{calibration}", "--fmr", "0"], "--fmr must be in (0, 1)"),
        (
            ["--calibration", "{calibration}", "--probability", "1.5"],
            "--probability must be in (0, 1)",
        ),
        (
            ["--fmr", "1e-3"],
            "--fmr read a score threshold from the model's calibration",
        ),
        (["--calibration", "{calibration}"], "give one operating point"),
        (
            ["--calibration", "{calibration}", "--fmr", "1e-3", "--probability", "0.9"],
            "give one operating point",
        ),
    ],
    ids=[
        "another-model",
        "damaged",
        "fmr-0",
        "probability-1.5",
        "no-calibration",
        "no-operating-point",
        "two-operating-points",
    ],
)
def test_bad_calibration_input_is_one_line_and_prints_nothing(
    files, capsys, extra, says
):
    damaged = os.path.join(files["root"], "damaged.json")
    with open(files["calibration"], encoding="utf-8") as fh:
        payload = json.load(fh)
    del payload["histograms"]["same"]
    with open(damaged, "w", encoding="utf-8") as fh:
        json.dump(payload, fh)
    names = {"other": files["other"], "damaged": damaged, **files}
    extra = [
        e.format(**{k: v for k, v in names.items() if isinstance(v, str)})
        for e in extra
    ]
    capsys.readouterr()
    before = sorted(os.listdir(files["root"]))
    # Options that do not go together exit 2, as in `link`; bad values exit 1.
    code = 2 if extra[0] != "--calibration" else 1
    for json_flag in ([], ["--json"]):
        assert main([*_search(files, *extra), *json_flag]) == code
        out, err = _error_line(capsys)
        assert says in err and out == ""
    assert sorted(os.listdir(files["root"])) == before


def test_another_models_calibration_is_refused_before_a_query_is_embedded(
    files, write_images, tmp_path, capsys
):
    """The gallery's model (/models/m-f00d) is not there: embedding the query
    would fail; the calibration is refused first."""
    image = write_images(str(tmp_path / "q"), 1)[0]
    capsys.readouterr()
    argv = ["search", "--index", files["index"], "--query", image, "--fmr", "1e-3"]
    assert main([*argv, "--calibration", files["other"]]) == 1
    _, err = _error_line(capsys)
    assert "calibrates another model" in err and files["other"] in err
    assert "beef" in err and "/models/m-f00d" in err
    assert main([*argv, "--calibration", files["calibration"]]) == 1
    assert "the index's model /models/m-f00d is gone" in _error_line(capsys)[1]


def _dark_rows(picture, x: int, rows: slice) -> int:
    """Dark pixels of column ``x`` of ``picture`` in ``rows``."""
    column = np.asarray(Image.open(picture).convert("L"))[rows, x]
    return int((column < 60).sum())


def test_visualize_ranked_draws_the_operating_point(files, tmp_path, capsys):
    """The dashed line stands after the last match decided "same": after the
    top match for vehicle 0 at a strict FMR, after the query for the stranger."""
    from anet_tf.search.embeddings import load_embeddings
    from anet_tf.visualize.ranked import RANK_CELL_H
    from anet_tf.visualize.ranked import RANK_CELL_W
    from anet_tf.visualize.ranked import RANK_HEADER_H
    from anet_tf.visualize.ranked import ranked_list_size

    queries = load_embeddings(files["queries"])
    cal = load_calibration(files["calibration"], FINGERPRINT)
    threshold = cal.threshold(fmr=1e-3)
    g = files["gallery_emb"].embedding
    same = int(
        (np.sort(queries.embedding @ g.T, 1)[:, ::-1][:, :K] >= threshold).sum(1)[0]
    )
    assert 1 <= same < K
    cell = round(RANK_CELL_W * 100)
    row = slice(
        round(RANK_HEADER_H * 100) + 20, round((RANK_HEADER_H + RANK_CELL_H) * 100) - 20
    )
    for i, name, line_after in ((0, "vehicle0", same + 1), (1, "stranger", 1)):
        part = str(tmp_path / f"{name}.npz")
        save_embeddings(queries.rows([i]), part)
        picture = str(tmp_path / f"{name}.png")
        argv = [
            "visualize",
            "ranked",
            "--index",
            files["index"],
            "--query-embeddings",
            part,
            "-k",
            str(K),
            "-o",
            picture,
            "--calibration",
            files["calibration"],
            "--fmr",
            "1e-3",
        ]
        assert main(argv) == 0, capsys.readouterr().err
        assert Image.open(picture).size == ranked_list_size(1, K)
        # a dashed line: dark for about half the column at its place, not elsewhere
        dashed = _dark_rows(picture, line_after * cell, row)
        assert dashed > 0.3 * (row.stop - row.start), (name, dashed)
        for other in range(1, K + 1):
            if other != line_after:
                assert _dark_rows(picture, other * cell, row) < 5, (name, other)


# ------------------------------------------------- a run's calibration, its export


@pytest.fixture(scope="module")
def exported_run(tiny_export_run, tmp_path_factory):
    """A run folder holding a tiny untrained ANet's weights (checkpoints/best),
    exported by `anet-tf export --run`, and `anet-tf calibrate --run`'s file:
    (run, SavedModel version folder, calibration, net, cfg)."""
    from anet_tf.training.fit import save_run_config

    tmp = str(tmp_path_factory.mktemp("run-calibration"))
    net, cfg, _ = tiny_export_run(tmp)
    run = os.path.join(tmp, "run")
    save_run_config(cfg, run)
    os.makedirs(os.path.join(run, "checkpoints", "best"))
    net.save_weights(os.path.join(run, "checkpoints", "best", "net.weights.h5"))
    out = os.path.join(tmp, "export")
    assert (
        main(
            [
                "export",
                "--run",
                run,
                "--out",
                out,
                "--formats",
                "saved_model",
                "--quiet",
            ]
        )
        == 0
    )
    calibration = os.path.join(tmp, "calibration.json")
    assert main(["calibrate", "--run", run, "--out", calibration]) == 0
    return run, os.path.join(out, "anet", "1"), calibration, net, cfg


def test_a_runs_calibration_serves_its_own_exports_gallery(
    exported_run, tmp_path, capsys
):
    from anet_tf.export.saved_model import read_metadata
    from anet_tf.model.digest import weights_digest
    from anet_tf.search.serving import model_fingerprint

    run, model, calibration, net, _ = exported_run
    digest = weights_digest(net)[:16]
    with open(calibration, encoding="utf-8") as fh:
        assert json.load(fh)["model"]["fingerprint"] == digest  # the run's weights
    assert read_metadata(model)["weights_digest"] == digest
    # a re-export of the same weights keeps the digest and the fingerprint
    again = str(tmp_path / "again")
    argv = ["export", "--run", run, "--out", again, "--formats", "saved_model"]
    assert main([*argv, "--model-version", "2", "--quiet"]) == 0
    assert read_metadata(os.path.join(again, "anet", "2"))["weights_digest"] == digest
    assert model_fingerprint(os.path.join(again, "anet", "2")) == model_fingerprint(
        model
    )
    # the export's gallery takes the run's calibration
    for split in ("gallery", "query"):
        npz = str(tmp_path / f"{split}.npz")
        assert (
            main(["embed", f"dataset:{split}", "--model", model, "-o", npz, "--quiet"])
            == 0
        )
    index = str(tmp_path / "gallery.index")
    assert main(["index", "build", str(tmp_path / "gallery.npz"), "-o", index]) == 0
    capsys.readouterr()
    search = [
        "search",
        "--index",
        index,
        "--query-embeddings",
        str(tmp_path / "query.npz"),
    ]
    # (the tiny run's test split has too few different-vehicle pairs to tell an
    # FMR of 1e-2: the operating point is one they can tell)
    with open(calibration, encoding="utf-8") as fh:
        fmr = 2.0 / json.load(fh)["pairs"]["different"]
    argv = [*search, "--calibration", calibration, "--fmr", f"{fmr:.6g}", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["operating_point"]["calibration_model"] == digest
    assert out["model"]["fingerprint"] == model_fingerprint(model) != digest
    assert {r["answer"] for r in out["results"]} <= {"match", "no match"}
    assert all("decision" in m for r in out["results"] for m in r["matches"])
    # ... for its own test-time feature only
    with open(calibration, encoding="utf-8") as fh:
        payload = json.load(fh)
    payload["model"]["feature"] = "f"
    other_feature = str(tmp_path / "feature-f.json")
    write_calibration(other_feature, payload)
    assert main([*search, "--calibration", other_feature, "--fmr", "1e-2"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{other_feature} calibrates feature f of the weights of" in err


def test_a_runs_calibration_is_refused_for_another_models_export(
    exported_run, tmp_path
):
    """Other weights of the same network, exported: another digest, refused."""
    from anet_tf.data.readers import load_dataset
    from anet_tf.export.saved_model import export_saved_model
    from anet_tf.search.serving import ServingModel

    _, model, calibration, net, cfg = exported_run
    dataset = load_dataset(cfg)
    kernel = next(w for w in net.weights if len(w.shape) == 4)
    original = kernel.numpy()
    try:
        kernel.assign(original * 1.01)
        other = export_saved_model(
            net, cfg, dataset, str(tmp_path / "other"), warmup=False
        )
    finally:
        kernel.assign(original)
    load_calibration(calibration, ServingModel(model).info())
    with pytest.raises(CalibrationError) as err:
        load_calibration(calibration, ServingModel(other).info())
    message = str(err.value)
    assert "\n" not in message and "calibrates another model" in message
    assert other in message
