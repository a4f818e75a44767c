"""Multi-scale heads shared by the backbone families: FPN, SSD extra layers, fc box head.

* ``build_fpn_model``: the Model Garden's FPN decoder
  (``official.vision.modeling.decoders.FPN``, Lin et al.): lateral 1x1 convs,
  nearest-neighbour top-down pathway, 3x3 smoothing, batch norm on every
  output; levels above the backbone's last one come from 3x3 stride-2 convs
  (RetinaNet P6/P7; also used for P6 of two-stage FPN instead of a max-pool).
  The decoder needs an input whose sides are multiples of 2**(backbone's top
  level) (32 here): the meta-architecture pads (``pad_to_multiple``).
* ``ssd_extra_layers``: TF OD API ``multi_resolution_feature_maps`` extra
  layers: 1x1 conv of depth/2, then 3x3 stride 2 (or depthwise 3x3 + 1x1
  with ``use_depthwise``), batch norm + activation after each conv, 'same'
  padding (each halves the side, ceil).
* (with ``fpn`` configured, the two-stage box head is the meta-architecture's
  fc head, ``meta_arch.two_stage.fc_box_head``, not the backbone's conv5).
* small helpers: regularizer, batch-norm freezing, a per-extractor cache.
"""

import tf_keras
from official.vision.modeling import decoders

from detbench.core.regularizers import l2_regularizer
from detbench.errors import ConfigError


def freeze_batchnorm(model):
    """Put every BatchNormalization layer under ``model`` in inference mode, not trainable.

    tf_keras runs a BN layer whose ``trainable`` is False in inference mode
    (moving statistics used, not updated) whatever the ``training`` flag.
    """
    for layer in model.submodules:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            layer.trainable = False
    return model


def batch_norm(config, name=None):
    return tf_keras.layers.BatchNormalization(
        momentum=config.batch_norm_momentum, epsilon=config.batch_norm_epsilon, name=name
    )


def check_fpn_levels(name, min_level, max_level, depth, backbone_min=2, backbone_max=5):
    if not backbone_min <= min_level <= backbone_max:
        raise ConfigError(
            f"feature_extractor.fpn.min_level: {name} has levels "
            f"{backbone_min}-{backbone_max}; min_level {min_level} is outside"
        )
    if max_level < min_level or max_level > 9:
        raise ConfigError(
            f"feature_extractor.fpn.max_level: {max_level} must be in [min_level={min_level}, 9]"
        )
    if depth <= 0:
        raise ConfigError(f"feature_extractor.fpn.depth: must be positive, not {depth}")


def check_fpn_stride(output_stride):
    if output_stride != 16:
        raise ConfigError(f"feature_extractor.output_stride: FPN needs 16, not {output_stride}")


def pyramid_model(name, config, decoder_cache, inputs, endpoints, min_level, max_level, depth):
    """Backbone endpoints {str(level): tensor} on ``inputs`` -> tf_keras.Model giving
    {str(level): map} for min_level..max_level. The decoder is kept in
    ``decoder_cache`` per (min, max, depth), so a rebuilt model reuses its variables."""
    key = (min_level, max_level, depth)
    if key not in decoder_cache:
        decoder_cache[key] = build_fpn_model(
            config,
            {k: v.shape for k, v in endpoints.items()},
            min_level,
            max_level,
            depth,
            name=f"fpn_{min_level}_{max_level}_{depth}",
        )
    levels = decoder_cache[key]({k: v for k, v in endpoints.items() if int(k) >= min_level})
    return tf_keras.Model(inputs, levels, name=f"{name}_fpn")


def build_fpn_model(config, endpoint_shapes, min_level, max_level, depth, name="fpn"):
    """The Model Garden FPN decoder over backbone endpoints {str(level): shape}."""
    specs = {k: v for k, v in endpoint_shapes.items() if int(k) >= min_level}
    return decoders.FPN(
        input_specs=specs,
        min_level=min_level,
        max_level=max_level,
        num_filters=depth,
        use_keras_layer=True,
        norm_momentum=config.batch_norm_momentum,
        norm_epsilon=config.batch_norm_epsilon,
        kernel_regularizer=l2_regularizer(config.weight_decay),
        name=name,
    )


class SSDExtraLayers:
    """The layers (built once, shared) that add ``len(depths)`` maps, each half the last."""

    def __init__(self, config, depths, activation, prefix="ssd_extra"):
        reg = l2_regularizer(config.weight_decay)
        self.blocks = []
        for i, depth in enumerate(depths):
            p = f"{prefix}_{i + 1}"
            block = [
                tf_keras.layers.Conv2D(
                    max(depth // 2, 1), 1, use_bias=False, kernel_regularizer=reg, name=f"{p}_1x1"
                ),
                batch_norm(config, f"{p}_1x1_bn"),
                tf_keras.layers.Activation(activation, name=f"{p}_1x1_act"),
            ]
            if config.use_depthwise:
                block += [
                    tf_keras.layers.DepthwiseConv2D(
                        3, 2, padding="same", use_bias=False, name=f"{p}_3x3_dw"
                    ),
                    batch_norm(config, f"{p}_3x3_dw_bn"),
                    tf_keras.layers.Activation(activation, name=f"{p}_3x3_dw_act"),
                    tf_keras.layers.Conv2D(
                        depth, 1, use_bias=False, kernel_regularizer=reg, name=f"{p}_pw"
                    ),
                ]
            else:
                block.append(
                    tf_keras.layers.Conv2D(
                        depth,
                        3,
                        2,
                        padding="same",
                        use_bias=False,
                        kernel_regularizer=reg,
                        name=f"{p}_3x3",
                    )
                )
            block += [
                batch_norm(config, f"{p}_bn"),
                tf_keras.layers.Activation(activation, name=f"{p}_act"),
            ]
            self.blocks.append(block)

    def __call__(self, x):
        maps = []
        for block in self.blocks:
            for layer in block:
                x = layer(x)
            maps.append(x)
        return maps


class SubNetworkCache:
    """Builds each sub-network once; ``freeze`` applies batch-norm freezing to it."""

    def __init__(self, freeze):
        self._models = {}
        self._freeze = freeze

    def get(self, key, build):
        if key not in self._models:
            model = build()
            if self._freeze:
                freeze_batchnorm(model)
            self._models[key] = model
        return self._models[key]
