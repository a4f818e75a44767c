"""Feature extractors, one module per backbone family, registered by name.

Importing this package registers every family: ``FEATURE_EXTRACTORS`` in
``base.py`` then lists vgg16, mobilenet_v1, mobilenet_v2, inception_v2,
inception_v3, inception_resnet_v2, resnet50_v1, resnet101_v1, resnet152_v1.
"""

from detbench.feature_extractors import (
    inception_resnet_v2,  # noqa: F401
    inception_v2,  # noqa: F401
    inception_v3,  # noqa: F401
    mobilenet,  # noqa: F401
    resnet,  # noqa: F401
    vgg,  # noqa: F401
)
