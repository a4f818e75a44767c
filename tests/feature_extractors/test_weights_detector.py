"""A detector starts from a Keras Applications file, a TF-slim checkpoint and a Model Garden
checkpoint (SSD MobileNet v1 at 0.25 width, 64 px): training two steps logs what was loaded,
then the model is evaluated and exported."""

import logging
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from detbench.errors import run_cli
from tests.conftest import REPO_ROOT
from tests.feature_extractors.test_weights_slim import (
    keras_to_slim,
    mobilenet_v1_slim_name,
    write_checkpoint,
)
from tests.feature_extractors.weights_helpers import randomize

CONFIG = os.path.join(REPO_ROOT, "configs", "ssd_mobilenet_v1_300.pbtxt")


def keras_reference():
    ref = tf_keras.applications.MobileNet(
        weights=None, input_shape=(64, 64, 3), alpha=0.25, include_top=False
    )
    randomize(ref.weights)
    return ref


def keras_file(tmp_path):
    path = str(tmp_path / "mobilenet_2_5_224_tf_no_top.h5")
    keras_reference().save_weights(path)
    return path


def slim_file(tmp_path):
    path = str(tmp_path / "mobilenet_v1_0.25_224.ckpt")
    values = keras_to_slim(keras_reference(), "MobilenetV1", mobilenet_v1_slim_name)
    values["global_step"] = np.int64(0)
    write_checkpoint(path, values)
    return path


def garden_file(tmp_path):
    from official.vision.modeling import backbones

    net = backbones.MobileNet(
        model_id="MobileNetV1",
        filter_size_scale=0.25,
        input_specs=tf_keras.layers.InputSpec(shape=[None, None, None, 3]),
    )
    randomize(net.weights)
    return tf.train.Checkpoint(backbone=net).write(str(tmp_path / "garden" / "ckpt"))


def overrides(weights):
    sets = [
        "model.ssd.image_resizer={fixed_shape {height: 64 width: 64}}",
        "model.ssd.feature_extractor.depth_multiplier=0.25",
        "model.ssd.feature_extractor.min_depth=8",
        f'model.ssd.feature_extractor.weights_path="{weights}"',
        "train_config.batch_size=2",
        "train_config.optimizer.momentum.learning_rate.warmup_steps=1",
        "train_input_reader.synthetic_shapes.num_images=4",
        "train_input_reader.synthetic_shapes.image_size=64",
        "eval_input_reader.synthetic_shapes.num_images=2",
        "eval_input_reader.synthetic_shapes.image_size=64",
    ]
    return [a for s in sets for a in ("--set", s)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "fmt,make",
    [
        ("Keras Applications .h5", keras_file),
        ("TF-slim checkpoint", slim_file),
        ("Model Garden checkpoint", garden_file),
    ],
)
def test_detector_trains_evaluates_and_exports_from_each_format(
    tmp_path, caplog, capsys, fmt, make
):
    from detbench.evaluate import main as evaluate_main
    from detbench.export.__main__ import main as export_main
    from detbench.train.__main__ import main as train_main

    caplog.set_level(logging.INFO, logger="detbench.weights")
    weights = make(tmp_path)
    model_dir = str(tmp_path / "model")
    code = run_cli(
        train_main,
        ["--pipeline", CONFIG, "--model_dir", model_dir, "--num_steps", "2", "--no_progress"]
        + overrides(weights),
    )
    assert code == 0, capsys.readouterr().err
    lines = [r.getMessage() for r in caplog.records if r.name == "detbench.weights"]
    assert lines[0].startswith(
        f"feature_extractor.weights_path: {weights} ({fmt}) into mobilenet_v1: loaded 135 variables"
    )
    # the Model Garden trains its MobileNets on mean / std inputs, Keras and slim on [-1, 1]
    normalization = "MEAN_STD" if fmt == "Model Garden checkpoint" else "SIGNED_UNIT"
    assert lines[0].endswith(
        "left 0 of ours at their initial values; built with input normalization "
        f"{normalization}, batch norm epsilon 0.001"
    )
    code = run_cli(
        evaluate_main,
        [
            "--pipeline",
            CONFIG,
            "--checkpoint",
            model_dir,
            "--out",
            str(tmp_path / "eval.json"),
            "--no_progress",
        ]
        + overrides(weights),
    )
    assert code == 0, capsys.readouterr().err
    assert os.path.getsize(tmp_path / "eval.json") > 0
    out = str(tmp_path / "export")
    code = run_cli(
        export_main,
        ["--pipeline", CONFIG, "--checkpoint", model_dir, "--out", out] + overrides(weights),
    )
    assert code == 0, capsys.readouterr().err
    assert any(f == "saved_model.pb" for _, _, files in os.walk(out) for f in files)
