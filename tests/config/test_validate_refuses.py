"""``python -m detbench.config validate`` refuses what a run would refuse, and nonsense
that nothing refused before (issue 18, item 5)."""

import os

import pytest

from detbench.config import __main__ as config_cli, memory
from detbench.errors import run_cli
from tests.conftest import REPO_ROOT

TINY = open(os.path.join(REPO_ROOT, "tests", "benchmark", "tiny_ssd.pbtxt")).read()


def validate(tmp_path, capsys, text):
    path = tmp_path / "p.pbtxt"
    path.write_text(text)
    code = run_cli(config_cli.main, ["validate", str(path)])
    out, err = capsys.readouterr()
    return code, out, err, str(path)


@pytest.mark.parametrize(
    "old, new, message",
    [
        (
            "learning_rate: 0.01",
            "learning_rate: -0.01",
            "train_config.optimizer.momentum.learning_rate.constant.learning_rate must be > 0, got -0.01",
        ),
        ("momentum: 0.9 }", "momentum: 1.5 }", "momentum.momentum must be in [0, 1), got 1.5"),
        (
            "learning_rate { constant",
            "learning_rate { warmup_steps: -2 constant",
            "learning_rate.warmup_steps must be >= 0, got -2",
        ),
        (
            "log_every_n_steps: 1",
            "log_every_n_steps: -1",
            "train_config.log_every_n_steps must be >= 0",
        ),
        (
            "score_threshold: 0.01",
            "score_threshold: 1.5",
            "model.ssd.post_processing.batch_non_max_suppression.score_threshold: 1.5 is outside [0, 1]",
        ),
        (
            "height: 64 width: 64",
            "height: 10000 width: 64",
            "model.ssd.image_resizer.fixed_shape.height: 10000 px is outside 16..4096",
        ),
    ],
)
def test_validate_refuses_in_one_line(tmp_path, capsys, old, new, message):
    assert old in TINY
    code, out, err, path = validate(tmp_path, capsys, TINY.replace(old, new, 1))
    assert code == 2 and err.count("\n") == 1, out + err
    assert err.startswith(f"error: {path}: ") and message in err, err


def test_train_refuses_through_the_same_check(tmp_path):
    """The trainer's own check (before anything is built) is the one validate runs."""
    from google.protobuf import text_format

    from detbench.config.train_checks import check_train_config
    from detbench.errors import ConfigError
    from detbench.protos import pipeline_pb2
    from detbench.train.optimizers import build_optimizer

    pipeline = text_format.Parse(
        TINY.replace("learning_rate: 0.01", "learning_rate: -0.01"), pipeline_pb2.Pipeline()
    )
    for check in (
        lambda: check_train_config(pipeline.train_config, 2),
        lambda: build_optimizer(pipeline.train_config.optimizer, 2),
    ):
        with pytest.raises(ConfigError, match="learning_rate must be > 0, got -0.01"):
            check()


def test_memory_estimate_warns_above_the_machine(tmp_path, capsys, monkeypatch):
    """4096 x 4096, batch 8: 8 * 4096^2 px at 2 kB each is 268 GB of activations, beyond
    any machine here; the 64 px tiny pipeline (2 * 64^2 px: 16 MB + 1 GiB) is not."""
    text = TINY.replace("height: 64 width: 64", "height: 4096 width: 4096").replace(
        "batch_size: 2", "batch_size: 8"
    )
    monkeypatch.setattr(memory, "machine_bytes", lambda: 16 * 2**30)
    code, out, err, path = validate(tmp_path, capsys, text)
    assert code == 0 and "pipeline OK" in out
    expected_gib = (2**30 + 8 * 4096 * 4096 * 2000) / 2**30
    assert err.startswith(f"warning: {path}: needs roughly training ~{expected_gib:.1f} GiB")
    assert "this machine's 16.0 GiB" in err and err.count("\n") == 1
    code, out, err, _ = validate(tmp_path, capsys, TINY)
    assert code == 0 and err == ""
