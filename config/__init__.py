"""The config layer: load pbtxt, apply overrides, validate, expand sweep grids."""

from detbench.config.loader import load_text_proto, parse_text
from detbench.config.overrides import apply_override, apply_overrides, get_field
from detbench.config.validate import check_pipeline, meta_arch_config, meta_arch_name
from detbench.errors import ConfigError


def load_pipeline(path, overrides=(), check_registry=True, adjust=None):
    """A validated ``pipeline_pb2.Pipeline`` from a text-format file; ``adjust(pipeline)``
    (the command line's ``--data``) runs before the ``overrides``."""
    from detbench.protos import pipeline_pb2

    pipeline = load_text_proto(path, pipeline_pb2.Pipeline())
    if adjust is not None:
        adjust(pipeline)
    apply_overrides(pipeline, overrides)
    try:
        check_pipeline(pipeline, check_registry=check_registry)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return pipeline


def load_sweep(path):
    """A ``sweep_pb2.Sweep`` from a text-format file (grid checked by expand_grid)."""
    from detbench.protos import sweep_pb2

    return load_text_proto(path, sweep_pb2.Sweep())


__all__ = [
    "ConfigError",
    "load_pipeline",
    "load_sweep",
    "load_text_proto",
    "parse_text",
    "apply_override",
    "apply_overrides",
    "get_field",
    "check_pipeline",
    "meta_arch_config",
    "meta_arch_name",
]
