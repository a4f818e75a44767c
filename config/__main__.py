"""``python -m detbench.config validate FILE...``: check pipeline and sweep files."""

import argparse
import sys

from detbench.errors import run_cli


def _is_sweep(path):
    import re

    from detbench.config.loader import read_text

    return re.search(r"^\s*(base|axis)\s*[{:]", read_text(path), re.M) is not None


def validate_file(path, warnings=None):
    """The OK line for one file (ConfigError on its first problem); memory warnings are
    appended to ``warnings``."""
    from detbench.config import load_pipeline, load_sweep
    from detbench.config.grid import expand_grid
    from detbench.config.memory import memory_warning

    if _is_sweep(path):
        grid = expand_grid(load_sweep(path), path)
        found = {
            memory_warning(p, f"{path} ({c.label})")
            for c in grid.cells
            for p in (c.train_pipeline, c.test_pipeline)
        }
        line = f"{path}: sweep OK ({len(grid.cells)} cells, {len(grid.trainings())} trainings)"
    else:
        pipeline = load_pipeline(path)
        found = {memory_warning(pipeline, path)}
        line = f"{path}: pipeline OK ({pipeline.model.WhichOneof('model')})"
    if warnings is not None:
        warnings.extend(sorted(w for w in found if w))
    return line


EXAMPLE = (
    "example:\n  detbench validate configs/speed_accuracy.pbtxt configs/ssd_mobilenet_v2_300.pbtxt"
)


def _add_validate_arguments(parser):
    parser.add_argument("files", nargs="+", help="pipeline or sweep .pbtxt files")


def _validate(files):
    for path in files:
        warnings = []
        print(validate_file(path, warnings))
        for warning in warnings:
            print(warning, file=sys.stderr)
    return 0


def validate_main(argv=None):
    """``detbench validate FILE...``."""
    parser = argparse.ArgumentParser(
        prog="detbench validate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check pipeline and sweep files; stop at the first error (one line, exit 2).",
        epilog=EXAMPLE,
    )
    _add_validate_arguments(parser)
    return _validate(parser.parse_args(argv).files)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m detbench.config")
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser(
        "validate",
        help="check pipeline / sweep files; stop at the first error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLE,
    )
    _add_validate_arguments(v)
    return _validate(parser.parse_args(argv).files)


if __name__ == "__main__":
    sys.exit(run_cli(main))
