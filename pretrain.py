"""Pretrain a feature extractor on synthetic shape classification (train/pretrain.py).

    python -m detbench.pretrain --extractor mobilenet_v2 [--depth_multiplier 0.5]
        [--resolution 96] [--steps 600] [--minutes M] [--out FILE.h5]

Writes the backbone's weights (what ``feature_extractor.weights_path`` loads) and
a JSON report beside them (steps, minutes, validation accuracy). Without --out the
file goes to detbench's cache (``$DETBENCH_CACHE_DIR`` or ``~/.cache/detbench``),
where sweeps find it; ``--ship`` writes it to the repository's ``pretrained/``
folder (the files the default sweep starts from). A killed run resumes from its
last checkpoint when started again with the same arguments.
"""

import argparse
import logging
import os
import sys

from detbench.errors import ConfigError, run_cli


def parse_args(argv):
    from detbench.train.pretrain import Recipe

    d = Recipe()
    p = argparse.ArgumentParser(
        prog="detbench pretrain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: detbench pretrain --extractor mobilenet_v2 --steps 600",
    )
    p.add_argument("--extractor", required=True, help="a registered feature extractor")
    p.add_argument("--depth_multiplier", type=float, default=1.0)
    p.add_argument("--min_depth", type=int, default=16)
    # Unset: the extractor's own recipe (its pretraining_recipe), else the common one.
    p.add_argument("--resolution", type=int, help=f"crop side in px (default {d.resolution})")
    p.add_argument("--steps", type=int, help=f"default {d.steps}")
    p.add_argument("--batch_size", type=int, help=f"default {d.batch_size}")
    p.add_argument(
        "--learning_rate",
        type=float,
        help=f"peak of the cosine (default {d.learning_rate:g}, or the extractor's own)",
    )
    p.add_argument(
        "--num_train_images",
        type=int,
        help=f"generator images the training crops come from (default {d.num_train_images})",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="stop after this much training time (the report says how many steps ran)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", help="weights file (.h5); default: detbench's cache")
    where.add_argument(
        "--ship", action="store_true", help="write to the repository's pretrained/ folder"
    )
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import detbench.feature_extractors  # noqa: F401  (registers every family)
    from detbench.feature_extractors.base import FEATURE_EXTRACTORS
    from detbench.protos import feature_extractor_pb2
    from detbench.train import pretrain

    if args.extractor not in FEATURE_EXTRACTORS:
        raise ConfigError(
            f"--extractor {args.extractor!r}: unknown; known: "
            f"{', '.join(FEATURE_EXTRACTORS.names())}"
        )
    if args.minutes is not None and args.minutes <= 0:
        raise ConfigError(f"--minutes: must be positive, got {args.minutes}")
    config = feature_extractor_pb2.FeatureExtractor(
        type=args.extractor, depth_multiplier=args.depth_multiplier, min_depth=args.min_depth
    )
    FEATURE_EXTRACTORS.get(args.extractor).check_config(config)
    given = {
        k: getattr(args, k)
        for k in ("resolution", "steps", "batch_size", "learning_rate", "num_train_images")
        if getattr(args, k) is not None
    }
    recipe = pretrain.recipe_for(config, pretrain.Recipe(**given, explicit=tuple(given)))
    pretrain.check_recipe(recipe)
    key = pretrain.cache_key(config, recipe)
    if args.out:
        out = args.out
    else:
        out = os.path.join(pretrain.SHIPPED_DIR if args.ship else pretrain.cache_dir(), key + ".h5")
    if not out.endswith(".h5"):
        raise ConfigError(f"--out {out}: a weights file ends in .h5")
    folder = os.path.dirname(os.path.abspath(out))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ConfigError(f"--out {out}: {folder} is not a folder")
    logging.basicConfig(level=logging.WARNING)
    report = pretrain.pretrain(
        config, recipe, out, time_budget_s=None if args.minutes is None else 60 * args.minutes
    )
    print(report.summary())
    print(
        f'use it: feature_extractor {{ type: "{args.extractor}" weights_path: "{out}" }}'
        + ("" if args.out else f'  (or weights_path: "{pretrain.REFERENCE_PREFIX}{key}")')
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
