"""DetectionModel proto -> DetectionModel, through the meta-architecture registry."""

from detbench.config.validate import check_model_config
from detbench.errors import ConfigError
from detbench.meta_arch.base import META_ARCHITECTURES


def build_model(model_config, is_training=True):
    """``model_config``: a ``model_pb2.DetectionModel`` (oneof ssd / faster_rcnn / ...)
    -> the model with every variable created (``DetectionModel.build_variables``),
    after the checks ``detbench validate`` runs (``check_model_config``: the
    class's ``check_config`` and the extractor's)."""
    import detbench.meta_arch  # noqa: F401  (registers every meta-architecture)

    name = model_config.WhichOneof("model")
    if name is None:
        raise ConfigError(
            "model: no meta-architecture set; known: " + ", ".join(META_ARCHITECTURES.names())
        )
    cls = META_ARCHITECTURES.get(name)
    config = getattr(model_config, name)
    check_model_config(model_config)
    model = cls.from_config(config, is_training=is_training)
    model.build_variables()
    return model
