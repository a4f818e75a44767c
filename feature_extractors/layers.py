"""Layer helpers shared by the VGG and Inception feature extractors.

Each extractor owns one ``LayerBank``. Network code asks the bank for a layer
by name (``bank.conv_bn(x, 64, 3)`` inside ``with bank.scope("Mixed_5b")``);
the first request creates the layer, later requests return the same object.
So the backbone, the first stage, the box classifier and the SSD maps are
written once, as plain functions of a tensor, and every sub-network built from
them shares its variables with ``build_backbone()``.

``LayerBankExtractor`` is the common skeleton: cached sub-models, the Inception
preprocessing, the pooled box classifier and the SSD extra layers.
"""

import contextlib

import tensorflow as tf
import tf_keras

from detbench.core.regularizers import l2_regularizer
from detbench.errors import ConfigError
from detbench.feature_extractors.base import FeatureExtractor


class ConvView(tf_keras.layers.Layer):
    """Runs another ``Conv2D``'s variables with a different stride, padding or dilation.

    Atrous (dilated) variants of a backbone use it: the view owns no variables,
    it tracks the original layer, so checkpoints and weight files see one kernel.
    """

    def __init__(self, conv, strides=1, padding="same", dilation_rate=1, **kwargs):
        super().__init__(**kwargs)
        self.conv = conv
        self.view_strides = strides
        self.view_padding = padding.upper()
        self.view_dilation = dilation_rate

    def call(self, inputs):
        y = tf.nn.convolution(
            inputs,
            self.conv.kernel,
            strides=self.view_strides,
            padding=self.view_padding,
            dilations=self.view_dilation,
        )
        if self.conv.use_bias:
            y = tf.nn.bias_add(y, self.conv.bias)
        if self.conv.activation is not None:
            y = self.conv.activation(y)
        return y


class PadToMinSize(tf_keras.layers.Layer):
    """Zero-pads height and width symmetrically up to ``min_size`` (identity when large enough).

    Box classifiers whose first layer is a VALID convolution use it so that
    crops of any spatial size work.
    """

    def __init__(self, min_size, **kwargs):
        super().__init__(**kwargs)
        self.min_size = min_size

    def call(self, inputs):
        h, w = inputs.shape[1], inputs.shape[2]
        if h is not None and w is not None:  # static: keep the shape static
            ph, pw = max(self.min_size - h, 0), max(self.min_size - w, 0)
            if ph == 0 and pw == 0:
                return inputs
        else:
            shape = tf.shape(inputs)
            ph = tf.maximum(self.min_size - shape[1], 0)
            pw = tf.maximum(self.min_size - shape[2], 0)
        paddings = [[0, 0], [ph // 2, ph - ph // 2], [pw // 2, pw - pw // 2], [0, 0]]
        out = tf.pad(inputs, paddings)
        return tf.ensure_shape(out, [None, None, None, inputs.shape[-1]])


class ScaledResidual(tf_keras.layers.Layer):
    """``x + scale * residual`` (Inception-ResNet blocks)."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs):
        x, residual = inputs
        return x + residual * self.scale


class LayerBank:
    """Creates each named layer once; later requests for the name return that object.

    Unnamed layers are named ``<scope>_<kind><n>`` by their order inside the
    current ``scope``; a scope restarts its counters each time it is entered,
    so a block written once gets the same layers in every sub-network.
    """

    def __init__(self, config, kernel_initializer="glorot_uniform", bn_scale=False):
        self.regularizer = l2_regularizer(config.weight_decay)
        self.freeze_batchnorm = config.freeze_batchnorm
        self.momentum = config.batch_norm_momentum
        self.epsilon = config.batch_norm_epsilon
        self.kernel_initializer = kernel_initializer
        self.bn_scale = bn_scale
        self.layers = {}
        self._scope, self._counts = None, {}

    @contextlib.contextmanager
    def scope(self, name):
        saved = self._scope, self._counts
        self._scope, self._counts = name, {}
        try:
            yield
        finally:
            self._scope, self._counts = saved

    def _name(self, kind, name):
        if name:
            return name
        if self._scope is None:
            raise ValueError(f"an unnamed {kind} layer needs a bank.scope()")
        n = self._counts[kind] = self._counts.get(kind, 0) + 1
        return f"{self._scope}_{kind}{n}"

    def get(self, name, make):
        """The layer called ``name``, created by ``make(name)`` on first request."""
        layer = self.layers.get(name)
        if layer is None:
            layer = self.layers[name] = make(name)
        return layer

    # -- layers ---------------------------------------------------------------
    def conv(
        self,
        x,
        filters,
        kernel_size,
        strides=1,
        padding="same",
        use_bias=False,
        activation=None,
        dilation_rate=1,
        name=None,
        run_as=None,
    ):
        """Conv2D; ``run_as`` (strides, padding, dilation_rate) runs it through a ConvView."""
        name = self._name("conv", name)
        layer = self.get(
            name,
            lambda n: tf_keras.layers.Conv2D(
                filters,
                kernel_size,
                strides=strides,
                padding=padding,
                use_bias=use_bias,
                activation=activation,
                dilation_rate=dilation_rate,
                kernel_initializer=self.kernel_initializer,
                kernel_regularizer=self.regularizer,
                name=n,
            ),
        )
        if run_as:
            if not layer.built:
                layer(x)  # build the variables under the layer's own name
            key = "_".join(f"{k}{v}" for k, v in sorted(run_as.items()))
            layer = self.get(f"{name}_view_{key}", lambda n: ConvView(layer, name=n, **run_as))
        return layer(x)

    def separable_conv(
        self, x, filters, kernel_size, strides=1, depth_multiplier=1, padding="same", name=None
    ):
        name = self._name("sepconv", name)
        return self.get(
            name,
            lambda n: tf_keras.layers.SeparableConv2D(
                filters,
                kernel_size,
                strides=strides,
                padding=padding,
                depth_multiplier=depth_multiplier,
                use_bias=False,
                depthwise_initializer=self.kernel_initializer,
                pointwise_initializer=self.kernel_initializer,
                depthwise_regularizer=self.regularizer,
                pointwise_regularizer=self.regularizer,
                name=n,
            ),
        )(x)

    def batch_norm(self, x, name=None, scale=None):
        """BatchNormalization; with ``freeze_batchnorm`` non-trainable, hence in inference mode."""
        name = self._name("bn", name)
        return self.get(
            name,
            lambda n: tf_keras.layers.BatchNormalization(
                axis=-1,
                momentum=self.momentum,
                epsilon=self.epsilon,
                scale=self.bn_scale if scale is None else scale,
                trainable=not self.freeze_batchnorm,
                name=n,
            ),
        )(x)

    def activation(self, x, fn="relu", name=None):
        name = self._name("act", name)
        return self.get(name, lambda n: tf_keras.layers.Activation(fn, name=n))(x)

    def conv_bn(
        self,
        x,
        filters,
        kernel_size,
        strides=1,
        padding="same",
        activation="relu",
        name=None,
        run_as=None,
        separable_depth_multiplier=None,
        bn_scale=None,
    ):
        """Conv (no bias) -> BatchNorm -> activation, as keras.applications' ``conv2d_bn``."""
        names = (name, name and name + "_bn", name and name + "_act")
        if separable_depth_multiplier:
            x = self.separable_conv(
                x, filters, kernel_size, strides, separable_depth_multiplier, padding, name=names[0]
            )
        else:
            x = self.conv(x, filters, kernel_size, strides, padding, name=names[0], run_as=run_as)
        x = self.batch_norm(x, name=names[1], scale=bn_scale)
        if activation is not None:
            x = self.activation(x, activation, name=names[2])
        return x


def ssd_extra_layers(bank, x, depths, use_depthwise=False):
    """SSD's extra maps: per depth d, 1x1 conv d/2 then 3x3 stride-2 conv d (BN + ReLU each).

    With ``use_depthwise`` the 3x3 is a depthwise-separable convolution. SAME
    padding, so a 1x1 map stays 1x1. Returns the list of new maps.
    """
    maps = []
    for i, depth in enumerate(depths, start=1):
        with bank.scope(f"ssd_extra{i}"):
            x = bank.conv_bn(x, depth // 2, 1, bn_scale=True)
            x = bank.conv_bn(
                x,
                depth,
                3,
                strides=2,
                bn_scale=True,
                separable_depth_multiplier=1 if use_depthwise else None,
            )
        maps.append(x)
    return maps


def concat(tensors, name):
    return tf_keras.layers.Concatenate(axis=-1, name=name)(tensors)


def inception_v3_stem(bank, x):
    """The stem Inception v3 and Inception-ResNet-v2 share (TF-slim): Conv2d_1a..4a
    with two max-pools, VALID padding (299 px -> 35x35x192)."""
    with bank.scope("stem"):
        x = bank.conv_bn(x, 32, 3, strides=2, padding="valid", name="Conv2d_1a_3x3")
        x = bank.conv_bn(x, 32, 3, padding="valid", name="Conv2d_2a_3x3")
        x = bank.conv_bn(x, 64, 3, name="Conv2d_2b_3x3")
        x = tf_keras.layers.MaxPooling2D(3, strides=2)(x)
        x = bank.conv_bn(x, 80, 1, padding="valid", name="Conv2d_3b_1x1")
        x = bank.conv_bn(x, 192, 3, padding="valid", name="Conv2d_4a_3x3")
        return tf_keras.layers.MaxPooling2D(3, strides=2)(x)


class LayerBankExtractor(FeatureExtractor):
    """Skeleton for extractors written with a LayerBank.

    Subclasses set ``first_stage_depth`` and ``ssd_extra_depths`` and write the
    network as functions of a tensor: ``_backbone(x)``, ``_first_stage(x)``,
    ``_box_classifier_features(x)`` (before pooling) and ``_ssd_backbone_maps(x)``.
    """

    first_stage_depth = None
    ssd_extra_depths = ()
    kernel_initializer = "glorot_uniform"

    def __init__(self, config, is_training=True):
        super().__init__(config, is_training=is_training)
        self.use_depthwise = config.use_depthwise
        self.bank = LayerBank(config, kernel_initializer=self.kernel_initializer)
        self._models = {}

    @classmethod
    def check_config(cls, config, meta_arch=None):
        super().check_config(config, meta_arch)
        if config.depth_multiplier != 1.0:
            name = getattr(cls, "registered_name", cls.__name__)
            raise ConfigError(
                f"feature_extractor.depth_multiplier: {name} supports only 1.0, "
                f"not {config.depth_multiplier:g}"
            )

    def _model(self, key, inputs_shape, fn):
        if key not in self._models:
            name = getattr(self, "registered_name", type(self).__name__)
            inputs = tf_keras.Input(shape=inputs_shape, name=f"{key}_input")
            self._models[key] = tf_keras.Model(inputs, fn(inputs), name=f"{name}_{key}")
        return self._models[key]

    def build_backbone(self):
        return self._model("backbone", (None, None, 3), self._backbone)

    def build_first_stage(self):
        return self._model("first_stage", (None, None, 3), self._first_stage)

    def build_box_classifier(self):
        def head(x):
            x = self._box_classifier_features(x)
            return tf_keras.layers.GlobalAveragePooling2D(name="box_classifier_pool")(x)

        return self._model("box_classifier", (None, None, self.first_stage_depth), head)

    def build_ssd_feature_maps(self):
        def maps(x):
            backbone_maps = list(self._ssd_backbone_maps(x))
            return backbone_maps + ssd_extra_layers(
                self.bank, backbone_maps[-1], self.ssd_extra_depths, self.use_depthwise
            )

        return self._model("ssd_feature_maps", (None, None, 3), maps)

    # -- the network, written once --------------------------------------------
    def _backbone(self, x):
        raise NotImplementedError

    def _first_stage(self, x):
        raise NotImplementedError

    def _box_classifier_features(self, x):
        raise NotImplementedError

    def _ssd_backbone_maps(self, x):
        raise NotImplementedError
