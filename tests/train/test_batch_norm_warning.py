"""Trainer helpers that need no training run."""

import os


def test_batch_norm_warning_for_short_runs_with_slow_moving_averages():
    from detbench.config import load_pipeline
    from detbench.train.trainer import batch_norm_warning

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p = load_pipeline(os.path.join(root, "configs", "ssd_mobilenet_v2_300.pbtxt"))
    # 0.997^300 = 0.41 of the initial statistics left; 0.997^1000 = 0.05
    assert "still hold 41% of their initial values" in batch_norm_warning(p, 300)
    assert batch_norm_warning(p, 1000) is None
    p.model.ssd.feature_extractor.batch_norm_momentum = 0.9  # 0.9^300 ~ 0
    assert batch_norm_warning(p, 300) is None
    p.model.ssd.feature_extractor.batch_norm_momentum = 0.997
    p.model.ssd.feature_extractor.freeze_batchnorm = True
    assert batch_norm_warning(p, 300) is None
