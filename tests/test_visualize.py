"""``anet-tf visualize``: every picture is a valid PNG file of the expected size,
and the projector export is complete."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from anet_tf.cli import main
from anet_tf.evaluation.activation import map_heat
from anet_tf.search.embeddings import save_embeddings
from anet_tf.search.index import build_index
from anet_tf.visualize import VisualizeError
from anet_tf.visualize import sprite_layout

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, size: tuple[int, int]) -> None:
    assert os.path.isfile(path), path
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_SIGNATURE
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == size
        im.load()


@pytest.fixture(scope="module")
def labelled_gallery(tmp_path_factory, random_embeddings, write_images):
    """Real image files with known ids, random embeddings and an index of them;
    queries are embeddings near gallery items 0 and 5."""
    root = tmp_path_factory.mktemp("viz")
    paths = write_images(root / "images", 12, seed=2)
    emb = random_embeddings(12, 16, seed=3)
    emb.paths = paths
    emb.pids = np.repeat(np.arange(4), 3).astype(np.int64)
    emb.camids = np.tile(np.arange(3), 4).astype(np.int64)
    save_embeddings(emb, str(root / "gallery.npz"))
    build_index([emb]).save(str(root / "index"))
    queries = random_embeddings(2, 16, seed=3)
    queries.embedding = emb.embedding[[0, 5]] + 0.01
    queries.paths = [str(root / "query_a.png"), str(root / "query_b.png")]
    for src, dst in zip([paths[0], paths[5]], queries.paths, strict=True):
        Image.open(src).save(dst)
    queries.pids = np.asarray([0, 1], np.int64)
    queries.camids = np.asarray([5, 5], np.int64)
    save_embeddings(queries, str(root / "queries.npz"))
    return root


def test_ranked_list_png(labelled_gallery, tmp_path):
    out = tmp_path / "ranked.png"
    code = main(
        [
            "visualize",
            "ranked",
            "--index",
            str(labelled_gallery / "index"),
            "--query-embeddings",
            str(labelled_gallery / "queries.npz"),
            "--top-k",
            "4",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    # (top_k + 1) cells of 1.5 in x 2 rows of 2.0 in + a 0.55 in header, at 100 dpi
    assert_png(out, (5 * 150, 2 * 200 + 55))


def test_ranked_list_with_filter_and_no_match(labelled_gallery, tmp_path):
    out = tmp_path / "ranked_filtered.png"
    code = main(
        [
            "visualize",
            "ranked",
            "--index",
            str(labelled_gallery / "index"),
            "--query-embeddings",
            str(labelled_gallery / "queries.npz"),
            "--num-queries",
            "1",
            "--top-k",
            "3",
            "--where",
            "color=red",
            "--where",
            "color=blue",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    assert_png(out, (4 * 150, 200 + 55))


def test_activation_maps_png_from_a_run(search_assets, tmp_path):
    assets = search_assets
    images = sorted(
        os.path.join(assets.data, "images", f)
        for f in os.listdir(os.path.join(assets.data, "images"))
    )[:3]
    out = tmp_path / "act.png"
    code = main(
        [
            "visualize",
            "activation",
            "--run",
            assets.run,
            "--image",
            *images,
            "-o",
            str(out),
        ]
    )
    assert code == 0
    # a 0.35 in label column + 3 cells of 1.6 in; 3 rows of 1.6 in + the header
    assert_png(out, (35 + 3 * 160, 3 * 160 + 35))


def test_map_heat_is_the_channel_norm_scaled_to_unit_range():
    fmap = np.zeros((2, 2, 2), np.float32)
    fmap[0, 0] = [3, 4]
    fmap[1, 1] = [0, 1]
    np.testing.assert_allclose(map_heat(fmap), [[1.0, 0.0], [0.0, 0.2]])
    assert not map_heat(np.ones((3, 3, 4))).any()


def test_training_curves_png(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    header = (
        "stage,epoch,global_epoch,lr,epoch_time_s,images_per_s,total,id_f,tri_f,ac_id"
    )
    rows = [
        "1,1,1,0.0006,10.0,30.0,5.0,3.0,1.0,",
        "1,2,2,0.0006,9.0,33.0,4.0,2.5,0.8,",
        "2,1,3,0.00006,5.0,60.0,3.5,2.4,0.7,0.5",
    ]
    (run / "log.csv").write_text("\n".join([header, *rows]) + "\n")
    out = tmp_path / "curves.png"
    assert main(["visualize", "curves", str(run), "-o", str(out)]) == 0
    assert_png(out, (1000, 750))


def test_cmc_png(tmp_path, capsys):
    for name, cmc in (("a", [0.5, 0.7, 0.8, 0.9]), ("b", [0.6, 0.8, 0.9, 1.0])):
        payload = {
            "dataset": "synthetic",
            "feature": "j",
            "metrics": {"cmc": cmc, "mAP": 0.5},
        }
        (tmp_path / f"{name}.json").write_text(json.dumps(payload))
    out = tmp_path / "cmc.png"
    code = main(
        [
            "visualize",
            "cmc",
            str(tmp_path / "a.json"),
            str(tmp_path / "b.json"),
            "-o",
            str(out),
        ]
    )
    assert code == 0
    assert_png(out, (600, 450))
    (tmp_path / "bad.json").write_text('{"metrics": {"mAP": 0.5}}')
    assert (
        main(["visualize", "cmc", str(tmp_path / "bad.json"), "-o", str(out)])
        == 1
    )
    assert "no CMC curve" in capsys.readouterr().err


def test_projector_export(labelled_gallery, tmp_path):
    log_dir = tmp_path / "projector"
    code = main(
        [
            "visualize",
            "projector",
            str(labelled_gallery / "gallery.npz"),
            "-o",
            str(log_dir),
            "--thumb-size",
            "20",
        ]
    )
    assert code == 0
    side, thumb = sprite_layout(12, 20)
    assert (side, thumb) == (4, 20)
    assert_png(log_dir / "sprite.png", (80, 80))
    lines = (log_dir / "metadata.tsv").read_text().splitlines()
    assert lines[0].split("\t") == [
        "path",
        "pid",
        "camid",
        "color",
        "type",
        "color_known",
        "type_known",
    ]
    assert len(lines) == 13 and lines[1].split("\t")[1:3] == ["0", "0"]
    config = (log_dir / "projector_config.pbtxt").read_text()
    assert (
        'metadata_path: "metadata.tsv"' in config and "single_image_dim: 20" in config
    )
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(log_dir))
    values = reader.get_tensor("embedding/.ATTRIBUTES/VARIABLE_VALUE")
    assert values.shape == (12, 16)


def test_sprite_stays_within_tensorboards_limit():
    assert sprite_layout(10000) == (100, 64)
    assert sprite_layout(20000) == (142, 57)
    with pytest.raises(VisualizeError, match="do not fit"):
        sprite_layout(9000 * 9000)


def test_confusion_png_per_attribute_from_a_runs_metrics(tmp_path, capsys):
    from anet_tf.evaluation.attributes import attribute_accuracy

    run = tmp_path / "run"
    run.mkdir()
    color = attribute_accuracy([0, 1, 1, 2], [0, 1, 2, -1], ["red", "blue", "white"])
    kinds = attribute_accuracy([0, 0], [0, 1], ["sedan", "suv"])
    # written by `evaluate --run` only (a run fitted before attribute accuracy)
    payload = {
        "feature": "j",
        "metrics": {"mAP": 0.5},
        "evaluations": {"j": {"mAP": 0.5, "attributes": {"color": color, "type": kinds}}},
    }
    (run / "metrics.json").write_text(json.dumps(payload))
    out = tmp_path / "pictures"
    code = main(["visualize", "confusion", "--run", str(run), "-o", str(out)])
    assert code == 0
    # a 3.0 in matrix (the minimum) with 1.6 + 1.1 in and 0.7 + 1.4 in margins
    assert_png(out / "confusion_color.png", (570, 510))
    assert_png(out / "confusion_type.png", (570, 510))
    assert "confusion_type.png" in capsys.readouterr().out

    (run / "metrics.json").write_text(json.dumps({"metrics": {"mAP": 0.5}}))
    code = main(["visualize", "confusion", "--run", str(run)])
    assert code == 1
    assert "anet-tf evaluate --run" in capsys.readouterr().err
