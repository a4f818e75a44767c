"""Input normalizations: a [0, 255] RGB image -> what a backbone was trained on.

One function per convention in use, registered under the name of
``FeatureExtractor.InputNormalization`` (protos/feature_extractor.proto):

* ``CAFFE_BGR``: keras.applications' "caffe" mode (VGG, ResNet): channels
  reversed to BGR, minus the BGR ImageNet means, unscaled;
* ``RGB_MEANS``: TF-slim's ``vgg_preprocessing`` (``resnet_v1_*``, ``vgg_16``)
  and the TF OD API's Faster R-CNN ResNet: RGB minus the RGB means, unscaled
  (the OD API's means, 116.779 / 103.939, differ from slim's 116.78 / 103.94 by
  0.001: 1e-5 of the input's scale);
* ``MEAN_STD``: the Model Garden's ImageNet mean and standard deviation;
* ``SIGNED_UNIT``: Inception style, ``x / 127.5 - 1``.
"""

import tensorflow as tf

from detbench.registry import Registry

NORMALIZATIONS = Registry("input normalization")

BGR_MEANS = (103.939, 116.779, 123.68)
RGB_MEANS = (123.68, 116.78, 103.94)
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@NORMALIZATIONS.register("CAFFE_BGR")
def caffe_bgr(images):
    return tf.cast(images, tf.float32)[..., ::-1] - tf.constant(BGR_MEANS, tf.float32)


@NORMALIZATIONS.register("RGB_MEANS")
def rgb_means(images):
    return tf.cast(images, tf.float32) - tf.constant(RGB_MEANS, tf.float32)


@NORMALIZATIONS.register("MEAN_STD")
def mean_std(images):
    return (tf.cast(images, tf.float32) - MEAN_RGB) / STDDEV_RGB


@NORMALIZATIONS.register("SIGNED_UNIT")
def signed_unit(images):
    return tf.cast(images, tf.float32) / 127.5 - 1.0
