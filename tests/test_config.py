"""Config loading: shipped configs, _base_ inheritance, --set overrides, and errors."""

import os

import pytest

from anet_tf.config import ConfigError
from anet_tf.config import config_from_dict
from anet_tf.config import load_config
from anet_tf.data.readers import check_data_root


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("name", ["synthetic", "veri776", "veriwild", "vehicleid"])
def test_shipped_configs_load(name):
    cfg = load_config(name)
    assert cfg.data.name == name
    assert cfg.data.batch_size % cfg.data.num_instances == 0


def test_synthetic_configs_differ_from_the_default_where_they_say():
    """synthetic (the default): 480 training vehicles in their own folder, the
    attribute BNNeck, a stage-2 lr and the refit, 30 steps an epoch; synthetic_80:
    80 training vehicles, the paper's attribute head, one pass an epoch, no refit."""
    default, small = load_config("synthetic"), load_config("synthetic_80")
    assert default.data.name == small.data.name == "synthetic"
    assert (default.data.root, small.data.root) == (
        "datasets/synthetic_520",
        "datasets/synthetic",
    )
    assert (default.data.synth.ids, small.data.synth.ids) == (520, 120)
    assert default.data.synth.test_ids == small.data.synth.test_ids == 40
    assert (default.model.attribute_neck, small.model.attribute_neck) == ("bnneck", "none")
    assert (default.train.stage2.lr, small.train.stage2.lr) == (pytest.approx(6e-4), None)
    assert (default.train.attribute_refit, small.train.attribute_refit) == (True, False)
    # One pass over synthetic_80's 80 x 12 training images in batches of 32 is the
    # default's epoch.
    steps = (small.data.synth.ids - small.data.synth.test_ids) * small.data.synth.images_per_id
    steps //= small.data.batch_size
    assert default.train.stage1.steps_per_epoch == default.train.stage2.steps_per_epoch == steps
    assert small.train.stage1.steps_per_epoch is None
    assert small.train.stage2.steps_per_epoch is None
    assert (default.train.stage1.epochs, default.train.stage2.epochs) == (
        small.train.stage1.epochs,
        small.train.stage2.epochs,
    )


@pytest.mark.parametrize("name", ["veri776", "veriwild", "vehicleid"])
def test_paper_hyper_parameters(name):
    """Section 4.2 of the paper."""
    cfg = load_config(name)
    assert cfg.data.image_size == (256, 256)
    assert (cfg.data.batch_size, cfg.data.num_instances) == (512, 4)
    assert cfg.train.optimizer == "amsgrad"
    assert cfg.train.lr == pytest.approx(6e-4)
    assert cfg.train.lr_milestones == [60, 120, 150]
    assert cfg.train.lr_gamma == pytest.approx(0.1)
    assert (cfg.train.stage1.epochs, cfg.train.stage2.epochs) == (150, 60)
    assert cfg.train.stage2.lr is None  # the schedule: 6e-7 in stage 2
    # Bag of Tricks' L2 5e-4 on the gradient, not Keras' decoupled decay
    assert (cfg.train.weight_decay_mode, cfg.train.weight_decay) == ("coupled", 5e-4)
    assert (cfg.model.s_f, cfg.model.s_a, cfg.model.s_j) == (512, 128, 512)
    assert cfg.model.backbone == "resnet50_ibn_a" and cfg.model.last_stride == 1
    assert cfg.model.se_reduction == 16 and cfg.model.attribute_branch == "se"
    assert (cfg.loss.lambda_van, cfg.loss.lambda_a, cfg.loss.lambda_g) == (1.0, 1.0, 1.0)
    assert cfg.loss.label_smoothing > 0
    aug = cfg.data.augment
    assert aug.flip_prob > 0 and aug.zoom_prob > 0 and aug.erasing_prob > 0


def test_default_is_synthetic_and_small():
    cfg = load_config(None)
    assert cfg.data.name == "synthetic"
    assert cfg.model.backbone in ("resnet18_ibn_a", "resnet18")
    assert cfg.data.image_size[0] <= 128
    # unchanged by paper_base's coupled decay until it is measured on this config
    assert cfg.train.weight_decay_mode == "decoupled"
    assert cfg.train.deterministic is False


def test_base_inheritance_and_override_order(tmp_path):
    write(tmp_path / "base.yaml", "train:\n  lr: 0.001\n  stage1: {epochs: 5}\n")
    child = write(
        tmp_path / "child.yaml",
        "_base_: base.yaml\ntrain:\n  stage1: {epochs: 7}\n",
    )
    cfg = load_config(child, ["train.stage2.epochs=2"])
    assert cfg.train.lr == pytest.approx(0.001)  # from the base
    assert cfg.train.stage1.epochs == 7  # child wins
    assert cfg.train.stage2.epochs == 2  # --set wins
    assert cfg.source == child


@pytest.mark.parametrize("base", ["veri776", "veri776.yaml"])
def test_base_by_shipped_name(tmp_path, base):
    """A user's config builds on a shipped one by name, as FastReID's _BASE_ (the
    wheel test runs the same from an installed package)."""
    child = write(tmp_path / "mine.yaml", f"_base_: {base}\ndata:\n  root: /data/VeRi\n")
    cfg = load_config(child)
    shipped = load_config("veri776")
    assert cfg.data.root == "/data/VeRi"
    assert cfg.data.name == shipped.data.name == "veri776"
    assert cfg.data.batch_size == shipped.data.batch_size
    assert cfg.train.stage1.epochs == shipped.train.stage1.epochs


def test_base_beside_the_file_wins_over_a_shipped_name(tmp_path):
    write(tmp_path / "veri776.yaml", "train:\n  lr: 0.123\n")
    child = write(tmp_path / "mine.yaml", "_base_: veri776.yaml\n")
    assert load_config(child).train.lr == pytest.approx(0.123)


def test_unknown_base_is_one_line_listing_the_shipped_names(tmp_path):
    child = write(tmp_path / "mine.yaml", "_base_: veri77\n")
    with pytest.raises(ConfigError) as err:
        load_config(child)
    msg = str(err.value)
    assert "\n" not in msg and "mine.yaml" in msg and "'veri77'" in msg
    assert "veri776" in msg and "synthetic" in msg


def test_set_parses_yaml_values():
    cfg = load_config(None, ["data.image_size=[64, 96]", "model.joint_module.width=32", "model.pretrained=null"])
    assert cfg.data.image_size == (64, 96)
    assert cfg.model.joint_module.width == 32
    assert cfg.model.pretrained is None


@pytest.mark.parametrize("width", ["1.5", "0", "-0.25"])
def test_joint_width_must_be_channels_or_a_fraction(width):
    with pytest.raises(ConfigError, match=r"model\.joint_module\.width: must be null, a number"):
        load_config(None, [f"model.joint_module.width={width}"])
    assert load_config(None, ["model.joint_module.width=0.25"]).model.joint_module.width == 0.25


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path / "bad.yaml", "train:\n  epochz: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "train.epochz" in msg and "bad.yaml" in msg and "stage1" in msg


def test_unknown_key_in_base_names_the_base(tmp_path):
    write(tmp_path / "base.yaml", "model:\n  depth: 50\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\n")
    with pytest.raises(ConfigError, match=r"base\.yaml.*model\.depth"):
        load_config(child)


def test_wrong_type_names_key_and_file(tmp_path):
    path = write(tmp_path / "t.yaml", "data:\n  batch_size: many\n")
    with pytest.raises(ConfigError, match=r"t\.yaml.*data\.batch_size must be int"):
        load_config(path)


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match="data.batch_size"):
        load_config(None, ["data.batch_size=true"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.batch_size=30", "data.batch_size"),  # not a multiple of K=4
        ("data.num_instances=1", "data.num_instances"),  # K < 2
        ("train.lr=-0.1", "train.lr"),
        ("train.lr=nan", "train.lr"),
        ("train.lr=.inf", "train.lr"),
        ("train.weight_decay=-1e-4", "train.weight_decay"),
        ("train.weight_decay=nan", "train.weight_decay"),
        ("train.weight_decay=inf", "train.weight_decay"),
        ("train.weight_decay_mode=l2", "train.weight_decay_mode"),
        ("train.stage2.lr=0", "train.stage2.lr"),
        ("train.stage2.lr=nan", "train.stage2.lr"),
        ("train.stage2.lr=-6e-5", "train.stage2.lr"),
        ("train.stage1.lr=6e-4", "train.stage1.lr"),  # stage 1 is train.lr
        ("train.stage2.lr=6e-5", None),
        ("train.lr_milestones=[10, 5]", "train.lr_milestones"),
        ("data.augment.flip_prob=1.5", "data.augment.flip_prob"),
        ("model.variant=resnet", "model.variant"),
        ("eval.feature=j", None),  # valid for anet
        ("data.root=''", "data.root"),
    ],
)
def test_impossible_values(override, key):
    if key is None:
        load_config(None, [override])
        return
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert key in str(err.value) and "--set" in str(err.value)


def test_feature_must_exist_in_variant():
    with pytest.raises(ConfigError, match="eval.feature"):
        load_config(None, ["model.variant=baseline", "eval.feature=j"])
    cfg = load_config(None, ["model.variant=baseline", "eval.feature=f"])
    assert cfg.model.variant == "baseline"


def test_dataset_names_are_the_readers():
    from anet_tf.config import DATASET_NAMES
    from anet_tf.data.readers import READERS

    assert tuple(READERS) == DATASET_NAMES


def test_missing_data_root_error(tmp_path):
    cfg = load_config("veri776", [f"data.root={tmp_path / 'nope'}"])
    with pytest.raises(ConfigError, match=r"data\.root.*does not exist"):
        check_data_root(cfg)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("no_such_config.yaml")


def test_base_cycle(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(tmp_path / "a.yaml"))


def test_malformed_yaml(tmp_path):
    path = write(tmp_path / "m.yaml", "train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"m\.yaml.*not valid YAML"):
        load_config(path)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.lr"])


def test_round_trip_through_yaml(tmp_path):
    import yaml

    cfg = load_config("veri776", ["train.stage1.epochs=3"])
    again = config_from_dict(yaml.safe_load(cfg.to_yaml()), source="run.yaml")
    assert again.to_dict() == cfg.to_dict()
    assert os.path.basename(again.source) == "run.yaml"


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lr=.nan", "train.lr"),
        ("train.weight_decay=.inf", "train.weight_decay"),
        ("loss.lambda_a=.nan", "loss.lambda_a"),
        ("data.augment.erasing_area=[0.02, .nan]", "data.augment.erasing_area[1]"),
        ("train.seed=-1", "train.seed"),
        ("data.seed=-1", "data.seed"),
        ("eval.seed=-3", "eval.seed"),
        ("export.model_name=../victim", "export.model_name"),
        ("export.model_name=a/b", "export.model_name"),
        ("export.model_name=..", "export.model_name"),
    ],
)
def test_nonfinite_numbers_negative_seeds_and_path_names_are_refused(override, key):
    with pytest.raises(ConfigError) as err:
        load_config("synthetic", [override])
    msg = str(err.value)
    assert msg.startswith(f"--set: {key}:") and "\n" not in msg


def test_export_model_name_escaping_out_is_one_line_before_loading(tmp_path, capsys):
    from anet_tf.cli import main

    victim = tmp_path / "victim" / "1"
    victim.mkdir(parents=True)
    (victim / "important.txt").write_text("keep")
    (tmp_path / "run").mkdir()  # not even a run: the name is checked first
    code = main(["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "out"),
                 "--model-name", "../victim"])
    err = capsys.readouterr().err
    assert code == 1 and "--model-name: must be a single folder name" in err
    assert len(err.strip().splitlines()) == 1
    assert (victim / "important.txt").read_text() == "keep"


def test_a_typo_in_a_section_name_is_blamed_on_the_override():
    with pytest.raises(ConfigError) as err:
        load_config("synthetic", ["modle.variant=anet"])
    assert str(err.value).startswith("--set: unknown key 'modle'")


def test_synth_test_ids_follow_ids_and_bad_values_are_one_line(tmp_path, capsys):
    from anet_tf.cli import main

    out = tmp_path / "s"
    assert main(["synth", "--out", str(out), "--ids", "9", "--cameras", "2", "--images-per-id", "2",
                 "--image-size", "32", "--seed", "7"]) == 0
    text = (out / "synth.yaml").read_text()
    assert "test_ids: 3" in text and "ids: 9" in text
    code = main(["synth", "--out", str(tmp_path / "t"), "--ids", "5", "--test-ids", "5"])
    err = capsys.readouterr().err
    assert code == 2 and "--test-ids must be at least 2 and below --ids (5), got 5" in err
    assert "Traceback" not in err and not (tmp_path / "t").exists()


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["evaluate", "--run", "/no/such/run"], "--run /no/such/run"),
        (["export", "--checkpoint", "/no/ckpt", "--out", "x"], "--checkpoint /no/ckpt"),
        (["fit", "--resume", "/no/run"], "--resume /no/run"),
        (["index", "build", "/no/e.npz", "-o", "x"], "EMBEDDINGS /no/e.npz"),
    ],
)
def test_missing_input_paths_are_answered_before_tensorflow_loads(argv, flag):
    import subprocess
    import sys

    script = (
        "import sys; from anet_tf.cli import main; code = main(sys.argv[1:]); "
        "print('tensorflow' in sys.modules); sys.exit(code)"
    )
    proc = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"anet-tf {argv[0]}: error: {flag}: no such file or folder"
    assert proc.stdout.strip() == "False"


def test_fit_on_a_real_dataset_needs_a_pretrained_choice(tmp_path, capsys):
    from anet_tf.cli import main
    from anet_tf.model import build_model_from_config
    from anet_tf.model.pretrained import check_pretrained_choice

    for name in ("veri776", "veriwild", "vehicleid"):
        assert main(["fit", "--config", name, "--out", str(tmp_path / name)]) == 1
        err = capsys.readouterr().err
        assert "model.pretrained is not set" in err and "--set model.pretrained=none" in err
        assert "anet-tf weights convert" in err and not (tmp_path / name).exists()
    check_pretrained_choice(load_config("veri776", ["model.pretrained=none"]))  # opted in
    check_pretrained_choice(load_config("synthetic"))  # the default needs no weights
    cfg = load_config("synthetic", ["model.pretrained=none", "data.image_size=[32, 32]",
                                    "model.base_width=8"])
    assert build_model_from_config(cfg, num_ids=4, num_classes=[3, 2]) is not None


def _shipped():
    from anet_tf.commands.config import shipped_configs

    return shipped_configs()


def test_config_list_names_every_shipped_config(capsys):
    from anet_tf.cli import main

    assert main(["config", "list"]) == 0
    names = capsys.readouterr().out.split()
    assert "synthetic" in names and "veri776_strong" in names and "paper_base" in names
    assert names == _shipped()


@pytest.mark.parametrize("name", _shipped())
def test_config_show_prints_yaml_that_loads_back_to_the_same_config(name, tmp_path, capsys):
    """`config show NAME` is every key, _base_ applied: saved to a file and read
    with --config, it is the shipped config (data.root included)."""
    from anet_tf.cli import main

    assert main(["config", "show", name]) == 0
    text = capsys.readouterr().out
    assert not any(line.startswith("_base_") for line in text.splitlines())
    path = write(tmp_path / "mine.yaml", text)
    assert load_config(path).to_dict() == load_config(name).to_dict()


def test_config_show_applies_set_and_names_a_bad_key(tmp_path, capsys):
    from anet_tf.cli import main

    assert main(["config", "show", "synthetic", "--set", "train.seed=7"]) == 0
    text = capsys.readouterr().out
    assert load_config(write(tmp_path / "s.yaml", text)).train.seed == 7
    assert main(["config", "show", "synthetic", "--set", "train.sead=7"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("anet-tf config: error:") and "train.sead" in err
    assert main(["config", "show", "no_such_config"]) == 1
    assert "no_such_config" in capsys.readouterr().err


def test_a_config_path_is_read_before_a_shipped_name(tmp_path, monkeypatch):
    """A path is a path (a file beside the working directory wins over the
    shipped config of that name); a name finds the shipped config from any
    folder."""
    monkeypatch.chdir(tmp_path)
    assert load_config("synthetic").data.root == "datasets/synthetic_520"
    write(tmp_path / "base.yaml", "train: {seed: 4}\n")
    path = write(tmp_path / "synthetic.yaml", "_base_: base.yaml\ndata: {root: here}\n")
    assert load_config("synthetic.yaml").data.root == "here"
    assert load_config(path).train.seed == 4
    # the shipped configs' path from a clone's root still names them
    assert load_config("configs/veri776.yaml").to_dict() == load_config("veri776").to_dict()
    with pytest.raises(ConfigError, match="config file not found: 'configs/nope.yaml'"):
        load_config("configs/nope.yaml")


@pytest.mark.parametrize("dataset", ["veri776", "veriwild", "vehicleid"])
def test_one_gpu_configs_are_their_dataset_with_the_batch_and_lr_of_training_md(dataset):
    """`<dataset>_1gpu` = the dataset's config with data.batch_size 64 and
    train.lr 6e-4 x 64 / 512, nothing else (docs/training.md's one-GPU rules)."""
    import dataclasses

    from anet_tf.config import load_config

    base, one = load_config(dataset), load_config(f"{dataset}_1gpu")
    assert base.data.batch_size == 512 and base.train.lr == pytest.approx(6e-4)
    assert one.data.batch_size == 64 and one.train.lr == pytest.approx(6e-4 * 64 / 512)
    same = dataclasses.replace(
        one,
        data=dataclasses.replace(one.data, batch_size=base.data.batch_size),
        train=dataclasses.replace(one.train, lr=base.train.lr),
        source=base.source,
    )
    assert same == base
