"""The meta-architectures' names (the ``oneof model`` of protos/model.proto), by kind.

Imports nothing, so the config layer, the feature extractors and the exporter
share one list without importing TensorFlow or one another.
"""

TWO_STAGE = ("faster_rcnn", "rfcn", "cascade_rcnn")
ALL_META_ARCHS = ("ssd",) + TWO_STAGE
