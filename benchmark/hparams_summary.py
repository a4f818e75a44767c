"""A sweep's cells as TensorBoard HParams, and its trainings' curves beside them.

(Not named tensorboard.py: `python benchmark/sweep.py` puts benchmark/ first on the path.)

``write_hparams(rows, out_dir)`` writes OUT/tensorboard/:

- the experiment (``hparams_config``): every axis of the measured cells as an
  hparam (the study's columns and the grid's own axes), latency, memory,
  FLOPs and the COCO metrics as metrics;
- ``cells/<cell_id>/``: one run per cell, its axis values as hparams and its
  numbers as scalars at step 0 (a failed cell: hparams only);
- ``training/<model label> [<train_key>]``: a link to each trained model's
  training summaries (OUT/models/<train_key>/train), so
  ``tensorboard --logdir OUT/tensorboard`` shows the HParams table, parallel
  coordinates and scatter plots and the loss curves in one place.

The folder is rebuilt from the rows on every summary (written beside and
renamed into place).
"""

import math
import os
import shutil

HPARAM_COLUMNS = (
    "meta_arch",
    "feature_extractor",
    "resolution",
    "num_proposals",
    "output_stride",
    "runtime",
    "precision",
    "batch_size",
)
METRICS = (
    ("latency_ms", "latency (ms, median)"),
    ("peak_rss_mb", "peak memory (MiB)"),
    ("gflops", "GFLOPs"),
    ("mAP", "mAP@[.5:.95]"),
    ("mAP@.50", "mAP@.5"),
    ("mAP (small)", "AP small"),
    ("mAP (medium)", "AP medium"),
    ("mAP (large)", "AP large"),
)


def _number(value):
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def cell_hparams(row):
    """{hparam name: value} of one result row (numbers where every value is one)."""
    values = {k: row.get(k) for k in HPARAM_COLUMNS}
    values.update(row.get("axis_values") or {})
    return {k: ("-" if v is None else v) for k, v in values.items()}


def _typed(all_values):
    """Per hparam: floats when every cell's value is a number, else strings."""
    names = sorted({k for values in all_values for k in values})
    numeric = {
        k: all(_number(v.get(k, "-")) is not None for v in all_values if k in v) for k in names
    }
    return [
        {k: (_number(v) if numeric[k] else str(v)) for k, v in values.items()}
        for values in all_values
    ], names


def write_hparams(rows, out_dir):
    """Write OUT/tensorboard (see the module docstring); returns its path."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    logdir = os.path.join(out_dir, "tensorboard")
    tmp = f"{logdir}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    typed, names = _typed([cell_hparams(r) for r in rows])
    hparams = {name: hp.HParam(name) for name in names}
    with tf.summary.create_file_writer(tmp).as_default():
        hp.hparams_config(
            hparams=list(hparams.values()),
            metrics=[hp.Metric(tag, display_name=title) for tag, title in METRICS],
        )
    for row, values in zip(rows, typed):
        run = os.path.join(tmp, "cells", row["cell_id"])
        with tf.summary.create_file_writer(run).as_default():
            hp.hparams({hparams[k]: v for k, v in values.items()}, trial_id=row.get("label"))
            for tag, _ in METRICS:
                x = _number(row.get(tag))
                if x is not None:
                    tf.summary.scalar(tag, x, step=0)
    links = os.path.join(tmp, "training")
    for row in rows:
        target = os.path.join(out_dir, "models", row.get("train_key", ""), "train")
        name = f"{row.get('model_label', '')} [{row.get('train_key', '')}]".replace("/", "_")
        if os.path.isdir(target) and not os.path.lexists(os.path.join(links, name)):
            os.makedirs(links, exist_ok=True)
            os.symlink(os.path.relpath(target, links), os.path.join(links, name))
    old = f"{logdir}.old{os.getpid()}"
    if os.path.exists(logdir):
        os.replace(logdir, old)
    os.replace(tmp, logdir)
    shutil.rmtree(old, ignore_errors=True)
    return logdir
