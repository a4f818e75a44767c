"""Meta-architectures, registered by the name of their model.proto oneof field."""

from detbench.meta_arch import ssd  # noqa
from detbench.meta_arch import faster_rcnn  # noqa
from detbench.meta_arch import rfcn  # noqa
from detbench.meta_arch import cascade_rcnn  # noqa
