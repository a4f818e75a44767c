"""The deployment axes (runtime, precision, batch_size) on a tiny SSD: every cell is timed
and evaluated on its own artifact; impossible combinations are skipped with their reason."""

import os

import numpy as np
import pytest
from google.protobuf import text_format

from detbench.benchmark import cell, runtimes
from detbench.config import load_sweep
from detbench.config.grid import expand_grid
from detbench.errors import ConfigError

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TINY = os.path.join(HERE, "tiny_ssd.pbtxt")
FRCNN = os.path.join(REPO, "configs", "faster_rcnn_inception_v2_600.pbtxt")
ALL = ("fp32", "fp16", "int8_dynamic", "int8", "bf16")


def _grid(tmp_path, axes, bases=(("ssd", TINY),)):
    text = "\n".join(
        [f'base {{ meta_arch: "{m}" pipeline: "{p}" }}' for m, p in bases]
        + [
            f'axis {{ name: "{n}" ' + " ".join(f'values: "{v}"' for v in vs) + " }"
            for n, vs in axes
        ]
    )
    path = tmp_path / "grid.pbtxt"
    path.write_text(text)
    return expand_grid(load_sweep(str(path)), str(path), check_registry=False)


@pytest.mark.parametrize("bf16", [False, True])
def test_grid_skips_impossible_combinations_once_with_their_reason(tmp_path, monkeypatch, bf16):
    monkeypatch.setattr(runtimes, "native_bf16", lambda cpuinfo="": bf16)
    grid = _grid(
        tmp_path,
        [
            ("runtime", ["tf_function", "saved_model", "tflite"]),
            ("precision", ALL),
            ("batch_size", ["1", "4"]),
        ],
        bases=(("ssd", TINY), ("faster_rcnn", FRCNN)),
    )
    got = {
        (c.meta_arch, c.values["runtime"], c.values["precision"], c.values["batch_size"])
        for c in grid.cells
    }
    # by hand: tf_function runs fp32 (+ bf16 on a native CPU), saved_model fp32, tflite
    # (SSD only, batch 1) fp32 fp16 int8_dynamic int8
    want = set()
    for arch in ("ssd", "faster_rcnn"):
        for b in ("1", "4"):
            want |= {(arch, "tf_function", "fp32", b), (arch, "saved_model", "fp32", b)}
            if bf16:
                want.add((arch, "tf_function", "bf16", b))
    want |= {("ssd", "tflite", p, "1") for p in ("fp32", "fp16", "int8_dynamic", "int8")}
    assert got == want
    for c in grid.cells:  # the axes set the test pipeline only: one training per model
        assert c.test_pipeline.deployment.runtime == c.values["runtime"]
        assert not c.train_pipeline.HasField("deployment")
    assert len(grid.trainings()) == 2
    s = grid.skipped
    # 2 archs x 3 runtimes x 5 precisions x 2 batches = 60 combinations
    assert sum(s.values()) + len(grid.cells) == 60
    assert s["runtime tflite: only SSD models export to TFLite, not faster_rcnn"] == 10
    tf_fn = (
        "precision {} on runtime tf_function: it runs fp32, bf16 (fp16 and int8 weights "
        "come from the TFLite converter)"
    )
    assert (
        sum(n for r, n in s.items() if r.startswith("precision ") and "tf_function" in r)
        == 2 * 2 * 3
    )  # fp16, int8_dynamic, int8
    assert s[tf_fn.format("int8")] == 4
    assert (
        s[
            "precision bf16 on runtime saved_model: it runs fp32 (fp16 and int8 weights come "
            "from the TFLite converter)"
        ]
        == 4
    )
    assert s["batch_size > 1 on runtime tflite: its export has a fixed batch of 1"] == 4
    no_bf16 = [r for r in s if r.startswith("precision bf16: this CPU has no native bfloat16")]
    assert len(no_bf16) == (0 if bf16 else 1) and (bf16 or s[no_bf16[0]] == 4)


def test_axis_values_are_checked_and_filterable(tmp_path):
    with pytest.raises(
        ConfigError, match="runtime 'onnx': unknown; known: tf_function, saved_model, tflite"
    ):
        _grid(tmp_path, [("runtime", ["onnx"])])
    with pytest.raises(ConfigError, match="batch_size '0': a positive whole number"):
        _grid(tmp_path, [("batch_size", ["0"])])
    from detbench.benchmark.sweep import parse_filters, select

    grid = _grid(
        tmp_path, [("runtime", ["tf_function", "tflite"]), ("precision", ["fp32", "int8"])]
    )
    kept = select(grid.cells, parse_filters(["runtime=tflite,precision=int8"]))
    assert [c.values for c in kept] == [
        {"meta_arch": "ssd", "runtime": "tflite", "precision": "int8"}
    ]


# -- measured: each runtime / precision and a batch size on the tiny SSD ---------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    from detbench.config import load_pipeline

    pipeline = load_pipeline(TINY)
    pipeline.train_input_reader.synthetic_shapes.cache_dir = str(root / "train")
    pipeline.eval_input_reader.synthetic_shapes.cache_dir = str(root / "val")
    model_dir = str(root / "model")
    cell.run_training(
        {
            "train_pipeline": text_format.MessageToString(pipeline),
            "model_dir": model_dir,
            "train_key": "t",
        }
    )
    return pipeline, model_dir


def _measure(trained, runtime="tf_function", precision="fp32", batch_size=1, calibration=32):
    pipeline, model_dir = trained
    test = type(pipeline)()
    test.CopyFrom(pipeline)
    d = test.deployment
    d.runtime, d.precision, d.batch_size, d.calibration_images = (
        runtime,
        precision,
        batch_size,
        calibration,
    )
    settings = {"num_warmup": 1, "num_runs": 3, "num_timing_images": 2}
    return cell.run_measure(
        {
            "test_pipeline": text_format.MessageToString(test),
            "model_dir": model_dir,
            "settings": settings,
        }
    )


@pytest.fixture(scope="module")
def rows(trained):
    out = {("tf_function", "fp32"): _measure(trained, batch_size=4)}
    out[("saved_model", "fp32")] = _measure(trained, "saved_model")
    for p in ("fp32", "fp16", "int8_dynamic", "int8"):
        out[("tflite", p)] = _measure(trained, "tflite", p, calibration=5)
    return out


def test_each_runtime_and_precision_is_timed_and_evaluated(rows):
    for key, row in rows.items():
        runs = np.array(row["latency_runs_ms"])
        assert len(runs) == 3, key
        for col, q in (("latency_ms", 50), ("latency_p90_ms", 90), ("latency_p99_ms", 99)):
            assert row[col] == pytest.approx(np.percentile(runs, q)), (key, col)
        assert row["num_images"] == 4 and 0.0 <= row["mAP"] <= 1.0, key  # the eval split
        assert "mAP@.50" in row and row["artifact_mb"] > 0, key
    b = rows[("tf_function", "fp32")]
    assert b["throughput_ips"] == pytest.approx(4 / (b["batch_latency_ms"] / 1e3))
    assert rows[("tflite", "fp32")]["throughput_ips"] == pytest.approx(
        1e3 / rows[("tflite", "fp32")]["latency_ms"]
    )
    assert "latency_nopost_ms" in b and "latency_nopost_ms" not in rows[("tflite", "fp32")]


def test_artifact_sizes_follow_the_weights_precision(rows):
    params = rows[("tflite", "fp32")]["params"]
    mb = {p: rows[("tflite", p)]["artifact_mb"] * 2**20 for p in ("fp32", "fp16", "int8")}
    # 4, 2 and 1 bytes per weight, plus the graph (which the weights dominate)
    assert 4 * params * 0.9 < mb["fp32"] < 4 * params * 1.6
    assert mb["fp16"] < mb["fp32"] * 0.65 and mb["int8"] < mb["fp32"] * 0.4
    # tf_function ships the model's float32 variables alone (the training checkpoint
    # also holds Adam's two slots per trainable weight: about 3x)
    weights = rows[("tf_function", "fp32")]["artifact_mb"] * 2**20
    assert 4 * params <= weights < 4 * params * 1.15


def test_int8_calibration_count_is_recorded(rows, trained):
    assert rows[("tflite", "int8")]["calibration_images"] == 5
    assert "calibration_images" not in rows[("tflite", "int8_dynamic")]
    from detbench.export import tflite

    pipeline, _ = trained
    # more than the training split holds (8 images): all of them
    assert len(tflite.calibration_images(pipeline, 100, 64, 64)) == 8


def test_tflite_detector_detects_what_the_model_detects(trained):
    """Evaluation reads the artifact's own detections through its detector (resize to the
    TFLite input, then the interpreter): at fp32 they agree with the model run in-process
    (same weights), image by image. (SavedModel == model: tests/export.)"""
    import tensorflow as tf

    from detbench import data
    from detbench.builders.model_builder import build_model
    from detbench.evaluation.runner import restore_model

    pipeline, model_dir = trained
    model = build_model(pipeline.model, is_training=False)
    ds = data.build_dataset(pipeline.eval_input_reader, 1, training=False)
    images = [b["image"] for b in ds.take(2)]
    inputs, shapes = model.preprocess(tf.cast(images[0], tf.float32))
    restore_model(model, model_dir, {"image": inputs, "true_shape": shapes})
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        transform, detect = runtimes.RUNTIMES.get("tflite")(model, pipeline, {}, work).detector
        for image in images:
            want = model.detect(image)
            x, shape = transform(image[0])
            assert list(shape.numpy()) == [64, 64, 3]
            got = detect(x[None], shape[None])
            top = want["detection_scores"][0].numpy() > 0.05
            assert top.sum() >= 1
            np.testing.assert_allclose(
                np.asarray(got["detection_scores"])[0][top],
                want["detection_scores"][0].numpy()[top],
                atol=2e-3,
            )
            np.testing.assert_allclose(
                np.asarray(got["detection_boxes"])[0][top],
                want["detection_boxes"][0].numpy()[top],
                atol=2e-3,
            )


def test_bf16_predictions_reach_post_processing_as_float32():
    import tensorflow as tf

    class Model:
        def predict(self, inputs, shapes, training=False):
            return {"box_encodings": tf.cast(inputs, tf.bfloat16), "anchors": shapes}

    m = runtimes.float32_predictions(Model())
    out = m.predict(tf.constant([[1.5, -2.25]]), tf.constant([3]))
    assert out["box_encodings"].dtype == tf.float32 and out["anchors"].dtype == tf.int32
    np.testing.assert_array_equal(out["box_encodings"].numpy(), [[1.5, -2.25]])
