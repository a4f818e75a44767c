"""``python -m detbench COMMAND``: the same as the ``detbench`` command (see cli.py)."""

import sys

from detbench.cli import console

if __name__ == "__main__":
    sys.exit(console())
