"""``python -m detbench.config validate FILE...``: check pipeline and sweep files."""
import argparse
import sys

from detbench.errors import ConfigError, run_cli


def _is_sweep(path):
    with open(path, encoding="utf-8") as f:
        head = f.read()
    import re
    return re.search(r"^\s*(base|axis)\s*[{:]", head, re.M) is not None


def validate_file(path):
    from detbench.config import load_pipeline, load_sweep
    from detbench.config.grid import expand_grid
    try:
        sweep = _is_sweep(path)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    if sweep:
        grid = expand_grid(load_sweep(path), path)
        return f"{path}: sweep OK ({len(grid.cells)} cells, {len(grid.trainings())} trainings)"
    pipeline = load_pipeline(path)
    return f"{path}: pipeline OK ({pipeline.model.WhichOneof('model')})"


EXAMPLE = "example:\n  detbench validate configs/speed_accuracy.pbtxt configs/ssd_mobilenet_v2_300.pbtxt"


def _add_validate_arguments(parser):
    parser.add_argument("files", nargs="+", help="pipeline or sweep .pbtxt files")


def _validate(files):
    for path in files:
        print(validate_file(path))
    return 0


def validate_main(argv=None):
    """``detbench validate FILE...``."""
    parser = argparse.ArgumentParser(
        prog="detbench validate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check pipeline and sweep files; stop at the first error (one line, exit 2).",
        epilog=EXAMPLE)
    _add_validate_arguments(parser)
    return _validate(parser.parse_args(argv).files)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m detbench.config")
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check pipeline / sweep files; stop at the first error",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE)
    _add_validate_arguments(v)
    return _validate(parser.parse_args(argv).files)


if __name__ == "__main__":
    sys.exit(run_cli(main))
