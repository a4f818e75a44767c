"""The feature-extractor contract every backbone family implements.

A feature extractor turns one classification backbone into the pieces each
meta-architecture needs (Huang et al., supplementary material):

* two-stage models (Faster R-CNN, R-FCN, Cascade R-CNN): the *first stage*
  (image -> the feature map the RPN and the RoI crops use, at the configured
  output stride) and the *box classifier* (the rest of the network applied to
  each cropped RoI, then pooled);
* SSD: a list of feature maps (two backbone maps plus extra layers);
* FPN (when the config has an ``fpn`` sub-message): pyramid levels.

Sub-networks are ``tf_keras`` models built on demand; the meta-architecture
keeps them as attributes so their variables are tracked and checkpointed.
Inputs are float32 images in [0, 255]; ``preprocess`` applies the input
normalization (``normalization.py``) the config names, else the one of the
``weights_path`` file's format (``file_conventions``), else the family's.
The same resolution gives ResNet's stride placement and the batch-norm
epsilon: ``self.config`` is the config with all three resolved.
"""

import abc
import dataclasses

import tensorflow as tf

from detbench.errors import ConfigError
from detbench.feature_extractors.normalization import NORMALIZATIONS
from detbench.meta_arch_names import ALL_META_ARCHS, TWO_STAGE
from detbench.protos import feature_extractor_pb2
from detbench.registry import Registry

_PROTO = feature_extractor_pb2.FeatureExtractor

FEATURE_EXTRACTORS = Registry("feature extractor")


@dataclasses.dataclass(frozen=True)
class ShapeSpec:
    """One output map of an extractor, as declared by its config (Detectron2's
    ShapeSpec): its stride relative to the network input, and its channels
    (None where only the built network knows them)."""

    stride: int
    channels: int | None = None


class FeatureExtractor(abc.ABC):
    # Output strides the two-stage first stage supports (atrous beyond them).
    supported_output_strides = (16,)
    # Whether an ``fpn`` sub-config is supported.
    supports_fpn = False
    # Meta-architectures this extractor serves.
    meta_architectures = ALL_META_ARCHS
    # R-FCN defaults for this family: (spatial bins k, crop size).
    rfcn_bins_and_crop = (7, 21)
    # Total stride of the deepest backbone map (used to validate resolutions).
    max_stride = 32
    # This extractor's own pretraining recipe: train/pretrain.Recipe fields that
    # differ from the common one (train.pretrain.recipe_for applies them to every
    # field the sweep's pretraining message or the command's flags leave unset).
    pretraining_recipe = {}
    # The family's input normalization (an InputNormalization name).
    default_normalization = "SIGNED_UNIT"
    # Stride placements the family can be built with (ResNet v1's); none elsewhere.
    stride_placements = ()
    # {weights file format: {setting: value}}: how a file of that format was
    # trained, where it differs from the family's defaults (settings:
    # stride_placement, input_normalization, batch_norm_epsilon).
    file_conventions = {}

    def __init__(self, config, is_training=True):
        """``config``: a ``feature_extractor_pb2.FeatureExtractor``."""
        self.weights_format = weights_file_format(config.weights_path)
        config = self.resolved_config(config, self.weights_format)
        self.config = config
        self.input_normalization = _PROTO.InputNormalization.Name(config.input_normalization)
        self.stride_placement = _PROTO.StridePlacement.Name(config.stride_placement)
        self.is_training = is_training
        self.output_stride = config.output_stride
        self.depth_multiplier = config.depth_multiplier
        self.min_depth = config.min_depth
        self.freeze_batchnorm = config.freeze_batchnorm
        self.weights_path = config.weights_path

    # -- what it outputs -------------------------------------------------------
    def first_stage_shape(self):
        """The two-stage first-stage map (``build_first_stage``): at ``output_stride``."""
        return ShapeSpec(int(self.output_stride))

    def fpn_shapes(self):
        """{level: ShapeSpec(2^level, fpn.depth)} of ``build_fpn`` for the
        config's ``fpn`` (None without one)."""
        if not self.config.HasField("fpn"):
            return None
        fpn = self.config.fpn
        return {
            level: ShapeSpec(2**level, int(fpn.depth))
            for level in range(fpn.min_level, fpn.max_level + 1)
        }

    def rpn_input_shape(self):
        """What a two-stage model's RPN runs on: the FPN levels, or the first stage."""
        return self.fpn_shapes() or self.first_stage_shape()

    @property
    def input_multiple(self):
        """The multiple the input sides are padded to: the backbone's total
        stride (``max_stride``), which every declared map's stride divides
        (an output stride is at most it; FPN levels beyond it are strided
        convolutions of the deepest map)."""
        return int(self.max_stride)

    @classmethod
    def resolved_config(cls, config, weights_format=None):
        """A copy of ``config`` with the stride placement, input normalization and
        batch-norm epsilon set: the config's where it sets them, else the
        convention of ``weights_format`` (the weights file's), else the family's."""
        out = _PROTO()
        out.CopyFrom(config)
        conventions = cls.file_conventions.get(weights_format, {})
        defaults = {"input_normalization": cls.default_normalization}
        fields = ("stride_placement",) if cls.stride_placements else ()
        for field in fields + ("input_normalization", "batch_norm_epsilon"):
            if config.HasField(field):
                continue
            value = conventions.get(field, defaults.get(field))
            if value is None:
                value = getattr(config, field)  # the proto's default
            setattr(out, field, value)
        return out

    def settings_summary(self):
        """What the network was built as, for the weights line."""
        placement = f"stride placement {self.stride_placement}, " if self.stride_placements else ""
        return (
            f"built with {placement}input normalization {self.input_normalization}, "
            f"batch norm epsilon {self.config.batch_norm_epsilon:g}"
        )

    def preprocess(self, images):
        """float32 [B,H,W,3] in [0,255] -> the backbone's normalized input."""
        return NORMALIZATIONS.get(self.input_normalization)(images)

    @classmethod
    def from_config(cls, config, is_training=True, meta_arch=None):
        cls.check_config(config, meta_arch)
        return cls(config, is_training=is_training)

    @classmethod
    def check_config(cls, config, meta_arch=None):
        """Raise ConfigError naming the field when ``config`` cannot be built."""
        name = getattr(cls, "registered_name", cls.__name__)
        if meta_arch is not None and meta_arch not in cls.meta_architectures:
            raise ConfigError(
                f"feature_extractor.type: {name} cannot serve {meta_arch}; "
                f"it serves {', '.join(cls.meta_architectures)}"
            )
        if meta_arch in TWO_STAGE and config.output_stride not in cls.supported_output_strides:
            raise ConfigError(
                f"feature_extractor.output_stride: {name} supports output strides "
                f"{', '.join(map(str, cls.supported_output_strides))}, not {config.output_stride}"
            )
        if config.HasField("fpn") and not cls.supports_fpn:
            raise ConfigError(f"feature_extractor.fpn: {name} does not support FPN")
        if config.HasField("fpn"):  # what ``build_fpn`` would refuse
            from detbench.feature_extractors import fpn as fpn_lib

            fpn = config.fpn
            fpn_lib.check_fpn_levels(name, fpn.min_level, fpn.max_level, fpn.depth)
            fpn_lib.check_fpn_stride(config.output_stride)
        if config.HasField("stride_placement"):
            cls._check_stride_placement(config, name)

    @classmethod
    def _check_stride_placement(cls, config, name):
        placement = _PROTO.StridePlacement.Name(config.stride_placement)
        if not cls.stride_placements:
            raise ConfigError(
                f"feature_extractor.stride_placement: only ResNet v1 has one; {name} does not"
            )
        fmt = weights_file_format(config.weights_path)
        implied = cls.file_conventions.get(fmt, {}).get("stride_placement")
        if implied is not None and implied != placement:
            raise ConfigError(
                f"feature_extractor.stride_placement: {placement} contradicts "
                f"feature_extractor.weights_path {config.weights_path}, a {fmt} trained with "
                f"stride placement {implied} (leave stride_placement unset)"
            )

    # -- common -------------------------------------------------------------
    @abc.abstractmethod
    def build_backbone(self):
        """The classification backbone without its classifier (tf_keras.Model).

        Its parameter count equals the reference implementation's; it is what
        ``weights_path`` files hold.
        """

    # -- two-stage ------------------------------------------------------------
    @abc.abstractmethod
    def build_first_stage(self):
        """tf_keras.Model: preprocessed [B,H,W,3] -> [B,H/s,W/s,C], s = output_stride."""

    @abc.abstractmethod
    def build_box_classifier(self):
        """tf_keras.Model: cropped features [N,h,w,C] -> pooled [N,D]."""

    def refuse_fpn_box_classifier(self):
        """With FPN the box head is the meta-architecture's fc head (``fpn_head``)."""
        if self.config.HasField("fpn"):
            name = getattr(self, "registered_name", type(self).__name__)
            raise ConfigError(
                "feature_extractor.fpn: with FPN the box classifier is the meta-architecture's "
                f"fc head (fpn_head), not {name}'s later layers"
            )

    # -- single-stage ---------------------------------------------------------
    @abc.abstractmethod
    def build_ssd_feature_maps(self):
        """tf_keras.Model: preprocessed [B,H,W,3] -> list of feature maps, finest first."""

    # -- FPN ------------------------------------------------------------------
    def build_fpn(self, min_level, max_level, depth):
        """tf_keras.Model: preprocessed [B,H,W,3] -> dict {str(level): [B,H/2^l,W/2^l,depth]}."""
        raise ConfigError(
            f"feature_extractor.fpn: {getattr(self, 'registered_name', type(self).__name__)} "
            "does not support FPN"
        )

    # -- helpers --------------------------------------------------------------
    def load_weights(self):
        """Initialise the backbone from ``weights_path`` (no-op when empty).

        The sub-networks share layer objects with ``build_backbone()``, so
        loading the backbone's file initialises every sub-network built from
        it. Returns the ``WeightsReport`` (0 when nothing is loaded); a
        file that does not match raises ConfigError naming it.
        """
        if not self.weights_path:
            return 0
        path = self.weights_path
        from detbench.train import pretrain

        if path.startswith(pretrain.REFERENCE_PREFIX):
            path = pretrain.resolve_reference(path)
            if path is None:
                if not self.is_training:
                    return 0  # evaluation and export restore every variable from a checkpoint
                raise ConfigError(
                    f"feature_extractor.weights_path: {self.weights_path}: no such pretrained "
                    f"weights in {pretrain.cache_dir()} or {pretrain.SHIPPED_DIR}; a sweep "
                    "pretrains them first, or run `detbench pretrain --extractor "
                    f"{self.config.type} --depth_multiplier {self.config.depth_multiplier:g}`"
                )
        from detbench.feature_extractors.weights import load_backbone_weights

        return load_backbone_weights(self.build_backbone(), path, self)

    @staticmethod
    def _image_input():
        """The image input of a sub-network: [B, H, W, 3], any size."""
        import tf_keras

        return tf_keras.Input((None, None, 3), name="image")

    @staticmethod
    def parameter_count(model, trainable_only=False):
        weights = model.trainable_weights if trainable_only else model.weights
        return int(sum(tf.size(w).numpy() for w in weights))


def weights_file_format(path):
    """The format of the weights file at ``path`` (None when there is none to read)."""
    if not path:
        return None
    from detbench.feature_extractors.weights import file_format

    return file_format(path)


def build_feature_extractor(config, is_training=True, meta_arch=None):
    """Proto -> FeatureExtractor through the registry."""
    import detbench.feature_extractors  # noqa: F401  (registers every family)

    if not config.type:
        raise ConfigError(
            "feature_extractor.type is empty; known: " + ", ".join(FEATURE_EXTRACTORS.names())
        )
    try:
        cls = FEATURE_EXTRACTORS.get(config.type)
    except KeyError as e:
        raise ConfigError(f"feature_extractor.type: {e}") from None
    return cls.from_config(config, is_training=is_training, meta_arch=meta_arch)
