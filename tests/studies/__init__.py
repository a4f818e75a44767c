"""Tests of the standalone studies (studies/); they share the sweep tests' tiny SSD."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_SSD = os.path.join(REPO, "tests", "benchmark", "tiny_ssd.pbtxt")
