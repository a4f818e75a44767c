"""detbench: build, train, measure and compare object detectors (Huang et al., CVPR 2017)."""

import os as _os

# TensorFlow's C++ start-up chatter hides the tool's own output; users can
# still ask for it with TF_CPP_MIN_LOG_LEVEL=0.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
