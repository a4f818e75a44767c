"""TF-slim classification checkpoints (the TF Object Detection API model zoo's starting points:
``resnet_v1_50/101/152.ckpt``, ``inception_v2.ckpt``, ``inception_v3.ckpt``,
``inception_resnet_v2_2016_08_30.ckpt``, ``mobilenet_v1_1.0_224.ckpt``,
``mobilenet_v2_1.0_224.ckpt``, ``vgg_16.ckpt``) -> detbench backbones.

Names are slim's scopes (``resnet_v1_50/block1/unit_1/bottleneck_v1/conv1/weights``,
``.../BatchNorm/moving_mean``). A map gives names relative to the file; the
loader finds the network's scope under any outer prefix (a TF OD API detection
checkpoint's ``FeatureExtractor/``) and skips what lies outside it.
Classification heads (``logits``, ``Logits``, ``AuxLogits``, ``fc6``-``fc8``)
are skipped and counted.

Inception modules are matched per module: our convolutions in creation order
against slim's, ordered by branch then by layer name (``Conv2d_0a`` <
``Conv2d_0b`` < ``Conv2d_1a``), the branchless residual projection last; every
shape is checked, so a misordering cannot load silently.
"""

import re

import tf_keras

from detbench.feature_extractors.weight_maps import (
    Entry,
    NameMap,
    batch_norm_entries,
    format_registry,
)

FORMAT = "TF-slim checkpoint"
SLIM = format_registry(FORMAT)
HEADS = (
    r"(^|/)(logits|Logits|AuxLogits|fc6|fc7|fc8|Predictions)/",
    r"(^|/)global_step$",
    r"(^|/)mean_rgb$",
    r"_\d+_Conv2d_\d+_\d+x\d+",
)  # a TF OD API SSD's extra feature-map layers
_KERNELS = {
    "kernel": "weights",
    "depthwise_kernel": "depthwise_weights",
    "pointwise_kernel": "pointwise_weights",
    "bias": "biases",
}


def conv_entries(conv, norm, unit, transform=None):
    """``conv`` (and its batch norm ``norm``) <- slim's layer ``unit``."""
    out = []
    for attr, theirs in _KERNELS.items():
        var = getattr(conv, attr, None)
        if var is not None:
            out.append(
                Entry(var, f"{unit}/{theirs}", transform=transform if attr == "kernel" else None)
            )
    if norm is not None:
        out += batch_norm_entries(norm, f"{unit}/BatchNorm/")
    return out


def _resnet(extractor, backbone, source):
    net = f"resnet_v1_{extractor.model_id}"
    entries = conv_entries(extractor._stem[0], extractor._stem[1], f"{net}/conv1")
    for g, units in enumerate(extractor._groups):
        for u, block in enumerate(units):
            unit = f"{net}/block{g + 1}/unit_{u + 1}/bottleneck_v1"
            if block._use_projection:
                entries += conv_entries(block._shortcut, block._norm0, f"{unit}/shortcut")
            for i in (1, 2, 3):
                entries += conv_entries(
                    getattr(block, f"_conv{i}"), getattr(block, f"_norm{i}"), f"{unit}/conv{i}"
                )
    return entries


def _mobilenet_v1(extractor, backbone, source):
    blocks = extractor._blocks
    entries = conv_entries(blocks[0]._conv0, blocks[0]._norm0, "MobilenetV1/Conv2d_0")
    for i, block in enumerate(blocks[1:], start=1):
        entries += conv_entries(block._dwconv0, block._norm0, f"MobilenetV1/Conv2d_{i}_depthwise")
        entries += conv_entries(block._conv1, block._norm1, f"MobilenetV1/Conv2d_{i}_pointwise")
    return entries


def _mobilenet_v2(extractor, backbone, source):
    blocks = extractor._blocks
    entries = conv_entries(blocks[0]._conv0, blocks[0]._norm0, "MobilenetV2/Conv")
    for i, block in enumerate(blocks[1:-1], start=1):
        unit = "MobilenetV2/expanded_conv" + ("" if i == 1 else f"_{i - 1}")
        if i > 1:
            entries += conv_entries(block._conv0, block._norm0, f"{unit}/expand")
        entries += conv_entries(block._conv1, block._norm1, f"{unit}/depthwise")
        entries += conv_entries(block._conv2, block._norm2, f"{unit}/project")
    return entries + conv_entries(blocks[-1]._conv0, blocks[-1]._norm0, "MobilenetV2/Conv_1")


def _bgr_first_input(kernel):
    """slim's VGG takes RGB, ours BGR (keras.applications' preprocessing): reverse conv1_1's
    input channels, exactly."""
    return kernel[:, :, ::-1, :]


def _vgg16(extractor, backbone, source):
    entries = []
    for b, filters in enumerate((2, 2, 3, 3, 3), start=1):
        for i in range(1, filters + 1):
            conv = extractor.bank.layers[f"block{b}_conv{i}"]
            entries += conv_entries(
                conv,
                None,
                f"vgg_16/conv{b}/conv{b}_{i}",
                transform=_bgr_first_input if (b, i) == (1, 1) else None,
            )
    return entries


# -- Inception family: per module, in order ------------------------------------


def _unit_order(rel):
    m = re.fullmatch(r"Branch_(\d+)/(.*)", rel)
    return (0, int(m.group(1)), m.group(2)) if m else (1, 0, rel)


def _slim_units(source, scope):
    """slim's convolution layers under ``scope``, in our creation order."""
    units = {
        k[len(scope) + 1 :].rsplit("/", 1)[0]
        for k in source
        if k.startswith(scope + "/") and re.search(r"/(depthwise_)?weights$", k)
    }
    return [f"{scope}/{u}" for u in sorted(units, key=_unit_order)]


def inception_map(net, module_scope=lambda module: module):
    """A map for a LayerBank Inception network under slim scope ``net``;
    ``module_scope``: our module name -> slim's scope inside ``net``."""

    def entries(extractor, backbone, source):
        ours = {id(v) for v in backbone.variables}
        layers = extractor.bank.layers
        modules, out = {}, []
        for name, layer in layers.items():
            if not isinstance(layer, tf_keras.layers.Conv2D) and not isinstance(
                layer, tf_keras.layers.SeparableConv2D
            ):
                continue
            if not layer.weights or id(layer.weights[0]) not in ours:
                continue
            m = re.fullmatch(r"(.*)_conv(\d*)", name)
            if m and f"{name}_bn" not in layers:  # inside a module
                index = int(m.group(2)) if m.group(2) else 1 << 30  # the projection last
                norm = layers.get(f"{m.group(1)}_bn{m.group(2)}") if m.group(2) else None
                modules.setdefault(m.group(1), []).append((index, layer, norm))
            else:  # a named layer: slim's own name
                out += conv_entries(layer, layers.get(f"{name}_bn"), f"{net}/{name}")
        for module, convs in modules.items():
            scope = f"{net}/{module_scope(module)}"
            units = _slim_units(source, scope)
            convs.sort(key=lambda c: c[0])
            for i, (_, conv, norm) in enumerate(convs):
                unit = units[i] if i < len(units) else f"{scope}/<layer #{i + 1}>"
                out += conv_entries(conv, norm, unit)
        return out

    return entries


def _irv2_scope(module):
    kind, _, n = module.partition("_")
    if kind == "block8" and n == "10":
        return "Block8"
    repeat = {"block35": "Repeat", "block17": "Repeat_1", "block8": "Repeat_2"}.get(kind)
    return f"{repeat}/{module}" if repeat else module


SLIM.register("resnet50_v1")(NameMap(_resnet, HEADS))
SLIM.register("resnet101_v1")(NameMap(_resnet, HEADS))
SLIM.register("resnet152_v1")(NameMap(_resnet, HEADS))
SLIM.register("mobilenet_v1")(NameMap(_mobilenet_v1, HEADS))
SLIM.register("mobilenet_v2")(NameMap(_mobilenet_v2, HEADS))
SLIM.register("vgg16")(NameMap(_vgg16, HEADS))
SLIM.register("inception_v2")(NameMap(inception_map("InceptionV2"), HEADS))
SLIM.register("inception_v3")(NameMap(inception_map("InceptionV3"), HEADS))
SLIM.register("inception_resnet_v2")(
    NameMap(inception_map("InceptionResnetV2", _irv2_scope), HEADS)
)
