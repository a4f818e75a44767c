"""TF-slim classification checkpoints load into our extractors.

Networks tf_slim.nets builds (resnet_v1, inception_v2, inception_v3, vgg_16) are
built in graph mode with random weights (a small normalizer_fn creates slim's
BatchNorm variables: slim.batch_norm does not run with these versions) and saved
with tf.compat.v1.train.Saver; feature maps are compared on the same preprocessed
image. mobilenet_v1 / mobilenet_v2 checkpoints are written with the published
variable names from a keras.applications reference's random weights (the slim
name of each keras layer by hand), inception_resnet_v2 with the published names
and shapes and checked variable by variable.
"""

import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from detbench.errors import ConfigError
from tests.feature_extractors.weights_helpers import (
    assert_same_map,
    image,
    random_value,
    shared_extractor,
    slim_batch_norm,
)

v1 = tf.compat.v1


def slim_checkpoint(path, net_fn, x, scale, endpoint, batch_norm=True):
    """Build ``net_fn`` on ``x`` (numpy, preprocessed) in a graph, randomize, save to
    ``path``; return the endpoint's value and the number of saved values."""
    import tf_slim as slim

    graph = tf.Graph()
    with graph.as_default():
        inputs = v1.placeholder(tf.float32, x.shape)
        normalizer = slim_batch_norm if batch_norm else None
        with (
            slim.arg_scope(
                [slim.conv2d, slim.separable_conv2d],
                normalizer_fn=normalizer,
                normalizer_params={"scale": scale},
            ),
            slim.arg_scope([slim.max_pool2d], padding="SAME"),
        ):
            end_points = net_fn(inputs)
        variables = v1.global_variables()
        rng = np.random.RandomState(0)
        with v1.Session() as sess:
            for v in variables:
                v.load(random_value(v.name, tuple(v.shape), rng), sess)
            v1.train.Saver(variables).save(sess, path, write_meta_graph=False)
            return sess.run(end_points[endpoint], {inputs: x}), len(variables)


def load(fe, path):
    fe.weights_path = path
    return fe.load_weights()


@pytest.mark.parametrize(
    "model_id",
    [50, pytest.param(101, marks=pytest.mark.slow), pytest.param(152, marks=pytest.mark.slow)],
)
def test_resnet_v1(tmp_path, model_id):
    """slim puts each group's stride on its last unit (ours on the first): the networks
    agree up to block1/unit_2, at an odd side (SAME = slim's conv2d_same there). Deeper,
    each group's last unit holds the checkpoint's last unit of that block (ResNet-101: 23
    units in block3, ResNet-152: 8 in block2 and 36 in block3)."""
    from tf_slim.nets import resnet_v1

    scope = f"resnet_v1_{model_id}"
    fe = shared_extractor(f"resnet{model_id}_v1")
    x = fe.preprocess(image(65)).numpy()
    path = str(tmp_path / f"{scope}.ckpt")
    expected, saved = slim_checkpoint(
        path,
        lambda i: getattr(resnet_v1, scope)(i, num_classes=7, is_training=False)[1],
        x,
        True,
        f"{scope}/block1/unit_2/bottleneck_v1",
    )
    report = load(fe, path)
    assert report.format == "TF-slim checkpoint"
    assert (report.loaded, report.skipped, report.left_at_init) == (
        len(fe.build_backbone().variables),
        2,
        0,
    )
    assert report.loaded + report.skipped == saved
    y = x
    for layer in fe._stem + fe._groups[0][:2]:
        y = layer(y)
    assert_same_map(y, expected)
    reader = tf.train.load_checkpoint(path)
    units = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}[model_id]
    for g, n in enumerate(units):
        assert len(fe._groups[g]) == n
        unit = f"{scope}/block{g + 1}/unit_{n}/bottleneck_v1/conv3"
        last = fe._groups[g][-1]
        np.testing.assert_array_equal(
            last._conv3.kernel.numpy(), reader.get_tensor(f"{unit}/weights")
        )
        np.testing.assert_array_equal(
            last._norm3.moving_mean.numpy(), reader.get_tensor(f"{unit}/BatchNorm/moving_mean")
        )


@pytest.mark.parametrize("name,side", [("inception_v2", 64), ("inception_v3", 75)])
def test_inception(tmp_path, name, side):
    from tf_slim.nets import inception_v2, inception_v3

    net = {
        "inception_v2": lambda i: inception_v2.inception_v2(i, num_classes=7, is_training=False)[1],
        "inception_v3": lambda i: inception_v3.inception_v3(
            i, num_classes=7, create_aux_logits=False, is_training=False
        )[1],
    }[name]
    fe = shared_extractor(name)
    x = fe.preprocess(image(side)).numpy()
    path = str(tmp_path / f"{name}.ckpt")
    expected, saved = slim_checkpoint(
        path, net, x, False, "Mixed_5c" if name == "inception_v2" else "Mixed_7c"
    )
    report = load(fe, path)
    assert (report.loaded, report.left_at_init) == (len(fe.build_backbone().variables), 0)
    assert report.loaded + report.skipped == saved
    assert_same_map(fe.build_backbone()(x), expected)


def vgg_16_body(inputs):
    """tf_slim.nets.vgg.vgg_16's convolutions and pools, its scopes (its fc6 is a 7x7 VALID
    convolution of 102M weights, needing 224 px: here a 1x1 ``fc8`` stands for the head)."""
    import tf_slim as slim

    with tf.compat.v1.variable_scope("vgg_16"):
        net, end_points = inputs, {}
        for b, n in enumerate((2, 2, 3, 3, 3), start=1):
            net = slim.repeat(
                net, n, slim.conv2d, (64, 128, 256, 512, 512)[b - 1], [3, 3], scope=f"conv{b}"
            )
            net = slim.max_pool2d(net, [2, 2], scope=f"pool{b}")
        end_points["vgg_16/pool5"] = net
        slim.conv2d(net, 7, [1, 1], normalizer_fn=None, scope="fc8")
        return end_points


def test_vgg_16_takes_rgb_ours_bgr(tmp_path):
    fe = shared_extractor("vgg16")
    ours = fe.preprocess(image(64)).numpy()
    path = str(tmp_path / "vgg_16.ckpt")
    expected, saved = slim_checkpoint(
        path,
        vgg_16_body,
        np.ascontiguousarray(ours[..., ::-1]),
        False,
        "vgg_16/pool5",
        batch_norm=False,
    )
    report = load(fe, path)
    assert (report.loaded, report.skipped, report.left_at_init) == (26, 2, 0)
    assert report.loaded + report.skipped == saved
    assert_same_map(fe.build_backbone()(ours), expected)


# -- published names -------------------------------------------------------------


def write_checkpoint(path, values):
    """A TF1 name-based checkpoint holding ``{name: array}``."""
    graph = tf.Graph()
    with graph.as_default():
        variables = [v1.get_variable(name, initializer=value) for name, value in values.items()]
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            v1.train.Saver(variables).save(sess, path, write_meta_graph=False)


def keras_to_slim(ref, scope, layer_name):
    """``{slim name: value}`` of a keras reference; ``layer_name(keras layer) -> slim layer``."""
    out = {}
    names = {"kernel": "weights", "depthwise_kernel": "depthwise_weights", "bias": "biases"}
    for layer in ref.layers:
        for w in layer.weights:
            attr = w.name.split("/")[-1].split(":")[0]
            unit, bn = layer_name(layer.name)
            out[f"{scope}/{unit}/" + (f"BatchNorm/{attr}" if bn else names[attr])] = w.numpy()
    return out


def mobilenet_v1_slim_name(layer):
    bn = layer.endswith("_bn")
    base = layer[:-3] if bn else layer
    if base == "conv1":
        return "Conv2d_0", bn
    kind, _, i = base.rpartition("_")
    return f"Conv2d_{i}_{'depthwise' if kind == 'conv_dw' else 'pointwise'}", bn


def mobilenet_v2_slim_name(layer):
    if layer in ("Conv1", "bn_Conv1"):
        return "Conv", layer.startswith("bn")
    bn = layer.endswith(("_BN", "_bn"))
    base = layer[:-3] if bn else layer
    if base == "Conv_1":
        return "Conv_1", bn
    if base.startswith("expanded_conv_"):
        return f"expanded_conv/{base[len('expanded_conv_') :]}", bn
    _, i, part = base.split("_")
    return f"expanded_conv_{i}/{part}", bn


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_mobilenet_published_names(tmp_path, name):
    from tests.feature_extractors.weights_helpers import randomize

    build, scope, slim_name, last, depth = {
        "mobilenet_v1": (
            tf_keras.applications.MobileNet,
            "MobilenetV1",
            mobilenet_v1_slim_name,
            "conv_pw_13_relu",
            1024,
        ),
        "mobilenet_v2": (
            tf_keras.applications.MobileNetV2,
            "MobilenetV2",
            mobilenet_v2_slim_name,
            "out_relu",
            1280,
        ),
    }[name]
    ref = build(weights=None, input_shape=(64, 64, 3), include_top=False)
    randomize(ref.weights)
    values = keras_to_slim(ref, scope, slim_name)
    values[f"{scope}/Logits/Conv2d_1c_1x1/weights"] = np.zeros((1, 1, depth, 1001), "float32")
    values[f"{scope}/Logits/Conv2d_1c_1x1/biases"] = np.zeros((1001,), "float32")
    values["global_step"] = np.int64(0)
    path = str(tmp_path / f"{name}_1.0_224.ckpt")
    write_checkpoint(path, values)
    fe = shared_extractor(name)
    report = load(fe, path)
    assert (report.loaded, report.skipped, report.left_at_init) == (len(ref.weights), 3, 0)
    x = fe.preprocess(image(64))
    expected = tf_keras.Model(ref.input, ref.get_layer(last).output)(x)
    assert_same_map(fe.build_backbone()(x), expected)
    # a TF OD API SSD checkpoint: the network under FeatureExtractor/, the detector beside it
    detection = {f"FeatureExtractor/{k}": v for k, v in values.items() if "Logits" not in k}
    detection["BoxPredictor_0/BoxEncodingPredictor/weights"] = np.zeros((1, 1, 8, 12), "float32")
    path = str(tmp_path / "ssd" / "model.ckpt")
    write_checkpoint(path, detection)
    randomize(fe.build_backbone().variables, seed=5)
    report = load(fe, path)
    assert (report.loaded, report.skipped, report.left_at_init) == (len(ref.weights), 2, 0)
    assert_same_map(fe.build_backbone()(x), expected)


def published_inception_resnet_v2():
    """{name: shape} of inception_resnet_v2_2016_08_30.ckpt (slim's inception_resnet_v2.py)."""
    shapes = {}

    def conv(name, k, cin, cout, bn=True):
        kh, kw = (k, k) if isinstance(k, int) else k
        shapes[f"{name}/weights"] = (kh, kw, cin, cout)
        if bn:
            for v in ("beta", "moving_mean", "moving_variance"):
                shapes[f"{name}/BatchNorm/{v}"] = (cout,)
        else:
            shapes[f"{name}/biases"] = (cout,)

    def block(name, cin, branches, up_in):
        for branch, layers in enumerate(branches):
            for layer, k, a, b in layers:
                conv(f"{name}/Branch_{branch}/{layer}", k, a, b)
        conv(f"{name}/Conv2d_1x1", 1, up_in, cin, bn=False)

    n = "InceptionResnetV2"
    for layer, k, a, b in (
        ("Conv2d_1a_3x3", 3, 3, 32),
        ("Conv2d_2a_3x3", 3, 32, 32),
        ("Conv2d_2b_3x3", 3, 32, 64),
        ("Conv2d_3b_1x1", 1, 64, 80),
        ("Conv2d_4a_3x3", 3, 80, 192),
    ):
        conv(f"{n}/{layer}", k, a, b)
    for branch, layers in enumerate(
        (
            [("Conv2d_1x1", 1, 192, 96)],
            [("Conv2d_0a_1x1", 1, 192, 48), ("Conv2d_0b_5x5", 5, 48, 64)],
            [
                ("Conv2d_0a_1x1", 1, 192, 64),
                ("Conv2d_0b_3x3", 3, 64, 96),
                ("Conv2d_0c_3x3", 3, 96, 96),
            ],
            [("Conv2d_0b_1x1", 1, 192, 64)],
        )
    ):
        for layer, k, a, b in layers:
            conv(f"{n}/Mixed_5b/Branch_{branch}/{layer}", k, a, b)
    for i in range(1, 11):
        block(
            f"{n}/Repeat/block35_{i}",
            320,
            (
                [("Conv2d_1x1", 1, 320, 32)],
                [("Conv2d_0a_1x1", 1, 320, 32), ("Conv2d_0b_3x3", 3, 32, 32)],
                [
                    ("Conv2d_0a_1x1", 1, 320, 32),
                    ("Conv2d_0b_3x3", 3, 32, 48),
                    ("Conv2d_0c_3x3", 3, 48, 64),
                ],
            ),
            128,
        )
    conv(f"{n}/Mixed_6a/Branch_0/Conv2d_1a_3x3", 3, 320, 384)
    for layer, k, a, b in (
        ("Conv2d_0a_1x1", 1, 320, 256),
        ("Conv2d_0b_3x3", 3, 256, 256),
        ("Conv2d_1a_3x3", 3, 256, 384),
    ):
        conv(f"{n}/Mixed_6a/Branch_1/{layer}", k, a, b)
    for i in range(1, 21):
        block(
            f"{n}/Repeat_1/block17_{i}",
            1088,
            (
                [("Conv2d_1x1", 1, 1088, 192)],
                [
                    ("Conv2d_0a_1x1", 1, 1088, 128),
                    ("Conv2d_0b_1x7", (1, 7), 128, 160),
                    ("Conv2d_0c_7x1", (7, 1), 160, 192),
                ],
            ),
            384,
        )
    for branch, layers in enumerate(
        (
            [("Conv2d_0a_1x1", 1, 1088, 256), ("Conv2d_1a_3x3", 3, 256, 384)],
            [("Conv2d_0a_1x1", 1, 1088, 256), ("Conv2d_1a_3x3", 3, 256, 288)],
            [
                ("Conv2d_0a_1x1", 1, 1088, 256),
                ("Conv2d_0b_3x3", 3, 256, 288),
                ("Conv2d_1a_3x3", 3, 288, 320),
            ],
        )
    ):
        for layer, k, a, b in layers:
            conv(f"{n}/Mixed_7a/Branch_{branch}/{layer}", k, a, b)
    for scope in [f"Repeat_2/block8_{i}" for i in range(1, 10)] + ["Block8"]:
        block(
            f"{n}/{scope}",
            2080,
            (
                [("Conv2d_1x1", 1, 2080, 192)],
                [
                    ("Conv2d_0a_1x1", 1, 2080, 192),
                    ("Conv2d_0b_1x3", (1, 3), 192, 224),
                    ("Conv2d_0c_3x1", (3, 1), 224, 256),
                ],
            ),
            448,
        )
    conv(f"{n}/Conv2d_7b_1x1", 1, 2080, 1536)
    conv(f"{n}/AuxLogits/Conv2d_1b_1x1", 1, 1088, 128)
    conv(f"{n}/AuxLogits/Conv2d_2a_5x5", 5, 128, 768)
    shapes[f"{n}/AuxLogits/Logits/weights"] = (768, 1001)
    shapes[f"{n}/AuxLogits/Logits/biases"] = (1001,)
    shapes[f"{n}/Logits/Logits/weights"] = (1536, 1001)
    shapes[f"{n}/Logits/Logits/biases"] = (1001,)
    return shapes


@pytest.mark.slow
def test_inception_resnet_v2_published_names(tmp_path):
    rng = np.random.RandomState(0)
    values = {
        k: rng.normal(0, 1, s).astype("float32") for k, s in published_inception_resnet_v2().items()
    }
    path = str(tmp_path / "inception_resnet_v2_2016_08_30.ckpt")
    write_checkpoint(path, values)
    fe = shared_extractor("inception_resnet_v2")
    report = load(fe, path)
    heads = [k for k in values if "Logits" in k]
    assert (report.loaded, report.skipped, report.left_at_init) == (
        len(fe.build_backbone().variables),
        len(heads),
        0,
    )
    # by hand: which of our layers each of these slim layers is
    layers = fe.bank.layers
    n = "InceptionResnetV2"
    for ours, theirs in (
        (layers["Conv2d_1a_3x3"].kernel, f"{n}/Conv2d_1a_3x3/weights"),
        (layers["Mixed_5b_conv3"].kernel, f"{n}/Mixed_5b/Branch_1/Conv2d_0b_5x5/weights"),
        (layers["block35_3_conv6"].kernel, f"{n}/Repeat/block35_3/Branch_2/Conv2d_0c_3x3/weights"),
        (
            layers["block35_3_bn5"].moving_mean,
            f"{n}/Repeat/block35_3/Branch_2/Conv2d_0b_3x3/BatchNorm/moving_mean",
        ),
        (layers["block17_20_conv"].bias, f"{n}/Repeat_1/block17_20/Conv2d_1x1/biases"),
        (layers["Mixed_7a_conv7"].kernel, f"{n}/Mixed_7a/Branch_2/Conv2d_1a_3x3/weights"),
        (layers["block8_10_conv4"].kernel, f"{n}/Block8/Branch_1/Conv2d_0c_3x1/weights"),
        (layers["Conv2d_7b_1x1_bn"].beta, f"{n}/Conv2d_7b_1x1/BatchNorm/beta"),
    ):
        np.testing.assert_array_equal(ours.numpy(), values[theirs])


def test_missing_variable_is_refused(tmp_path):
    from tests.feature_extractors.weights_helpers import randomize

    ref = tf_keras.applications.MobileNet(weights=None, input_shape=(64, 64, 3), include_top=False)
    randomize(ref.weights)
    values = keras_to_slim(ref, "MobilenetV1", mobilenet_v1_slim_name)
    del values["MobilenetV1/Conv2d_7_pointwise/BatchNorm/gamma"]
    path = str(tmp_path / "partial.ckpt")
    write_checkpoint(path, values)
    with pytest.raises(ConfigError) as e:
        load(shared_extractor("mobilenet_v1"), path)
    message = str(e.value)
    assert path in message and "\n" not in message
    assert re.search(
        r"it lacks MobilenetV1/Conv2d_7_pointwise/BatchNorm/gamma for our "
        r"layer_7/\S+/gamma \(512,\)$",
        message,
    ), message
    # a truncated checkpoint: its index lists every variable, the data ends early
    path = str(tmp_path / "truncated.ckpt")
    write_checkpoint(path, keras_to_slim(ref, "MobilenetV1", mobilenet_v1_slim_name))
    data = path + ".data-00000-of-00001"
    with open(data, "rb") as f:
        content = f.read()
    with open(data, "wb") as f:
        f.write(content[: len(content) // 3])
    with pytest.raises(ConfigError) as e:
        load(shared_extractor("mobilenet_v1"), path)
    assert path in str(e.value) and "\n" not in str(e.value)
