"""Inception-ResNet-v2 (Szegedy et al. 2017), layer by layer keras.applications'
``InceptionResNetV2``.

Same layers, order and padding as the reference (VALID stem, batch norm
without scale, 1x1 residual projections with bias), so its ImageNet weight
file loads layer by layer. Block names follow TF-slim / keras.

* first stage: ``Mixed_6a`` followed by its 20 ``block17`` residual blocks
  (slim's ``PreAuxLogits``), 1088 channels, at output stride 16 or 8. At 8
  (atrous, as slim's ``output_stride=8``) Mixed_6a's stride-2 VALID
  convolutions and max pool run with stride 1 and SAME padding and the block17
  convolutions with dilation 2 -- the same variables, run through
  ``ConvView``s. The stride-8 side is then ``2 * s16 + 1`` for an odd stride-8
  grid (``2 * s16 + 2`` for an even one), because of the VALID stem.
* box classifier: ``Mixed_7a``, 10 ``block8`` (the last without ReLU) and
  ``Conv2d_7b`` then global average pooling (1536); crops smaller than 3x3 are
  zero-padded to 3x3 for Mixed_7a's VALID convolutions.
* SSD: the stride-16 map (Mixed_6a + block17s, as the first stage at stride
  16), ``Conv2d_7b`` (stride 32) and extra maps of depth 512/256/128 (5 maps).

With ``v(n) = (n - 3) // 2 + 1``: stride-8 side ``v(v(v(H) - 2) - 2)``, then
``v`` per further stride 2. Smallest input: 75 px for the full network, 43 px
for the first stage.
"""

import tf_keras

from detbench.feature_extractors.base import FEATURE_EXTRACTORS
from detbench.feature_extractors.layers import (
    LayerBankExtractor,
    PadToMinSize,
    ScaledResidual,
    concat,
    inception_v3_stem,
)

L = tf_keras.layers


@FEATURE_EXTRACTORS.register("inception_resnet_v2")
class InceptionResNetV2(LayerBankExtractor):
    supported_output_strides = (8, 16)
    rfcn_bins_and_crop = (7, 21)
    max_stride = 32
    first_stage_depth = 1088
    ssd_extra_depths = (512, 256, 128)

    def _stem(self, x):
        b = self.bank
        x = inception_v3_stem(b, x)
        with b.scope("Mixed_5b"):
            b0 = b.conv_bn(x, 96, 1)
            b1 = b.conv_bn(b.conv_bn(x, 48, 1), 64, 5)
            b2 = b.conv_bn(b.conv_bn(b.conv_bn(x, 64, 1), 96, 3), 96, 3)
            b3 = b.conv_bn(L.AveragePooling2D(3, strides=1, padding="same")(x), 64, 1)
            return concat([b0, b1, b2, b3], "Mixed_5b")

    def _residual_block(self, x, block_type, idx, scale, activation="relu", dilation=1):
        """block35 / block17 / block8: branches -> concat -> 1x1 (bias) -> x + scale * r."""
        b = self.bank
        name = f"{block_type}_{idx}"
        atrous = {"dilation_rate": dilation} if dilation > 1 else None
        with b.scope(name):
            if block_type == "block35":
                branches = [b.conv_bn(x, 32, 1), b.conv_bn(b.conv_bn(x, 32, 1), 32, 3)]
                y = b.conv_bn(b.conv_bn(x, 32, 1), 48, 3)
                branches.append(b.conv_bn(y, 64, 3))
            else:
                width, (k1, k2), depths = {
                    "block17": (128, ((1, 7), (7, 1)), (160, 192)),
                    "block8": (192, ((1, 3), (3, 1)), (224, 256)),
                }[block_type]
                b0 = b.conv_bn(x, 192, 1)
                y = b.conv_bn(x, width, 1)
                y = b.conv_bn(y, depths[0], k1, run_as=atrous)
                branches = [b0, b.conv_bn(y, depths[1], k2, run_as=atrous)]
            mixed = concat(branches, name + "_mixed")
            up = b.conv(mixed, x.shape[-1], 1, use_bias=True, name=name + "_conv")
            x = ScaledResidual(scale, name=name + "_residual")([x, up])
            if activation is not None:
                x = b.activation(x, activation, name=name + "_ac")
            return x

    def _mixed_6a(self, x, atrous):
        """Reduction-A; with ``atrous`` stride 1 and SAME padding (same variables)."""
        b = self.bank
        run_as = {"strides": 1, "padding": "same"} if atrous else None
        with b.scope("Mixed_6a"):
            b0 = b.conv_bn(x, 384, 3, strides=2, padding="valid", run_as=run_as)
            b1 = b.conv_bn(b.conv_bn(x, 256, 1), 256, 3)
            b1 = b.conv_bn(b1, 384, 3, strides=2, padding="valid", run_as=run_as)
            pool = (
                L.MaxPooling2D(3, strides=1, padding="same")
                if atrous
                else L.MaxPooling2D(3, strides=2, padding="valid")
            )
            return concat([b0, b1, pool(x)], "Mixed_6a")

    def _mixed_7a(self, x):
        b = self.bank
        with b.scope("Mixed_7a"):
            b0 = b.conv_bn(b.conv_bn(x, 256, 1), 384, 3, strides=2, padding="valid")
            b1 = b.conv_bn(b.conv_bn(x, 256, 1), 288, 3, strides=2, padding="valid")
            b2 = b.conv_bn(b.conv_bn(x, 256, 1), 288, 3)
            b2 = b.conv_bn(b2, 320, 3, strides=2, padding="valid")
            b3 = L.MaxPooling2D(3, strides=2, padding="valid")(x)
            return concat([b0, b1, b2, b3], "Mixed_7a")

    # -- the network --------------------------------------------------------------
    def _stride16(self, x, output_stride=16):
        atrous = output_stride == 8
        x = self._stem(x)
        for i in range(1, 11):
            x = self._residual_block(x, "block35", i, 0.17)
        x = self._mixed_6a(x, atrous)
        for i in range(1, 21):
            x = self._residual_block(x, "block17", i, 0.1, dilation=2 if atrous else 1)
        return x

    def _top(self, x):
        x = self._mixed_7a(x)
        for i in range(1, 10):
            x = self._residual_block(x, "block8", i, 0.2)
        x = self._residual_block(x, "block8", 10, 1.0, activation=None)
        return self.bank.conv_bn(x, 1536, 1, name="Conv2d_7b_1x1")

    def _backbone(self, x):
        return self._top(self._stride16(x))

    def _first_stage(self, x):
        return self._stride16(x, self.output_stride)

    def _box_classifier_features(self, x):
        return self._top(PadToMinSize(3, name="box_classifier_pad")(x))

    def _ssd_backbone_maps(self, x):
        stride16 = self._stride16(x)
        return [stride16, self._top(stride16)]
