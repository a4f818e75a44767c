"""The training noise of a grid's accuracy: its cells' metrics over repeated runs.

Training is not bit-reproducible on CPU (threads sum in varying order), so the
same recipe gives a different model, and a different mAP, every run. A grid's
spread file (``<grid>.spread.json`` beside the grid file) keeps the result rows
of repeated runs of the same grid with the same ``train_steps``; ``detbench
seed-spread`` writes it (``studies/seed_spread.py``). From it:

- each cell's run-to-run standard deviation of every accuracy metric
  (``attach``: ``<metric>_sd`` columns, by cell label), which the frontier uses
  to call two cells' accuracies equal within the noise;
- each accuracy finding's statistic recomputed on every stored run, whose
  spread is that finding's noise band (``benchmark.findings``).

A spread recorded at another ``train_steps`` does not apply (the noise shrinks
as training goes on) and is ignored with a note.
"""

import json
import math
import os

from detbench.errors import DetbenchError

SUFFIX = ".spread.json"
METRICS = ("mAP", "mAP@.50", "mAP@.75", "mAP (small)", "mAP (medium)", "mAP (large)")
# The columns a stored row keeps: what tables.to_frame and the findings read.
KEEP = (
    "label",
    "model_label",
    "cell_id",
    "train_key",
    "meta_arch",
    "variant",
    "feature_extractor",
    "fpn",
    "resolution",
    "train_resolution",
    "num_proposals",
    "output_stride",
    "train_output_stride",
    "runtime",
    "precision",
    "batch_size",
    "latency_ms",
    "latency_rel",
    "reference_ms",
    "peak_rss_mb",
    "error",
) + METRICS


def path_for(grid_path):
    """The spread file of a grid file."""
    base = grid_path[: -len(".pbtxt")] if grid_path.endswith(".pbtxt") else grid_path
    return base + SUFFIX


class Spread:
    """Stored runs of one grid at one train_steps: ``runs`` is a list of
    {"source": str, "rows": [row, ...]}."""

    def __init__(self, train_steps, runs, path=""):
        self.train_steps, self.runs, self.path = train_steps, runs, path

    def values(self, label, metric):
        out = []
        for run in self.runs:
            for r in run["rows"]:
                v = r.get(metric)
                if r.get("label") == label and isinstance(v, (int, float)) and math.isfinite(v):
                    out.append(float(v))
        return out

    def sd(self, label, metric):
        """Sample standard deviation over the stored runs (None with fewer than 2)."""
        vals = self.values(label, metric)
        if len(vals) < 2:
            return None
        mean = sum(vals) / len(vals)
        return math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))

    def to_json(self):
        return {"train_steps": self.train_steps, "runs": self.runs}


def load(grid_path, train_steps):
    """(Spread or None, note): the grid's spread file if it exists and was recorded at
    ``train_steps``; a damaged file is an error naming it."""
    path = path_for(grid_path) if grid_path else ""
    if not path or not os.path.isfile(path):
        return None, "no seed spread recorded for this grid (detbench seed-spread)"
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        steps, runs = int(data["train_steps"]), list(data["runs"])
        for run in runs:
            if not isinstance(run.get("rows"), list):
                raise ValueError("a run without rows")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DetbenchError(f"{path}: not a seed-spread file ({e})") from None
    if steps != train_steps:
        return None, (
            f"{os.path.basename(path)} was recorded at {steps} training steps, this sweep "
            f"trains {train_steps}: its spread does not apply"
        )
    return Spread(steps, runs, path), f"seed spread: {len(runs)} runs in {path}"


def stored_row(row):
    return {k: row[k] for k in KEEP if k in row and not isinstance(row[k], (dict, list))}


def attach(df, spread):
    """``<metric>_sd`` columns (the cell's run-to-run standard deviation; NaN where
    the spread has fewer than two runs of the cell, or there is no spread)."""
    for metric in METRICS:
        col = f"{metric}_sd"
        if spread is None or "label" not in df:
            df[col] = float("nan")
            continue
        df[col] = [
            (lambda s: float("nan") if s is None else s)(spread.sd(str(label), metric))
            for label in df["label"]
        ]
    return df
