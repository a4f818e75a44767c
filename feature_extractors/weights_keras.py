"""Keras Applications ``.h5`` weight files (``save_weights`` of ``tf_keras.applications.*``,
the layout of ``~/.keras/models``) -> detbench backbones, one name map per extractor.

File names are ``layer/variable`` (``conv2_block1_1_conv/kernel``). With-top
files' classifiers (``fc1``, ``fc2``, ``predictions``, MobileNet's
``conv_preds``) are skipped and counted. ResNet's convolutions carry biases
that ours (batch norm after every convolution, no bias) lack: each bias is
folded exactly into the following batch norm's moving mean
(``BN(conv(x) + b)`` with mean ``m`` is ``BN(conv(x))`` with mean ``m - b``).
"""

from detbench.feature_extractors.weight_maps import (
    Entry,
    NameMap,
    batch_norm_entries,
    format_registry,
)

FORMAT = "Keras Applications .h5"
# A layer of Keras Applications' ResNet files (ours is ``conv1``): the file's format
# decides how the ResNet is built, before there is a network to compare names with.
SIGNATURE = "conv1_conv"
KERAS = format_registry(FORMAT)
HEADS = (r"^(fc1|fc2|predictions|conv_preds)/",)
_ATTRS = (
    "kernel",
    "depthwise_kernel",
    "pointwise_kernel",
    "bias",
    "gamma",
    "beta",
    "moving_mean",
    "moving_variance",
)


def conv_bn(conv, attr, norm, name, bn_name, fold=False):
    """Our ``conv.attr`` <- ``name/attr`` and ``norm`` <- ``bn_name/...``."""
    return [Entry(getattr(conv, attr), f"{name}/{attr}")] + batch_norm_entries(
        norm, f"{bn_name}/", fold=f"{name}/bias" if fold else None
    )


def _resnet(extractor, backbone, source):
    conv, norm = extractor._stem[0], extractor._stem[1]
    entries = conv_bn(conv, "kernel", norm, "conv1_conv", "conv1_bn", fold=True)
    for g, units in enumerate(extractor._groups):
        for u, block in enumerate(units):
            name = f"conv{g + 2}_block{u + 1}"
            parts = [("_shortcut", "_norm0", 0)] if block._use_projection else []
            parts += [(f"_conv{i}", f"_norm{i}", i) for i in (1, 2, 3)]
            for conv_attr, norm_attr, i in parts:
                entries += conv_bn(
                    getattr(block, conv_attr),
                    "kernel",
                    getattr(block, norm_attr),
                    f"{name}_{i}_conv",
                    f"{name}_{i}_bn",
                    fold=True,
                )
    return entries


def _mobilenet_v1(extractor, backbone, source):
    blocks = extractor._blocks
    entries = conv_bn(blocks[0]._conv0, "kernel", blocks[0]._norm0, "conv1", "conv1_bn")
    for i, block in enumerate(blocks[1:], start=1):
        entries += conv_bn(
            block._dwconv0, "depthwise_kernel", block._norm0, f"conv_dw_{i}", f"conv_dw_{i}_bn"
        )
        entries += conv_bn(block._conv1, "kernel", block._norm1, f"conv_pw_{i}", f"conv_pw_{i}_bn")
    return entries


def _mobilenet_v2(extractor, backbone, source):
    blocks = extractor._blocks
    entries = conv_bn(blocks[0]._conv0, "kernel", blocks[0]._norm0, "Conv1", "bn_Conv1")
    for i, block in enumerate(blocks[1:-1], start=1):
        name = "expanded_conv" if i == 1 else f"block_{i - 1}"
        if i > 1:
            entries += conv_bn(
                block._conv0, "kernel", block._norm0, f"{name}_expand", f"{name}_expand_BN"
            )
        entries += conv_bn(
            block._conv1,
            "depthwise_kernel",
            block._norm1,
            f"{name}_depthwise",
            f"{name}_depthwise_BN",
        )
        entries += conv_bn(
            block._conv2, "kernel", block._norm2, f"{name}_project", f"{name}_project_BN"
        )
    last = blocks[-1]
    return entries + conv_bn(last._conv0, "kernel", last._norm0, "Conv_1", "Conv_1_bn")


def by_layer_order(extractor, backbone, source):
    """Networks whose layers are keras.applications' in the same order (VGG-16, Inception v3,
    Inception-ResNet-v2): the i-th layer with weights takes the file's i-th (heads aside)."""
    theirs = [
        (name, keys)
        for name, keys in source.layers
        if not any(KERAS.get(extractor.registered_name).skips(k) for k in keys)
    ]
    entries = []
    for i, layer in enumerate(l for l in backbone.layers if l.weights):
        name = theirs[i][0] if i < len(theirs) else f"<layer #{i}: the file has only {len(theirs)}>"
        for attr in _ATTRS:
            var = getattr(layer, attr, None)
            if var is not None:
                entries.append(Entry(var, f"{name}/{attr}"))
    return entries


KERAS.register("resnet50_v1")(NameMap(_resnet, HEADS))
KERAS.register("resnet101_v1")(NameMap(_resnet, HEADS))
KERAS.register("resnet152_v1")(NameMap(_resnet, HEADS))
KERAS.register("mobilenet_v1")(NameMap(_mobilenet_v1, HEADS))
KERAS.register("mobilenet_v2")(NameMap(_mobilenet_v2, HEADS))
KERAS.register("vgg16")(NameMap(by_layer_order, HEADS))
KERAS.register("inception_v3")(NameMap(by_layer_order, HEADS))
KERAS.register("inception_resnet_v2")(NameMap(by_layer_order, HEADS))
