"""Export for serving: SavedModels of each input type loaded in a process without
detbench, TFLite (SSD), bad requests, the CLI's errors.

A tiny SSD is trained a few steps with train() on a synthetic set; a tiny Faster
R-CNN is saved untrained (its detections are still deterministic). Every
SavedModel is then served, in ONE fresh Python process that never imports
detbench, on real images of the synthetic set, and its detections are compared
with the in-process model's on the same decoded pixels.
"""

import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image

from detbench.core import post_processing
from detbench.data import synthetic, tfrecord
from detbench.errors import run_cli
from detbench.export import exporter
from detbench.export.__main__ import main as export_main
from detbench.export.tflite import builtin_nms
from detbench.protos import pipeline_pb2
from tests.meta_arch.tiny_extractor import register

register()

SSD_SIZE = 64
READER = """synthetic_shapes {{ num_images: {n} image_size: 64 num_classes: 3 seed: 3
                                cache_dir: "{cache}" split: "{split}" }}"""
SSD = """
model { ssd {
  num_classes: 3
  image_resizer { fixed_shape { height: 64 width: 64 } }
  feature_extractor { type: "test_tiny" weight_decay: 0.0 }
  post_processing { batch_non_max_suppression { score_threshold: 0.05 iou_threshold: 0.5
                    max_detections_per_class: 10 max_total_detections: 10 } }
} }
"""
FASTER_RCNN = """
model { faster_rcnn {
  num_classes: 3
  image_resizer { keep_aspect_ratio { min_dimension: 64 max_dimension: 96 } }
  feature_extractor { type: "test_tiny" output_stride: 16 weight_decay: 0.0 }
  rpn { anchor_generator { grid { base_size: 32 } } conv_depth: 16
        max_proposals_train: 32 max_proposals: 50 pre_nms_top_k: 200 }
  second_stage_sampler { batch_size: 16 }
  second_stage_post_processing { batch_non_max_suppression {
    score_threshold: 0.0 iou_threshold: 0.6 max_detections_per_class: 5
    max_total_detections: 8 } }
} }
"""
TRAIN = """
train_config { batch_size: 2 num_steps: 12 log_every_n_steps: 0 checkpoint_every_n_steps: 0
               add_regularization_loss: false
               optimizer { adam { learning_rate { constant { learning_rate: 0.003 } } } } }
"""
NUM_PROPOSALS = 7


def _pipeline(model_text, cache):
    text = (
        model_text
        + TRAIN
        + "train_input_reader { "
        + READER.format(n=4, cache=cache, split="train")
        + " }"
        + "eval_input_reader { shuffle: false "
        + READER.format(n=2, cache=cache, split="val")
        + " }"
    )
    return text_format.Parse(text, pipeline_pb2.Pipeline())


def _encode(pixels, fmt):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _serialized_example(encoded, height, width, source_id):
    return tfrecord.make_tf_example(
        encoded,
        "jpeg",
        height,
        width,
        source_id,
        f"{source_id}.jpg",
        [[0.1, 0.1, 0.5, 0.5]],
        [1],
        ["circle"],
        [0],
        [10.0],
    ).SerializeToString()


def _detect(model, pixels):
    """The in-process model's detections for one uint8 image [H, W, 3]."""
    detect = tf.function(lambda images: exporter._outputs(model.detect(images)))
    return {k: v.numpy()[0] for k, v in detect(tf.constant(pixels)[None]).items()}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Trained SSD + untrained Faster R-CNN checkpoints, their exports, test images,
    and the in-process detections to compare with."""
    root = tmp_path_factory.mktemp("export")
    cache = str(root / "synthetic")
    ssd = _pipeline(SSD, cache)
    from detbench.train.trainer import train

    train(ssd, str(root / "ssd_model"), progress=False)

    frcnn = _pipeline(FASTER_RCNN, cache)
    frcnn.model.faster_rcnn.rpn.max_proposals = 50
    from detbench.builders.model_builder import build_model

    model = build_model(frcnn.model, is_training=False)
    model.predict(*model.preprocess(tf.zeros([1, 64, 64, 3])))
    frcnn_ckpt = tf.train.Checkpoint(model=model).save(str(root / "frcnn_model" / "ckpt"))

    # real images of the synthetic set: a JPEG file of the written set, and a
    # non-square PNG of another synthetic image (a different size in one batch)
    image_dir, _ = synthetic.write_dataset(
        str(root / "images"),
        2,
        image_size=SSD_SIZE,
        num_classes=3,
        seed=11,
        split="val",
        progress=False,
    )
    jpeg_path = os.path.join(image_dir, "val_000000.jpg")
    jpeg = open(jpeg_path, "rb").read()
    big, _ = synthetic.generate_image(11, "val", 1, image_size=120, num_classes=3)
    png = _encode(np.ascontiguousarray(big[10:100]), "PNG")  # 90 x 120
    pixels = [tf.io.decode_image(b, channels=3).numpy() for b in (jpeg, png)]
    example = _serialized_example(jpeg, SSD_SIZE, SSD_SIZE, "1")
    files = {}
    for name, data in (
        ("a.jpg", jpeg),
        ("b.png", png),
        ("a.example", example),
        ("garbage", b"this is not an image"),
        ("empty.example", tf.train.Example().SerializeToString()),
    ):
        files[name] = str(root / name)
        with open(files[name], "wb") as f:
            f.write(data)
    np.save(root / "a.npy", pixels[0][None])
    np.save(root / "ab.npy", np.stack([pixels[0], pixels[0][::-1]]))  # same size, two images

    out = {t: str(root / f"ssd_{t}") for t in exporter.INPUT_TYPES}
    saved = {
        t: exporter.export_saved_model(ssd, str(root / "ssd_model"), out[t], input_type=t)
        for t in exporter.INPUT_TYPES
    }
    out["frcnn"] = str(root / "frcnn")
    saved["frcnn"] = exporter.export_saved_model(
        frcnn,
        frcnn_ckpt,
        out["frcnn"],
        input_type="encoded_image_string_tensor",
        num_proposals=NUM_PROPOSALS,
    )

    ssd_model, _ = exporter.load_model(ssd, str(root / "ssd_model"))
    frcnn.model.faster_rcnn.rpn.max_proposals = NUM_PROPOSALS  # what the export runs
    frcnn_model, _ = exporter.load_model(frcnn, frcnn_ckpt)
    expected = {
        "ssd_a": _detect(ssd_model, pixels[0]),
        "ssd_b": _detect(ssd_model, pixels[1]),
        "ssd_a_flipped": _detect(ssd_model, pixels[0][::-1]),
        "frcnn_a": _detect(frcnn_model, pixels[0]),
        "frcnn_b": _detect(frcnn_model, pixels[1]),
    }
    return dict(
        root=root,
        ssd=ssd,
        out=out,
        saved=saved,
        files=files,
        pixels=pixels,
        expected=expected,
        ssd_model_dir=str(root / "ssd_model"),
    )


# The client: plain TensorFlow, no detbench. Requests: a .npy (uint8 batch) or
# files whose bytes form a string batch; "bad" requests record the error.
CLIENT = textwrap.dedent("""
    import contextlib, io, json, sys
    import numpy as np
    import tensorflow as tf
    assert "detbench" not in sys.modules
    from tensorflow.python.tools.saved_model_cli import main as saved_model_cli
    plan_path, result_path = sys.argv[1:3]
    plan = json.load(open(plan_path))
    results, shown, loaded = {}, {}, {}
    for name, req in plan["requests"].items():
        if req["model"] not in loaded:
            loaded[req["model"]] = tf.saved_model.load(req["model"])
        serve = loaded[req["model"]].signatures["serving_default"]
        if "npy" in req:
            value = np.load(req["npy"])
            if req.get("cast"):
                value = value.astype(req["cast"])
        else:
            value = [open(p, "rb").read() for p in req["files"]]
        if req.get("scalar"):
            value = value[0]
        try:
            out = serve(input_tensor=tf.constant(value))
            results[name] = {k: v.numpy().tolist() for k, v in out.items()}
        except Exception as e:  # recorded for the test to check type and message
            results[name] = {"error": type(e).__name__, "message": str(e)}
    for path, model in loaded.items():
        asset = model.label_map_pbtxt.asset_path.numpy().decode()
        shown[path] = {"label_map": open(asset).read(), "inputs": {
            k: [str(v.dtype.name), v.shape.as_list()] for k, v in
            model.signatures["serving_default"].structured_input_signature[1].items()}}
        sys.argv = ["saved_model_cli", "show", "--all", "--dir", path]
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            try:
                saved_model_cli()
            except SystemExit:
                pass
        shown[path]["cli"] = buffer.getvalue()
    assert "detbench" not in sys.modules
    json.dump({"results": results, "shown": shown,
               "detbench_imported": "detbench" in sys.modules}, open(result_path, "w"))
""")


@pytest.fixture(scope="module")
def served(work):
    saved, files, root = work["saved"], work["files"], work["root"]
    requests = {
        "image_tensor": {
            "model": saved["image_tensor"],
            "npy": str(root / "a.npy"),
            "scalar": False,
        },
        "image_tensor_batch": {"model": saved["image_tensor"], "npy": str(root / "ab.npy")},
        "bytes_two_sizes": {
            "model": saved["encoded_image_string_tensor"],
            "files": [files["a.jpg"], files["b.png"]],
        },
        "tf_example": {"model": saved["tf_example"], "files": [files["a.example"]]},
        "frcnn_two_sizes": {"model": saved["frcnn"], "files": [files["a.jpg"], files["b.png"]]},
        "bad_dtype": {
            "model": saved["image_tensor"],
            "npy": str(root / "ab.npy"),
            "cast": "float32",
        },
        "bad_rank": {"model": saved["image_tensor"], "npy": str(root / "ab.npy"), "scalar": True},
        "bad_bytes": {
            "model": saved["encoded_image_string_tensor"],
            "files": [files["a.jpg"], files["garbage"]],
        },
        "bad_bytes_rank": {
            "model": saved["encoded_image_string_tensor"],
            "files": [files["a.jpg"]],
            "scalar": True,
        },
        "bad_string_for_images": {"model": saved["image_tensor"], "files": [files["a.jpg"]]},
        "bad_example": {"model": saved["tf_example"], "files": [files["a.jpg"]]},
        "bad_example_text": {"model": saved["tf_example"], "files": [files["garbage"]]},
        "example_without_image": {
            "model": saved["tf_example"],
            "files": [files["a.example"], files["empty.example"]],
        },
    }
    plan_path, result_path = root / "plan.json", root / "served.json"
    plan_path.write_text(json.dumps({"requests": requests}))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT, str(plan_path), str(result_path)],
        cwd=str(root),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(result_path.read_text())
    assert served["detbench_imported"] is False
    return served


def _assert_same(got, want, image=0):
    """Served detections (JSON lists, a batch) == in-process ones (one image)."""
    n = int(want["num_detections"])
    assert n > 0
    assert int(got["num_detections"][image]) == n
    np.testing.assert_allclose(
        np.array(got["detection_boxes"][image])[:n], want["detection_boxes"][:n], atol=1e-4
    )
    np.testing.assert_allclose(
        np.array(got["detection_scores"][image])[:n], want["detection_scores"][:n], atol=1e-4
    )
    np.testing.assert_array_equal(
        np.array(got["detection_classes"][image])[:n], want["detection_classes"][:n]
    )


# -- SavedModel: layout, files, signatures ------------------------------------
def test_layout_pipeline_info_and_label_map(work):
    out = work["out"]["image_tensor"]
    assert work["saved"]["image_tensor"] == os.path.join(out, "saved_model", "1")
    for name in (
        "saved_model/1/saved_model.pb",
        "saved_model/1/variables/variables.index",
        "saved_model/1/assets/label_map.pbtxt",
        "saved_model/1/assets/label_map.json",
        "pipeline.pbtxt",
        "export_info.json",
    ):
        assert os.path.isfile(os.path.join(out, name)), name
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no staging left behind
    exported = text_format.Parse(
        open(os.path.join(out, "pipeline.pbtxt")).read(), pipeline_pb2.Pipeline()
    )
    assert exported == work["ssd"]
    info = json.load(open(os.path.join(out, "export_info.json")))
    assert info["meta_architecture"] == "ssd" and info["num_proposals"] is None
    assert info["resolution"] == {"fixed_shape": {"height": 64, "width": 64}}
    assert info["exports"]["saved_model"]["input_type"] == "image_tensor"
    assert info["checkpoint"].endswith("ckpt-12")
    assert info["label_map_source"] == "eval_input_reader"
    # the label map, read back by the data package's reader: synthetic shapes 1..3
    labels = tfrecord.read_label_map(os.path.join(out, "saved_model/1/assets/label_map.pbtxt"))
    assert labels == {1: "circle", 2: "square", 3: "triangle"}
    as_json = json.load(open(os.path.join(out, "saved_model/1/assets/label_map.json")))
    assert [c["original_id"] for c in as_json["categories"]] == [1, 2, 3]

    frcnn_info = json.load(open(os.path.join(work["out"]["frcnn"], "export_info.json")))
    assert frcnn_info["num_proposals"] == NUM_PROPOSALS
    assert frcnn_info["resolution"]["keep_aspect_ratio"]["min_dimension"] == 64
    assert frcnn_info["exports"]["saved_model"]["input_type"] == "encoded_image_string_tensor"
    frcnn_pipeline = open(os.path.join(work["out"]["frcnn"], "pipeline.pbtxt")).read()
    assert f"max_proposals: {NUM_PROPOSALS}" in frcnn_pipeline


def test_signatures_are_dynamic_batch(work, served):
    shown = served["shown"]
    images = shown[work["saved"]["image_tensor"]]
    assert images["inputs"] == {"input_tensor": ["uint8", [None, None, None, 3]]}
    for kind in ("encoded_image_string_tensor", "tf_example", "frcnn"):
        assert shown[work["saved"][kind]]["inputs"] == {"input_tensor": ["string", [None]]}
        assert "shape: (-1)\n" in shown[work["saved"][kind]]["cli"]
        assert "circle" in shown[work["saved"][kind]]["label_map"]
    cli = images["cli"]
    assert "signature_def['serving_default']" in cli
    assert "shape: (-1, -1, -1, 3)" in cli
    for key in ("detection_boxes", "detection_scores", "detection_classes", "num_detections"):
        assert f"outputs['{key}']" in cli
    assert "shape: (-1, 10, 4)" in cli  # boxes: dynamic batch, max_total_detections


def test_saved_model_cli_binary_lists_the_signature(work):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.run(
        [cli, "show", "--all", "--dir", work["saved"]["tf_example"]],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "signature_def['serving_default']:" in proc.stdout
    assert "inputs['input_tensor'] tensor_info:" in proc.stdout
    assert "dtype: DT_STRING" in proc.stdout and "shape: (-1)" in proc.stdout
    assert "outputs['detection_boxes']" in proc.stdout


# -- the served detections equal the in-process model's -----------------------
def test_image_tensor_matches_in_process(work, served):
    results, expected = served["results"], work["expected"]
    _assert_same(results["image_tensor"], expected["ssd_a"])
    _assert_same(results["image_tensor_batch"], expected["ssd_a"], image=0)
    _assert_same(results["image_tensor_batch"], expected["ssd_a_flipped"], image=1)


def test_encoded_images_of_two_sizes_match_each_image_alone(work, served):
    got = served["results"]["bytes_two_sizes"]
    _assert_same(got, work["expected"]["ssd_a"], image=0)
    _assert_same(got, work["expected"]["ssd_b"], image=1)


def test_tf_example_matches_in_process(work, served):
    _assert_same(served["results"]["tf_example"], work["expected"]["ssd_a"])


def test_faster_rcnn_with_num_proposals_matches_in_process(work, served):
    got = served["results"]["frcnn_two_sizes"]
    _assert_same(got, work["expected"]["frcnn_a"], image=0)
    _assert_same(got, work["expected"]["frcnn_b"], image=1)


# -- bad requests: TensorFlow errors naming the problem, the process lives on --
def test_bad_requests_fail_with_tensorflow_errors(served):
    r = served["results"]
    assert r["bad_dtype"]["error"] == "InvalidArgumentError"
    assert "expected to be a uint8 tensor but is a float tensor" in r["bad_dtype"]["message"]
    assert r["bad_string_for_images"]["error"] == "InvalidArgumentError"
    assert "expected to be a uint8 tensor but is a string" in r["bad_string_for_images"]["message"]
    assert r["bad_rank"]["error"] == "InvalidArgumentError"
    assert (
        "Shape of tensor input_tensor [64,64,3] is not compatible with expected shape [?,?,?,3]"
    ) in r["bad_rank"]["message"]
    assert r["bad_bytes_rank"]["error"] == "InvalidArgumentError"
    assert "Shape of tensor input_tensor [] is not compatible" in r["bad_bytes_rank"]["message"]
    assert r["bad_bytes"]["error"] == "InvalidArgumentError"
    assert "Unknown image file format" in r["bad_bytes"]["message"]
    assert r["bad_example"]["error"] == "InvalidArgumentError"
    assert "input_tensor: an element is not a serialized tf.Example" in r["bad_example"]["message"]
    assert r["bad_example_text"]["error"] == "InvalidArgumentError"
    assert (
        "input_tensor: an element is not a serialized tf.Example"
        in r["bad_example_text"]["message"]
    )
    assert r["example_without_image"]["error"] == "InvalidArgumentError"
    assert "image/encoded" in r["example_without_image"]["message"]
    # ... and the good requests after them in the same process were served
    assert "detection_boxes" in r["frcnn_two_sizes"]


# -- TFLite (SSD) --------------------------------------------------------------
def test_tflite_matches_saved_model(work, served, capsys):
    out = work["out"]["image_tensor"]  # beside the SavedModel: export_info.json keeps both
    code = run_cli(
        export_main,
        [
            "--pipeline",
            _write_pipeline(work),
            "--checkpoint",
            work["ssd_model_dir"],
            "--out",
            out,
            "--format",
            "tflite",
        ],
    )
    assert code == 0, capsys.readouterr().err
    path = os.path.join(out, "model.tflite")
    info = json.load(open(os.path.join(out, "export_info.json")))
    assert set(info["exports"]) == {"saved_model", "tflite"}
    assert info["exports"]["tflite"]["input_shape"] == [1, SSD_SIZE, SSD_SIZE, 3]
    assert info["exports"]["tflite"]["select_tf_ops"] == []  # builtins only: no flex delegate
    assert os.path.isfile(os.path.join(out, "label_map.pbtxt"))

    try:  # TF 2.20 deprecates tf.lite.Interpreter for LiteRT's (same API)
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_path=path)
    runner = interpreter.get_signature_runner("serving_default")
    pixels = work["pixels"][0].astype(np.float32)[None]
    got = runner(input_tensor=pixels)
    want = served["results"]["image_tensor"]
    scores = np.array(want["detection_scores"][0])
    top = scores > 0.1  # the top detections (well above the 0.05 threshold)
    assert top.sum() >= 2
    np.testing.assert_allclose(got["detection_scores"][0][top], scores[top], atol=1e-4)
    np.testing.assert_allclose(
        got["detection_boxes"][0][top], np.array(want["detection_boxes"][0])[top], atol=1e-3
    )
    np.testing.assert_array_equal(
        got["detection_classes"][0][top], np.array(want["detection_classes"][0])[top]
    )


@pytest.mark.parametrize(
    "settings",
    [
        dict(score_threshold=0.1, iou_threshold=0.5, max_per_class=4, max_total=6),
        dict(score_threshold=0.0, iou_threshold=0.3, max_per_class=10, max_total=40),  # > C * K
        dict(score_threshold=0.2, iou_threshold=0.6, max_per_class=5, max_total=8, pre_nms_top_k=7),
        dict(
            score_threshold=0.1,
            iou_threshold=0.5,
            max_per_class=5,
            max_total=8,
            class_agnostic=True,
        ),
    ],
)
def test_builtin_nms_equals_the_models_nms(settings):
    """The TFLite graph's NMS (builtins) == core.post_processing's (combined NMS)."""
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 1, (1, 60, 2, 2))
    boxes = np.concatenate([corners.min(2), corners.max(2)], -1).astype(np.float32)
    scores = rng.uniform(0, 1, (1, 60, 3)).astype(np.float32)
    got = builtin_nms(tf.constant(boxes), tf.constant(scores), **settings)
    want = post_processing.batch_multiclass_nms(
        boxes[:, :, None],
        scores,
        settings["score_threshold"],
        settings["iou_threshold"],
        settings["max_per_class"],
        settings["max_total"],
        use_class_agnostic_nms=settings.get("class_agnostic", False),
        pre_nms_top_k=settings.get("pre_nms_top_k"),
    )
    n = int(want["num_detections"][0])
    assert n > 0 and int(got["num_detections"][0]) == n
    for key in ("detection_boxes", "detection_scores", "detection_classes"):
        np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), atol=1e-6, err_msg=key)


def _write_pipeline(work, model_text=None):
    path = work["root"] / ("pipeline_frcnn.pbtxt" if model_text else "pipeline_ssd.pbtxt")
    pipeline = _pipeline(model_text, str(work["root"] / "synthetic")) if model_text else work["ssd"]
    path.write_text(text_format.MessageToString(pipeline))
    return str(path)


# -- CLI errors: one line, exit 2 -----------------------------------------------
def _run(argv, capsys):
    code = run_cli(export_main, argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def test_cli_errors_are_one_line_exit_2(work, tmp_path, capsys):
    ssd = _write_pipeline(work)
    frcnn = _write_pipeline(work, FASTER_RCNN)
    out = str(tmp_path / "out")
    missing = str(tmp_path / "nope")
    err = _run(["--pipeline", ssd, "--checkpoint", missing, "--out", out], capsys)
    assert err == f"error: --checkpoint {missing!r}: not found (no {missing}.index)"
    err = _run(["--pipeline", ssd, "--checkpoint", str(tmp_path), "--out", out], capsys)
    assert "no checkpoint in this folder" in err
    err = _run(
        [
            "--pipeline",
            frcnn,
            "--checkpoint",
            work["ssd_model_dir"],
            "--out",
            out,
            "--format",
            "tflite",
        ],
        capsys,
    )
    assert "only SSD models export to TFLite" in err and "faster_rcnn" in err
    err = _run(
        [
            "--pipeline",
            ssd,
            "--checkpoint",
            work["ssd_model_dir"],
            "--out",
            out,
            "--input_type",
            "jpeg",
        ],
        capsys,
    )
    assert err == (
        "error: --input_type 'jpeg': unknown; known: image_tensor, "
        "encoded_image_string_tensor, tf_example"
    )
    err = _run(
        [
            "--pipeline",
            ssd,
            "--checkpoint",
            work["ssd_model_dir"],
            "--out",
            out,
            "--format",
            "onnx",
        ],
        capsys,
    )
    assert "--format 'onnx': unknown" in err
    err = _run(
        [
            "--pipeline",
            ssd,
            "--checkpoint",
            work["ssd_model_dir"],
            "--out",
            out,
            "--num_proposals",
            "10",
        ],
        capsys,
    )
    assert "--num_proposals applies to two-stage models" in err and "ssd" in err
    err = _run(
        [
            "--pipeline",
            ssd,
            "--checkpoint",
            work["ssd_model_dir"],
            "--out",
            out,
            "--set",
            "model.ssd.no_such_field=1",
        ],
        capsys,
    )
    assert "no_such_field" in err
    assert not os.path.exists(out) or not os.listdir(out)  # nothing half-written


def test_out_dir_of_another_model_is_not_mixed(work, tmp_path):
    """A folder holding a TFLite export of another checkpoint is not given a
    SavedModel whose export_info.json would contradict it."""
    out = tmp_path / "mixed"
    out.mkdir()
    (out / "export_info.json").write_text(
        json.dumps(
            {"checkpoint": "/elsewhere/ckpt-1", "exports": {"tflite": {"path": "model.tflite"}}}
        )
    )
    with pytest.raises(exporter.ExportError, match="holds a tflite export of another"):
        exporter.export_saved_model(work["ssd"], work["ssd_model_dir"], str(out))
