"""The DetectionModel contract shared by SSD, Faster R-CNN, R-FCN and Cascade R-CNN.

Data flow of one inference::

    inputs, true_shapes = model.preprocess(images)          # resize + normalize + pad
    predictions = model.predict(inputs, true_shapes, training=False)
    detections = model.postprocess(predictions, true_shapes)

and of one training step::

    predictions = model.predict(inputs, true_shapes, training=True, groundtruth=gt)
    losses = model.loss(predictions, gt)                     # dict of scalars

``images`` are float32 (or uint8) [B,H,W,3] in [0,255]. ``true_shapes`` is int32
[B,3]: the part of each (padded) input that holds the image. Groundtruth
boxes, like detections, are normalized [ymin,xmin,ymax,xmax] *relative to the
true image*; class ids are 1-based (0 is background). Detections:
``detection_boxes`` [B,N,4], ``detection_scores`` [B,N], ``detection_classes``
[B,N] (float32, 1-based), ``num_detections`` [B] - also the SavedModel outputs.

Groundtruth dicts use the data pipeline's keys: ``groundtruth_boxes``
[B,M,4], ``groundtruth_classes`` [B,M] int32, ``num_groundtruth_boxes`` [B],
optionally ``groundtruth_is_crowd`` [B,M].
"""

import abc

import tensorflow as tf
import tf_keras

from detbench.config import checks
from detbench.errors import ConfigError
from detbench.registry import Registry

META_ARCHITECTURES = Registry("meta-architecture")

DETECTION_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


def buildable(field, build, *args, **kwargs):
    """``build(*args, **kwargs)`` inside a ``check_config``: the core builders
    (box coders, anchor generators, losses, samplers, matchers, NMS) hold the
    rules of their own settings, so a check builds the (TensorFlow-free)
    object and turns its ValueError into a ConfigError naming ``field``."""
    try:
        return build(*args, **kwargs)
    except ValueError as e:
        raise ConfigError(f"{field}: {e}") from None


# For the models' graph-building methods: they have no Python control flow on
# tensors, and skipping AutoGraph's source conversion (which would also
# transpile the core's map_fn bodies) cuts first-call tracing several-fold.
no_autograph = tf.autograph.experimental.do_not_convert


class DetectionModel(tf_keras.Model, abc.ABC):
    """Base of every meta-architecture (a tf_keras.Model, so variables are tracked)."""

    def __init__(self, num_classes, is_training, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.is_training = is_training

    @classmethod
    def check_config(cls, config, field):
        """Raise ConfigError naming the field when ``config`` (this
        meta-architecture's message; ``field`` its path, e.g. "model.ssd")
        is inconsistent. ``config/validate.py`` calls it through
        META_ARCHITECTURES; ``from_config`` assumes it passed. Here what every
        meta-architecture shares; subclasses add their own parts."""
        checks.positive(config.num_classes, f"{field}.num_classes")
        checks.check_image_resizer(config, field)

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config, is_training=True):
        """Build from the meta-architecture's own message (e.g. ``Ssd``)."""

    @no_autograph
    def preprocess(self, images):
        """float [B,H,W,3] in [0,255] -> (inputs, true_shapes int32 [B,3]):
        resize, normalize and pad by the model's ``image_frame`` (an
        ``image_frame.ImageFrame`` each meta-architecture sets)."""
        return self.image_frame(images)

    @abc.abstractmethod
    def predict(self, inputs, true_shapes, training=False, groundtruth=None):
        """Raw predictions (dict of tensors). Two-stage models sample RoIs
        against ``groundtruth`` when training."""

    @abc.abstractmethod
    def loss(self, predictions, groundtruth):
        """Dict of named scalar losses (the total is their sum)."""

    @abc.abstractmethod
    def postprocess(self, predictions, true_shapes):
        """Detections dict (DETECTION_KEYS), boxes relative to the true image."""

    # -- variables ------------------------------------------------------------
    def build_variables(self):
        """Create every variable now, before the first call (``build_model``
        does this). The backbones are Keras functional models, built at
        construction; the heads are built by ``_build_heads`` from the
        backbone's static output depths, run once eagerly on tiny zero maps.

        Why: a ``tf.function`` whose first call creates variables traces its
        Python function twice (once creating them, once more without), so a
        lazily built model pays two traces at its first call, at inference
        and at the first training step. Idempotent; also what a checkpoint
        restore needs (variables to restore into).
        """
        if getattr(self, "_heads_built", False):
            return
        with tf.init_scope():
            self._build_heads()
        self._heads_built = True

    def _build_heads(self):
        """Run every layer the backbone does not hold once on zero inputs.

        This default runs the whole model once, eagerly, on a 64x64 zero
        image: right for any model of this contract, but slow for a big one;
        the meta-architectures override it with their heads alone."""
        self.detect(tf.zeros([1, 64, 64, 3]))

    # -- conveniences shared by every model ---------------------------------
    def preprocess_single(self, image):
        """One image [H,W,3] -> (input [h,w,3], true_shape [3]); used by tf.data."""
        inputs, true_shapes = self.preprocess(tf.cast(image, tf.float32)[tf.newaxis])
        return inputs[0], true_shapes[0]

    def detect(self, images):
        """preprocess + predict + postprocess (the exported inference function)."""
        inputs, true_shapes = self.preprocess(tf.cast(images, tf.float32))
        predictions = self.predict(inputs, true_shapes, training=False)
        return self.postprocess(predictions, true_shapes)

    def call(self, images, training=False):
        return self.detect(images)

    def stage_functions(self):
        """Ordered ``(stage name, fn(images) -> tensors)`` for per-stage timing.

        Each function runs the model from the raw images up to and including
        its stage, so a benchmark times the prefixes and takes differences;
        what follows the last stage is post-processing. Empty: no breakdown.
        """
        return []

    def _prefix(self, fn):
        """fn(inputs, true_shapes) -> a function of raw images (preprocess first)."""

        def run(images):
            inputs, true_shapes = self.preprocess(tf.cast(images, tf.float32))
            return fn(inputs, true_shapes)

        return run

    def backbone_models(self):
        """The feature-extractor sub-networks (for classification fine-tuning)."""
        return []

    def regularization_loss(self):
        losses = self.losses
        return tf.add_n(losses) if losses else tf.constant(0.0)
