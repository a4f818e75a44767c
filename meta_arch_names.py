"""The meta-architectures' names, read from the ``oneof model`` of
protos/model.proto (a model whose message has an ``rpn`` field is two-stage).

Imports only the generated protos, not TensorFlow, so the config layer, the
feature extractors and the exporter share one list without importing
TensorFlow or one another; a new meta-architecture's proto adds its name.
"""

from detbench.protos import model_pb2

_MODELS = model_pb2.DetectionModel.DESCRIPTOR.oneofs_by_name["model"].fields

ALL_META_ARCHS = tuple(f.name for f in _MODELS)
TWO_STAGE = tuple(f.name for f in _MODELS if "rpn" in f.message_type.fields_by_name)
