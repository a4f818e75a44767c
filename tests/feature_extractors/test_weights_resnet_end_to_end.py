"""An ImageNet ResNet file gives the file's own network, end to end from raw pixels.

For each format a reference ResNet-50 is built locally with random He-scaled
weights and non-trivial batch-norm statistics and saved as its users' files
are; our extractor is built with ``weights_path`` and nothing else set, and
from the same raw [0, 255] image our ``preprocess`` + network is compared with
the reference's published preprocessing + network at every level (C2..C5)
and at each output stride the reference can be built at, to 1e-4 of the
map's scale. The stride placement, normalization and epsilon are what the
file's format implies; one depth per format: the placement is the same rule
at every depth (the deeper networks' name maps are checked in
test_weights_keras.py / test_weights_slim.py).

* Keras Applications (``tf_keras.applications.ResNet50``, include_top=False;
  its ``resnet.preprocess_input``: caffe BGR minus means): levels
  conv2_block3_out .. conv5_block3_out.
* TF-slim ``resnet_v1_50`` (tf_slim.nets; vgg_preprocessing's RGB minus the
  means, written out here from its published constants): slim's block
  endpoints are taken after each block's stride, so C2 / C3 / C4 are read
  where slim's atrous rule leaves that block unstrided (``output_stride`` 4,
  8, 16: block1, block2, block3) and C5 from the plain network; the first
  stage at output stride 8 / 16 / 32 against slim's block3 at 8 / 16 / None.
* A TF OD API Faster R-CNN checkpoint (the names of
  ``faster_rcnn_resnet_v1_feature_extractor.py``: ``FirstStageFeatureExtractor/
  resnet_v1_50/...`` for the first stage at output stride 16,
  ``SecondStageFeatureExtractor/resnet_v1_50/block4/...`` for conv5 unstrided,
  its RPN / box predictor variables beside them): first stage and box
  classifier against the OD API's graph (means 123.68, 116.779, 103.939 as its
  ``preprocess`` writes them, within 2e-5 of slim's: inside the bound).
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from detbench.builders.model_builder import build_model
from detbench.config import load_pipeline
from detbench.errors import ConfigError
from detbench.feature_extractors.base import build_feature_extractor
from detbench.feature_extractors.resnet import UNITS
from detbench.protos import feature_extractor_pb2 as pb
from tests.conftest import REPO_ROOT
from tests.feature_extractors.weights_helpers import (
    assert_same_map,
    image,
    random_value,
    randomize,
    slim_batch_norm,
)

v1 = tf.compat.v1
SIDE = 112  # C5 at 7 -> 4: odd sides where the paddings differ
LEVELS = {
    "2": "conv2_block3_out",
    "3": "conv3_block4_out",
    "4": "conv4_block6_out",
    "5": "conv5_block3_out",
}
SLIM_MEANS = np.array([123.68, 116.78, 103.94], np.float32)  # vgg_preprocessing.py
ODAPI_MEANS = np.array([123.68, 116.779, 103.939], np.float32)  # faster_rcnn_resnet_v1 preprocess


def ours(path, meta_arch="faster_rcnn", **fields):
    config = pb.FeatureExtractor(type="resnet50_v1", weights_path=path, **fields)
    fe = build_feature_extractor(config, meta_arch=meta_arch)
    return fe, fe.load_weights()


# -- Keras Applications --------------------------------------------------------------------
@pytest.fixture(scope="module")
def keras_case(tmp_path_factory):
    ref = tf_keras.applications.ResNet50(
        weights=None, include_top=False, input_shape=(SIDE, SIDE, 3)
    )
    randomize(ref.weights)
    path = str(tmp_path_factory.mktemp("keras") / "resnet50_notop.h5")
    ref.save_weights(path)
    raw = image(SIDE)
    x = tf_keras.applications.resnet.preprocess_input(raw.copy())
    levels = tf_keras.Model(ref.input, [ref.get_layer(n).output for n in LEVELS.values()])(x)
    # Table 2's count: keras' parameters without its conv biases (BN follows every conv)
    count = sum(int(np.prod(w.shape)) for w in ref.weights if not w.name.endswith("conv/bias:0"))
    return path, raw, dict(zip(LEVELS, (m.numpy() for m in levels))), count


def test_keras_resnet50_file_is_the_keras_network_from_raw_pixels(keras_case):
    path, raw, expected, count = keras_case
    fe, report = ours(path)
    assert (fe.stride_placement, fe.input_normalization) == ("KERAS", "CAFFE_BGR")
    assert fe.config.batch_norm_epsilon == pytest.approx(1.001e-5)
    assert report.left_at_init == 0
    line = report.summary()
    for word in ("Keras Applications .h5", "KERAS", "CAFFE_BGR", "1.001e-05"):
        assert word in line
    x = fe.preprocess(raw)
    got = fe.build_backbone()(x)
    for level in LEVELS:
        assert_same_map(got[level], expected[level])
    assert_same_map(fe.build_first_stage()(x), expected["4"])
    assert_same_map(fe.build_ssd_feature_maps()(x)[0], expected["4"])
    assert fe.parameter_count(fe.build_backbone()) == count


def test_the_files_normalization_is_the_detectors(keras_case):
    """A detector built from the pipeline (what train, evaluate, export and infer build)
    normalizes as the file: its preprocess gives caffe's BGR minus the means, by hand."""
    path, raw = keras_case[:2]
    pipeline = load_pipeline(
        os.path.join(REPO_ROOT, "configs", "ssd_resnet50_fpn_640.pbtxt"),
        [
            f"model.ssd.image_resizer.fixed_shape.height={SIDE}",
            f"model.ssd.image_resizer.fixed_shape.width={SIDE}",
            f"model.ssd.feature_extractor.weights_path={path}",
        ],
    )
    model = build_model(pipeline.model, is_training=False)
    inputs, _ = model.preprocess(tf.constant(raw))  # the true image at the top left
    caffe = raw[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    np.testing.assert_allclose(inputs.numpy()[:, :SIDE, :SIDE], caffe, rtol=0, atol=1e-4)


def test_a_placement_contradicting_the_file_is_one_line_naming_both(keras_case):
    path = keras_case[0]
    with pytest.raises(ConfigError) as e:
        ours(path, stride_placement=pb.FeatureExtractor.SLIM)
    message = str(e.value)
    assert "\n" not in message
    for word in ("stride_placement: SLIM", path, "Keras Applications .h5", "KERAS"):
        assert word in message
    # the file's own placement said explicitly, another normalization: both taken as set
    config = pb.FeatureExtractor(
        type="resnet50_v1",
        weights_path=path,
        stride_placement=pb.FeatureExtractor.KERAS,
        input_normalization=pb.FeatureExtractor.MEAN_STD,
    )
    fe = build_feature_extractor(config, meta_arch="faster_rcnn")
    assert (fe.stride_placement, fe.input_normalization) == ("KERAS", "MEAN_STD")
    assert fe.config.batch_norm_epsilon == pytest.approx(1.001e-5)  # unset: the file's


# -- TF-slim resnet_v1_50 ---------------------------------------------------------------
def _slim_scope():
    import tf_slim as slim

    return (
        slim.arg_scope(
            [slim.conv2d],
            normalizer_fn=slim_batch_norm,
            normalizer_params={"scale": True, "epsilon": 1e-5},
        ),
        slim.arg_scope([slim.max_pool2d], padding="SAME"),
    )


def _save(sess, path, variables, rng):
    """Random values into every float variable (counters at 0), saved by TF1 name."""
    values = {
        v.initial_value: random_value(v.name, tuple(v.shape), rng)
        for v in variables
        if v.dtype.base_dtype == tf.float32
    }
    sess.run([v.initializer for v in variables], values)
    v1.train.Saver(variables).save(sess, path, write_meta_graph=False)


@pytest.fixture(scope="module")
def slim_case(tmp_path_factory):
    """resnet_v1_50 at output strides 4, 8, 16 and None, sharing one set of variables."""
    from tf_slim.nets import resnet_v1

    raw = image(SIDE, seed=2)
    path = str(tmp_path_factory.mktemp("slim") / "resnet_v1_50.ckpt")
    graph = tf.Graph()
    with graph.as_default():
        inputs = v1.placeholder(tf.float32, raw.shape)
        scopes = _slim_scope()
        with scopes[0], scopes[1]:
            nets = {
                stride: resnet_v1.resnet_v1_50(
                    inputs,
                    num_classes=None,
                    is_training=False,
                    global_pool=False,
                    output_stride=stride,
                    reuse=None if stride == 4 else True,
                )[1]
                for stride in (4, 8, 16, None)
            }
        with v1.Session() as sess:
            _save(sess, path, v1.global_variables(), np.random.RandomState(0))
            wanted = {  # (output stride, block): C2..C5, then the first stage at 8 / 32
                "2": (4, 1),
                "3": (8, 2),
                "4": (16, 3),
                "5": (None, 4),
                8: (8, 3),
                32: (None, 3),
            }
            fetch = {k: nets[s][f"resnet_v1_50/block{b}"] for k, (s, b) in wanted.items()}
            maps = sess.run(fetch, {inputs: raw - SLIM_MEANS})
    return path, raw, maps


def test_slim_resnet_v1_50_checkpoint_is_slims_network_from_raw_pixels(slim_case):
    path, raw, maps = slim_case
    fe, report = ours(path)
    assert (fe.stride_placement, fe.input_normalization) == ("SLIM", "RGB_MEANS")
    assert fe.config.batch_norm_epsilon == pytest.approx(1e-5)
    assert report.left_at_init == 0
    for word in ("TF-slim checkpoint", "SLIM", "RGB_MEANS", "1e-05"):
        assert word in report.summary()
    x = fe.preprocess(raw)
    got = fe.build_backbone()(x)
    for level in LEVELS:
        assert_same_map(got[level], maps[level])
    # output stride 16 (the default): slim's block3 at 16 is C4
    assert_same_map(fe.build_first_stage()(x), maps["4"])
    assert_same_map(fe.build_ssd_feature_maps()(x)[0], maps["4"])


@pytest.mark.parametrize("output_stride", [8, 32])
def test_slim_first_stage_follows_slims_atrous_rule(slim_case, output_stride):
    path, raw, maps = slim_case
    fe, _ = ours(path, output_stride=output_stride)
    assert_same_map(fe.build_first_stage()(fe.preprocess(raw)), maps[output_stride])


# -- TF OD API Faster R-CNN checkpoint --------------------------------------------------
def test_odapi_faster_rcnn_checkpoint_starts_first_stage_and_box_classifier(tmp_path):
    """The OD API's FasterRCNNResnetV1FeatureExtractor: resnet_v1_50 at output stride 16
    under FirstStageFeatureExtractor/ (block3 is the first stage; its block4 is built but
    unused) and block4 again, unstrided, under SecondStageFeatureExtractor/resnet_v1_50/."""
    from tf_slim.nets import resnet_utils, resnet_v1

    raw = image(SIDE, seed=3)
    crops = np.random.RandomState(4).normal(0, 1, (2, 7, 7, 1024)).astype("float32")
    path = str(tmp_path / "model.ckpt")
    graph = tf.Graph()
    with graph.as_default():
        inputs = v1.placeholder(tf.float32, raw.shape)
        crop_input = v1.placeholder(tf.float32, crops.shape)
        scopes = _slim_scope()
        with scopes[0], scopes[1]:
            with v1.variable_scope("FirstStageFeatureExtractor"):
                _, points = resnet_v1.resnet_v1_50(
                    inputs, num_classes=None, is_training=False, global_pool=False,
                    output_stride=16,
                )  # fmt: skip
            with v1.variable_scope("SecondStageFeatureExtractor/resnet_v1_50"):
                unit = {"depth": 2048, "depth_bottleneck": 512, "stride": 1}
                blocks = [resnet_utils.Block("block4", resnet_v1.bottleneck, [unit] * 3)]
                classifier = resnet_utils.stack_blocks_dense(crop_input, blocks)
        v1.get_variable("FirstStageBoxPredictor/BoxEncodingPredictor/weights", [1, 1, 1024, 48])
        v1.get_variable("global_step", [], tf.int64, initializer=v1.zeros_initializer())
        with v1.Session() as sess:
            variables = v1.global_variables()
            _save(sess, path, variables, np.random.RandomState(5))
            feed = {inputs: raw - ODAPI_MEANS, crop_input: crops}
            first_stage, box = sess.run(
                [points["FirstStageFeatureExtractor/resnet_v1_50/block3"], classifier], feed
            )
    fe, report = ours(path)
    assert report.format == "TF OD API Faster R-CNN checkpoint"
    assert (fe.stride_placement, fe.input_normalization) == ("SLIM", "RGB_MEANS")
    assert report.left_at_init == 0
    # skipped: the first stage's unused block4, the box predictor, global_step
    block4 = sum(
        1 for v in variables if "FirstStageFeatureExtractor/resnet_v1_50/block4/" in v.name
    )
    assert report.skipped == block4 + 2
    assert_same_map(fe.build_first_stage()(fe.preprocess(raw)), first_stage)
    assert_same_map(fe.build_box_classifier()(crops), box.mean(axis=(1, 2)))
    # conv5 came from the second scope, value for value
    reader = tf.train.load_checkpoint(path)
    name = "SecondStageFeatureExtractor/resnet_v1_50/block4/unit_3/bottleneck_v1/conv3/weights"
    np.testing.assert_array_equal(fe._groups[3][2]._conv3.kernel.numpy(), reader.get_tensor(name))
    assert len(fe._groups[3]) == UNITS[50][3]
