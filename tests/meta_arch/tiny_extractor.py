"""A tiny, fast feature extractor for meta-architecture tests (registered only by tests).

It honours the whole FeatureExtractor contract (first stage at output stride
8/16, box-classifier head, SSD maps, FPN levels) with a few small convolutions,
so meta-architectures can be trained to convergence in seconds on a CPU.
"""

import tensorflow as tf
import tf_keras

from detbench.feature_extractors.base import FEATURE_EXTRACTORS, FeatureExtractor

NAME = "test_tiny"


def _conv(filters, stride=1, dilation=1, name=None, kernel=3):
    return tf_keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        dilation_rate=dilation,
        padding="same",
        activation="relu",
        name=name,
    )


class TinyExtractor(FeatureExtractor):
    supported_output_strides = (8, 16)
    supports_fpn = True
    rfcn_bins_and_crop = (3, 12)
    max_stride = 32

    def __init__(self, config, is_training=True):
        super().__init__(config, is_training)
        self._cache = {}
        d = 16
        self.stem = [_conv(d, 2, name="c1"), _conv(2 * d, 2, name="c2"), _conv(2 * d, 2, name="c3")]
        self.block4 = _conv(4 * d, 2, name="c4")  # stride 16 (or 8 dilated)
        self.block5 = _conv(4 * d, 2, name="c5")  # stride 32 / head
        self.block4_dilated = None

    def preprocess(self, images):
        return images / 127.5 - 1.0

    def _cached(self, key, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def _stem(self, x):
        for layer in self.stem:
            x = layer(x)
        return x

    def build_backbone(self):
        def make():
            inp = tf_keras.Input([None, None, 3])
            return tf_keras.Model(inp, self.block5(self.block4(self._stem(inp))))

        return self._cached("backbone", make)

    def build_first_stage(self):
        def make():
            inp = tf_keras.Input([None, None, 3])
            x = self._stem(inp)
            if self.output_stride == 16:
                x = self.block4(x)
            return tf_keras.Model(inp, x, name="first_stage")

        return self._cached("first", make)

    def build_box_classifier(self):
        def make():
            c = 4 * 16 if self.output_stride == 16 else 2 * 16
            inp = tf_keras.Input([None, None, c])
            x = _conv(64, 1, name="head")(inp)
            return tf_keras.Model(inp, tf_keras.layers.GlobalAveragePooling2D()(x), name="head")

        return self._cached("head", make)

    def build_ssd_feature_maps(self):
        def make():
            inp = tf_keras.Input([None, None, 3])
            c3 = self._stem(inp)
            c4 = self.block4(c3)
            c5 = self.block5(c4)
            return tf_keras.Model(inp, [c3, c4, c5], name="ssd_maps")

        return self._cached("ssd", make)

    def build_fpn(self, min_level, max_level, depth):
        def make():
            inp = tf_keras.Input([None, None, 3])
            c2 = self.stem[1](self.stem[0](inp))
            c3 = self.stem[2](c2)
            c4 = self.block4(c3)
            c5 = self.block5(c4)
            feats = {2: c2, 3: c3, 4: c4, 5: c5}
            out = {}
            top = None
            for level in range(5, min_level - 1, -1):
                lat = tf_keras.layers.Conv2D(depth, 1, name=f"lat{level}")(feats[level])
                if top is not None:
                    up = tf_keras.layers.UpSampling2D(2)(top)
                    up = up[:, : tf.shape(lat)[1], : tf.shape(lat)[2]]
                    lat = lat + up
                top = lat
                out[str(level)] = tf_keras.layers.Conv2D(
                    depth, 3, padding="same", name=f"smooth{level}"
                )(lat)
            x = out["5"]
            for level in range(6, max_level + 1):
                x = tf_keras.layers.Conv2D(depth, 3, strides=2, padding="same", name=f"p{level}")(x)
                out[str(level)] = x
            return tf_keras.Model(
                inp, {k: v for k, v in out.items() if min_level <= int(k) <= max_level}, name="fpn"
            )

        return self._cached(("fpn", min_level, max_level, depth), make)


def register():
    """Register the tiny extractor (idempotent)."""
    if NAME not in FEATURE_EXTRACTORS:
        FEATURE_EXTRACTORS.register(NAME)(TinyExtractor)
    return TinyExtractor
