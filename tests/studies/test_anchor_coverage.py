"""studies/anchor_coverage.py: best anchor IoU per object, by size range."""

import glob
import json
import os
import re
import subprocess
import sys

import numpy as np

from detbench.studies.anchor_coverage import best_iou, coverage_table
from tests.studies import REPO, TINY_SSD


def test_best_iou_hand_worked():
    boxes = [[0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 2, 1], [5, 5, 6, 6]]
    anchors = [[0, 0, 1, 1], [1, 1, 3, 3]]
    # box 1 equals anchor 0; box 2 overlaps anchor 0 by 1 of 4 (1/4) and anchor 1 by
    # 1 of 7 (1/7); box 3 holds anchor 0 (1/2); box 4 touches nothing
    np.testing.assert_allclose(best_iou(boxes, anchors), [1.0, 0.25, 0.5, 0.0])
    assert best_iou(np.zeros((0, 4)), anchors).shape == (0,)


def test_coverage_table_by_size():
    rows = coverage_table([0.9, 0.4, 0.6, 0.7], [100, 2000, 10000, 3000], [0.5, 0.65])
    table = {name: (n, shares, median) for name, n, shares, median in rows}
    assert table["small"] == (1, [1.0, 1.0], 0.9)
    assert table["medium"][0] == 2 and table["medium"][1] == [0.5, 0.5]
    np.testing.assert_allclose(table["medium"][2], 0.55)
    assert table["large"] == (1, [1.0, 0.0], 0.6)
    assert table["all"][0] == 4 and table["all"][1] == [0.75, 0.5]


def test_cli_counts_every_object(tmp_path):
    cache = f"eval_input_reader.synthetic_shapes.cache_dir={tmp_path}"
    cmd = [
        sys.executable,
        os.path.join(REPO, "studies", "anchor_coverage.py"),
        "--pipeline",
        TINY_SSD,
        "--set",
        cache,
        "--num_images",
        "3",
        "--iou",
        "0.3,0.5",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "at 64x64" in proc.stdout
    rows = dict(
        (m[0], m[1:])
        for m in re.findall(
            r"^\| (\w+) \| (\d+) \| ([\d.]+|nan) \| ([\d.]+|nan) \| ([\d.]+|nan) \|$",
            proc.stdout,
            re.M,
        )
    )
    assert set(rows) == {"small", "medium", "large", "all"}, proc.stdout
    # independently: the annotations of the first 3 validation images in the set's JSON
    (path,) = glob.glob(str(tmp_path / "*" / "instances_val.json"))
    with open(path) as f:
        coco = json.load(f)
    first = {im["id"] for im in sorted(coco["images"], key=lambda im: im["id"])[:3]}
    expected = sum(a["image_id"] in first for a in coco["annotations"])
    assert int(rows["all"][0]) == expected > 0
    assert sum(int(rows[k][0]) for k in ("small", "medium", "large")) == expected
    share_03, share_05 = float(rows["all"][1]), float(rows["all"][2])
    assert 0.0 <= share_05 <= share_03 <= 1.0
    bad = subprocess.run(cmd[:4] + ["--iou", "half"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--iou" in bad.stderr
