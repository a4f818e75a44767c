"""VGG-16 (Simonyan & Zisserman 2015), the 13 convolutions of keras.applications' ``VGG16``.

The backbone has the reference's layers in its order (3x3 convolutions with
bias and ReLU, no batch norm), so its ImageNet weight file loads layer by
layer. Differences, none of which touches a variable: max pools use SAME
padding (ceil, as Caffe's VGG, Faster R-CNN and SSD; identical to the
reference whenever the side is a multiple of 32), and kernels start from He
initialisation (the network has no batch norm and trains from scratch here).

* first stage: ``conv5_3`` at stride 16 -- pool1..pool4 kept, pool5 dropped,
  as Faster R-CNN's VGG-16 (512 channels);
* box classifier: ``fc6`` as a 7x7 VALID convolution with 4096 filters (the
  original fc6 on a 7x7 crop; smaller crops are zero-padded to 7x7), ``fc7``
  as a 1x1 convolution with 4096 filters, then global average pooling (4096);
* SSD (Liu et al.): ``conv4_3`` (stride 8) L2-normalised with a learnable
  per-channel scale starting at 20; ``fc7`` (stride 16) after pool5 as 3x3
  stride 1, fc6 as a 3x3 convolution with dilation 6 and 1024 filters and fc7
  as 1x1 with 1024; then 5 extra maps of depth 512/256/256/256/256. That is 7
  maps, 38/19/10/5/3/2/1 at 300 px (SSD300 has 6 with VALID last layers; the
  5th extra map brings SAME-padded maps down to 1x1).
"""

import tensorflow as tf
import tf_keras

from detbench.feature_extractors.base import FEATURE_EXTRACTORS
from detbench.feature_extractors.layers import LayerBankExtractor, PadToMinSize

L = tf_keras.layers

# Filters of the 3x3 convolutions in blocks 1..5.
BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class L2Normalization(tf_keras.layers.Layer):
    """``x / ||x||`` over channels times a learnable per-channel scale (ParseNet, SSD)."""

    def __init__(self, scale_init=20.0, epsilon=1e-10, **kwargs):
        super().__init__(**kwargs)
        self.scale_init = scale_init
        self.epsilon = epsilon

    def build(self, input_shape):
        self.scale = self.add_weight(
            "scale",
            shape=(input_shape[-1],),
            initializer=tf_keras.initializers.Constant(self.scale_init),
            trainable=True,
        )
        super().build(input_shape)

    def call(self, inputs):
        return tf.math.l2_normalize(inputs, axis=-1, epsilon=self.epsilon) * self.scale


@FEATURE_EXTRACTORS.register("vgg16")
class VGG16(LayerBankExtractor):
    supported_output_strides = (16,)
    rfcn_bins_and_crop = (7, 21)
    max_stride = 32
    first_stage_depth = 512
    ssd_extra_depths = (512, 256, 256, 256, 256)
    kernel_initializer = "he_uniform"

    # keras.applications.vgg16.preprocess_input's: BGR minus the means.
    default_normalization = "CAFFE_BGR"

    def _block(self, x, block):
        for i, filters in enumerate(BLOCKS[block - 1], start=1):
            x = self.bank.conv(
                x, filters, 3, use_bias=True, activation="relu", name=f"block{block}_conv{i}"
            )
        return x

    @staticmethod
    def _pool(x, block):
        return L.MaxPooling2D(2, strides=2, padding="same", name=f"block{block}_pool")(x)

    def _backbone(self, x):
        for block in range(1, 6):
            x = self._pool(self._block(x, block), block)
        return x

    def _first_stage(self, x):
        for block in range(1, 5):
            x = self._pool(self._block(x, block), block)
        return self._block(x, 5)  # conv5_3, stride 16

    def _box_classifier_features(self, x):
        b = self.bank
        x = PadToMinSize(7, name="box_classifier_pad")(x)
        x = b.conv(
            x, 4096, 7, padding="valid", use_bias=True, activation="relu", name="box_classifier_fc6"
        )
        return b.conv(x, 4096, 1, use_bias=True, activation="relu", name="box_classifier_fc7")

    def _ssd_backbone_maps(self, x):
        b = self.bank
        for block in range(1, 4):
            x = self._pool(self._block(x, block), block)
        conv4_3 = self._block(x, 4)
        x = self._block(self._pool(conv4_3, 4), 5)
        x = L.MaxPooling2D(3, strides=1, padding="same", name="ssd_pool5")(x)
        x = b.conv(x, 1024, 3, dilation_rate=6, use_bias=True, activation="relu", name="ssd_fc6")
        fc7 = b.conv(x, 1024, 1, use_bias=True, activation="relu", name="ssd_fc7")
        norm = b.get("ssd_conv4_3_l2_norm", lambda n: L2Normalization(20.0, name=n))
        return [norm(conv4_3), fc7]
