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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m detbench.config")
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check pipeline / sweep files; stop at the first error")
    v.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    for path in args.files:
        print(validate_file(path))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
