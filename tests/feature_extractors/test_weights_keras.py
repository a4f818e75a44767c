"""Keras Applications .h5 files (save_weights of tf_keras.applications with random weights,
the published files' layout) load into our extractors: from the same raw image, our
preprocess + network give keras' preprocess_input + network, heads skipped and counted,
ResNet's conv biases folded (ResNet end to end: test_weights_resnet_end_to_end.py)."""

import numpy as np
import pytest
import tf_keras

from detbench.errors import ConfigError
from detbench.feature_extractors.weights import load_backbone_weights
from tests.feature_extractors.weights_helpers import (
    assert_same_map,
    extractor,
    image,
    randomize,
    shared_extractor,
)

A = tf_keras.applications


def keras_file(tmp_path, build, seed=0):
    ref = build()
    randomize(ref.weights, seed)
    path = str(tmp_path / "keras.h5")
    ref.save_weights(path)
    return ref, path


def load(fe, path):
    fe.weights_path = path
    return fe.load_weights()


def reference_map(ref, layer, x):
    return tf_keras.Model(ref.input, ref.get_layer(layer).output)(x).numpy()


# (extractor, keras builder, the keras layer ours ends with, side, extractor fields,
#  values skipped (the with-top head), compare ours' output key or None)
CASES = {
    "mobilenet_v1": (
        lambda s: A.MobileNet(weights=None, input_shape=(s, s, 3), classes=7),
        "conv_pw_13_relu",
        64,
        {},
        2,
    ),
    "mobilenet_v2": (
        lambda s: A.MobileNetV2(weights=None, input_shape=(s, s, 3), classes=7),
        "out_relu",
        64,
        {},
        2,
    ),
    "vgg16": (
        lambda s: A.VGG16(weights=None, input_shape=(s, s, 3), classes=7),
        "block5_pool",
        64,
        {},
        6,
    ),
    "inception_v3": (
        lambda s: A.InceptionV3(weights=None, input_shape=(s, s, 3), classes=7),
        "mixed10",
        75,
        {},
        2,
    ),
    "inception_resnet_v2": (
        lambda s: A.InceptionResNetV2(weights=None, input_shape=(s, s, 3), classes=7),
        "conv_7b_ac",
        75,
        {},
        2,
    ),
}


# the keras.applications module whose preprocess_input the files were trained with, and
# the family's normalization it equals
KERAS_MODULE = {
    "mobilenet_v1": "mobilenet",
    "mobilenet_v2": "mobilenet_v2",
    "vgg16": "vgg16",
    "inception_v3": "inception_v3",
    "inception_resnet_v2": "inception_resnet_v2",
}
NORMALIZATION = {name: "SIGNED_UNIT" for name in KERAS_MODULE}
NORMALIZATION["vgg16"] = "CAFFE_BGR"


@pytest.mark.parametrize(
    "name",
    [
        "mobilenet_v1",
        "mobilenet_v2",
        "vgg16",
        "inception_v3",
        pytest.param("inception_resnet_v2", marks=pytest.mark.slow),
    ],
)
def test_keras_applications_file_gives_the_reference_maps(tmp_path, name):
    build, layer, side, fields, head_values = CASES[name]
    ref, path = keras_file(tmp_path, lambda: build(side))
    fe = shared_extractor(name, **fields)
    report = load(fe, path)
    backbone = fe.build_backbone()
    assert report.format == "Keras Applications .h5"
    assert fe.input_normalization == NORMALIZATION[name]
    assert (report.loaded, report.skipped, report.left_at_init, report.folded) == (
        len(backbone.variables),
        head_values,
        0,
        0,
    )
    assert report.loaded + report.skipped == len(ref.weights)
    # end to end: from the same raw image, ours vs keras' own preprocess_input + network
    raw = image(side)
    theirs = getattr(A, KERAS_MODULE[name]).preprocess_input(raw.copy())
    assert_same_map(backbone(fe.preprocess(raw)), reference_map(ref, layer, theirs))


@pytest.mark.parametrize(
    "model_id",
    [50, pytest.param(101, marks=pytest.mark.slow), pytest.param(152, marks=pytest.mark.slow)],
)
def test_keras_resnet_biases_fold_into_batch_norm(tmp_path, model_id):
    """Keras' ResNet puts the stride on the first 1x1 convolution (ours, the Model Garden's,
    on the 3x3): the networks agree up to conv2 (no stride there), at an odd side (SAME
    padding then pads as keras' ZeroPadding2D). Deeper, each group's last unit holds the
    file's last block of that stage (ResNet-101: 23 blocks in conv4, ResNet-152: 8 in conv3
    and 36 in conv4), its kernel as is and its batch norm with the bias folded."""
    build = {50: A.ResNet50, 101: A.ResNet101, 152: A.ResNet152}[model_id]
    ref, path = keras_file(
        tmp_path, lambda: build(weights=None, input_shape=(65, 65, 3), classes=7)
    )
    fe = shared_extractor(f"resnet{model_id}_v1", batch_norm_epsilon=1.001e-5)
    report = load(fe, path)
    convs = sum(1 for w in ref.weights if w.name.endswith("_conv/bias:0"))
    assert (report.folded, report.skipped, report.left_at_init) == (convs, 2, 0)
    assert report.loaded + report.folded + report.skipped == len(ref.weights)
    assert report.loaded == len(fe.build_backbone().variables)
    x = fe.preprocess(image(65))
    assert_same_map(fe.build_backbone()(x)["2"], reference_map(ref, "conv2_block3_out", x))
    # the fold, by hand: conv1's batch norm mean is keras' mean minus keras' bias
    ours = fe._stem[1].moving_mean.numpy()
    theirs = (
        ref.get_layer("conv1_bn").moving_mean.numpy() - ref.get_layer("conv1_conv").bias.numpy()
    )
    np.testing.assert_array_equal(ours, theirs)
    units = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}[model_id]
    for g, n in enumerate(units):
        last = fe._groups[g][-1]
        assert len(fe._groups[g]) == n
        keras = f"conv{g + 2}_block{n}_3"
        np.testing.assert_array_equal(
            last._conv3.kernel.numpy(), ref.get_layer(f"{keras}_conv").kernel.numpy()
        )
        np.testing.assert_array_equal(
            last._norm3.moving_mean.numpy(),
            ref.get_layer(f"{keras}_bn").moving_mean.numpy()
            - ref.get_layer(f"{keras}_conv").bias.numpy(),
        )


def test_keras_depth_multiplier_mismatch_is_refused(tmp_path):
    _, path = keras_file(
        tmp_path,
        lambda: A.MobileNet(weights=None, input_shape=(64, 64, 3), alpha=0.5, include_top=False),
    )
    with pytest.raises(ConfigError) as e:
        load(extractor("mobilenet_v1"), path)
    message = str(e.value)
    assert "\n" not in message and path in message
    assert "layer_0/conv2d/kernel (3, 3, 3, 32) vs the file's conv1/kernel (3, 3, 3, 16)" in message
    assert "depth multiplier" in message


def test_keras_file_of_another_network_is_refused(tmp_path):
    _, path = keras_file(
        tmp_path, lambda: A.MobileNetV2(weights=None, input_shape=(64, 64, 3), include_top=False)
    )
    with pytest.raises(
        ConfigError,
        match=r"keras\.h5: does not match mobilenet_v1 as a Keras "
        r"Applications \.h5 file: it lacks conv1/kernel",
    ):
        load(extractor("mobilenet_v1"), path)


def test_truncated_keras_file_is_refused(tmp_path):
    _, path = keras_file(
        tmp_path, lambda: A.MobileNet(weights=None, input_shape=(64, 64, 3), include_top=False)
    )
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ConfigError) as e:
        load(extractor("mobilenet_v1"), path)
    assert path in str(e.value) and "\n" not in str(e.value)


def test_load_backbone_weights_without_an_extractor_reads_detbench_files_only(tmp_path):
    _, path = keras_file(
        tmp_path, lambda: A.MobileNet(weights=None, input_shape=(64, 64, 3), include_top=False)
    )
    fe = extractor("mobilenet_v1")
    with pytest.raises(ConfigError, match="does not match mobilenet_v1: layer #0 layer_0"):
        load_backbone_weights(fe.build_backbone(), path)
