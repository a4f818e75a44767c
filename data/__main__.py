"""``python -m detbench.data synthetic|to-tfrecord ...``: the same as ``detbench data ...``."""

import sys

from detbench.cli import main
from detbench.errors import run_cli

if __name__ == "__main__":
    sys.exit(run_cli(lambda argv: main(["data", *sys.argv[1:]])))
