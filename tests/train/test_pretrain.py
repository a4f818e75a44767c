"""Extractor pretraining (train/pretrain.py, python -m detbench.pretrain): tiny runs."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from detbench.errors import ConfigError
from detbench.protos import feature_extractor_pb2, pipeline_pb2
from detbench.train import pretrain
from tests.conftest import REPO_ROOT

TINY = dict(
    resolution=32, steps=3, batch_size=4, num_train_images=3, num_val_images=2, warmup_steps=1
)


def _extractor(type_="mobilenet_v2", depth_multiplier=0.35):
    return feature_extractor_pb2.FeatureExtractor(type=type_, depth_multiplier=depth_multiplier)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DETBENCH_CACHE_DIR", str(tmp_path / "cache"))


def test_crops_are_object_centred_and_labelled_with_all_shapes():
    x, y, xv, yv = pretrain.classification_set(pretrain.Recipe(**{**TINY, "num_train_images": 40}))
    assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3)
    assert len(x) == len(y) >= 40  # every image has >= 1 object
    assert set(np.unique(y)) <= set(range(pretrain.NUM_SHAPES))
    assert len(set(np.unique(y))) >= 8  # the ten shapes, not the detection set's six
    # the centre of a crop is the object, not the background: it differs from the border
    centre = x[:, 12:20, 12:20].reshape(len(x), -1, 3).mean(1)
    border = np.concatenate(
        [x[:, :3].reshape(len(x), -1, 3), x[:, -3:].reshape(len(x), -1, 3)], axis=1
    ).mean(1)
    assert np.median(np.abs(centre - border).sum(1)) > 30


def test_cache_key_depends_on_what_changes_the_weights():
    r = pretrain.Recipe(**TINY)
    base = pretrain.cache_key(_extractor(), r)
    strided = _extractor()
    strided.output_stride = 8
    strided.fpn.min_level = 3
    assert pretrain.cache_key(strided, r) == base  # no variable changes
    assert pretrain.cache_key(_extractor(depth_multiplier=0.5), r) != base
    assert pretrain.cache_key(_extractor(), pretrain.Recipe(**{**TINY, "steps": 4})) != base
    assert base.startswith("mobilenet_v2-x0.35-r32-")
    # another input normalization is another function of the image: other weights
    other = _extractor()
    other.input_normalization = feature_extractor_pb2.FeatureExtractor.MEAN_STD
    assert pretrain.cache_key(other, r) != base


def test_an_extractors_own_recipe_fills_the_fields_the_user_left_unset(tmp_path, monkeypatch):
    from detbench.feature_extractors.mobilenet import MobileNetV1
    from detbench.protos import sweep_pb2

    own = {"learning_rate": 0.004, "warmup_steps": 2}
    monkeypatch.setattr(MobileNetV1, "pretraining_recipe", own)
    v1, v2 = _extractor("mobilenet_v1", 0.25), _extractor()
    common = pretrain.Recipe(**TINY)
    mine = pretrain.recipe_for(v1, common)
    assert (mine.learning_rate, mine.warmup_steps, mine.steps) == (0.004, 2, 3)
    assert pretrain.recipe_for(v2, common) == common  # MobileNet v2: the common recipe
    # a field the user set (the sweep's message, a flag) stays theirs
    set_lr = pretrain.Recipe(**{**TINY, "learning_rate": 0.001}, explicit=("learning_rate",))
    kept = pretrain.recipe_for(v1, set_lr)
    assert (kept.learning_rate, kept.warmup_steps) == (0.001, 2)
    # the cache key is the recipe's as the extractor pretrains
    assert pretrain.cache_key(v1, common) == pretrain.cache_key(v1, mine)
    assert pretrain.cache_key(v1, common) != pretrain.cache_key(v1, set_lr)
    message = sweep_pb2.Pretraining(steps=5, num_images=16)
    assert pretrain.recipe_from_proto(message).explicit == (
        "steps",
        "num_train_images",
        "num_val_images",
    )
    # a tiny run trains with, and records, the extractor's recipe
    report = pretrain.pretrain(v1, common, str(tmp_path / "v1.h5"), progress=False)
    assert report.steps == 3
    assert (report.recipe["learning_rate"], report.recipe["warmup_steps"]) == (0.004, 2)
    recorded = json.loads((tmp_path / "v1.json").read_text())["recipe"]
    assert recorded == mine.key_fields() and "explicit" not in recorded


def test_pretrained_weights_load_into_a_detector(tmp_path):
    from detbench.builders.model_builder import build_model
    from detbench.config import load_pipeline

    out = tmp_path / "w.h5"
    report = pretrain.pretrain(_extractor(), pretrain.Recipe(**TINY), str(out), progress=False)
    assert out.exists() and report.steps == 3
    meta = json.loads((tmp_path / "w.json").read_text())
    assert meta["steps"] == 3 and 0.0 <= meta["val_accuracy"] <= 1.0
    assert meta["extractor"] == {"type": "mobilenet_v2", "depth_multiplier": 0.35, "min_depth": 16}
    # the file holds the backbone the detector's extractor builds: same names and values
    p = load_pipeline(os.path.join(REPO_ROOT, "tests/benchmark/tiny_ssd.pbtxt"))
    p.model.ssd.feature_extractor.depth_multiplier = 0.35
    p.model.ssd.feature_extractor.min_depth = 16
    p.model.ssd.feature_extractor.weights_path = str(out)
    model = build_model(p.model, is_training=True)
    # Keras's own loader (not detbench's) reads the file into a fresh backbone; the
    # detector's backbone holds the same values.
    _, reference, _ = pretrain.build_classifier(_extractor(), pretrain.Recipe(**TINY))
    reference.load_weights(str(out))

    def signature(variables):
        return sorted((tuple(v.shape), round(float(np.sum(v.numpy())), 4)) for v in variables)

    ours = model.feature_extractor.build_backbone().variables
    assert len(ours) == len(reference.variables) > 50
    assert signature(ours) == signature(reference.variables)


def test_cache_is_reused_and_the_reference_resolves(monkeypatch):
    config, recipe = _extractor(), pretrain.Recipe(**TINY)
    path, report = pretrain.ensure_pretrained(config, recipe, progress=False)
    assert path.startswith(pretrain.cache_dir()) and report["steps"] == 3

    def fail(*a, **k):
        raise AssertionError("pretrained again although cached")

    monkeypatch.setattr(pretrain, "pretrain", fail)
    again, cached = pretrain.ensure_pretrained(config, recipe, progress=False)
    assert again == path and cached["source"] == "cache"
    ref = pretrain.REFERENCE_PREFIX + pretrain.cache_key(config, recipe)
    assert pretrain.resolve_reference(ref) == path
    assert pretrain.resolve_reference(ref + "x") is None


def test_a_killed_pretraining_resumes(tmp_path):
    """SIGKILL after the first checkpoint; the rerun restores it and finishes."""
    out = tmp_path / "w.h5"
    script = (
        "import sys; from detbench.train import pretrain as P; "
        "from detbench.protos import feature_extractor_pb2 as f; "
        "r = P.Recipe(resolution=32, steps=400, batch_size=4, num_train_images=3, "
        "num_val_images=2, warmup_steps=1); "
        f"P.pretrain(f.FeatureExtractor(type='mobilenet_v2', depth_multiplier=0.35), r, "
        f"{str(out)!r}, progress=False, checkpoint_every=2)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    partial = tmp_path / "w.h5.partial"
    deadline = time.time() + 240
    while not (partial / "checkpoint").exists():
        assert proc.poll() is None, "the pretraining ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.5)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    import tensorflow as tf

    saved_step = int(
        tf.train.load_checkpoint(str(partial)).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")
    )
    assert saved_step >= 2
    recipe = pretrain.Recipe(
        resolution=32,
        steps=saved_step + 2,
        batch_size=4,
        num_train_images=3,
        num_val_images=2,
        warmup_steps=1,
    )
    report = pretrain.pretrain(_extractor(), recipe, str(out), progress=False)
    assert report.steps == saved_step + 2
    assert report.resumed_from == saved_step
    assert out.exists() and not partial.exists()


def test_cli_tiny_run_writes_the_weights_a_pipeline_names(tmp_path):
    """The documented command that regenerates the shipped files, on a tiny run."""
    out = tmp_path / "mnv1.h5"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "detbench.pretrain",
            "--extractor",
            "mobilenet_v1",
            "--depth_multiplier",
            "0.25",
            "--resolution",
            "32",
            "--steps",
            "2",
            "--batch_size",
            "4",
            "--num_train_images",
            "3",
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.exists()
    assert "val accuracy" in proc.stdout and f'weights_path: "{out}"' in proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--extractor", "resnet9"], "--extractor 'resnet9': unknown; known:"),
        (["--extractor", "mobilenet_v2", "--steps", "0"], "pretraining steps: must be positive"),
        (["--extractor", "mobilenet_v2", "--out", "w.bin"], "ends in .h5"),
    ],
)
def test_cli_bad_arguments_are_one_line_exit_2(args, message):
    proc = subprocess.run(
        [sys.executable, "-m", "detbench.pretrain", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_start_from_pretrained_keeps_what_the_user_gave():
    recipe = pretrain.Recipe(**TINY)
    p = pipeline_pb2.Pipeline()
    p.model.ssd.feature_extractor.type = "mobilenet_v2"
    key = pretrain.start_from_pretrained(p, recipe)
    assert p.model.ssd.feature_extractor.weights_path == pretrain.REFERENCE_PREFIX + key
    own = pipeline_pb2.Pipeline()
    own.model.ssd.feature_extractor.weights_path = "/my/imagenet.h5"
    assert pretrain.start_from_pretrained(own, recipe) is None
    assert own.model.ssd.feature_extractor.weights_path == "/my/imagenet.h5"
    ckpt = pipeline_pb2.Pipeline()
    ckpt.model.ssd.feature_extractor.type = "mobilenet_v2"
    ckpt.train_config.fine_tune_checkpoint = "/my/ckpt"
    assert pretrain.start_from_pretrained(ckpt, recipe) is None
    assert not ckpt.model.ssd.feature_extractor.weights_path


def test_a_missing_reference_fails_training_but_not_evaluation():
    from detbench.feature_extractors.base import build_feature_extractor

    config = _extractor()
    config.weights_path = pretrain.REFERENCE_PREFIX + "mobilenet_v2-x0.35-r32-000000000000"
    with pytest.raises(
        ConfigError, match="weights_path: pretrained:mobilenet_v2.*detbench pretrain"
    ):
        build_feature_extractor(config, is_training=True).load_weights()
    assert build_feature_extractor(config, is_training=False).load_weights() == 0


def test_the_default_sweep_starts_from_the_shipped_weights():
    """Every extractor the default sweep trains has its pretrained file in pretrained/."""
    from detbench.config import load_sweep
    from detbench.config.grid import expand_grid
    from detbench.config.validate import meta_arch_config

    path = os.path.join(REPO_ROOT, "configs/speed_accuracy.pbtxt")
    grid = expand_grid(load_sweep(path), path)
    refs = {
        meta_arch_config(c.train_pipeline)[1].feature_extractor.weights_path for c in grid.cells
    }
    assert len(refs) >= 2 and all(r.startswith(pretrain.REFERENCE_PREFIX) for r in refs)
    for ref in refs:
        found = pretrain.resolve_reference(ref)
        assert found and found.startswith(pretrain.SHIPPED_DIR), ref
        with open(found[:-3] + ".json", encoding="utf-8") as f:
            assert json.load(f)["val_accuracy"] > 0.5
