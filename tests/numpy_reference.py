"""Numpy references that tests check detbench against, written independently of it."""

import numpy as np


def iou(a, b):
    """IoU of two [ymin, xmin, ymax, xmax] boxes, in plain Python arithmetic
    (an inverted side counts as zero area; no overlap or no area: 0)."""
    ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area_a = max(a[2] - a[0], 0) * max(a[3] - a[1], 0)
    area_b = max(b[2] - b[0], 0) * max(b[3] - b[1], 0)
    union = area_a + area_b - ih * iw
    return ih * iw / union if union > 0 else 0.0


def iou_matrix(boxes1, boxes2):
    """[N, M] IoU of [N, 4] and [M, 4] boxes, one pair at a time (float64)."""
    b1, b2 = np.asarray(boxes1, np.float64), np.asarray(boxes2, np.float64)
    out = np.zeros((len(b1), len(b2)))
    for i, a in enumerate(b1):
        for j, b in enumerate(b2):
            out[i, j] = iou(a, b)
    return out
