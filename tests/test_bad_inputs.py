"""User mistakes that used to end in a traceback or silently (issue 18, items 4 and 6):
each is one line on stderr and exit 2, and outputs are checked before the work."""

import os

import pytest
import tensorflow as tf

from detbench import evaluate, infer
from detbench.config import __main__ as config_cli
from detbench.errors import run_cli
from detbench.export import __main__ as export_cli
from detbench.train import __main__ as train_cli
from tests.conftest import REPO_ROOT

TINY = os.path.join(REPO_ROOT, "tests", "benchmark", "tiny_ssd.pbtxt")  # 3 classes, 3 in data
DEPTH = ["--set", "model.ssd.feature_extractor.depth_multiplier=0.5"]


def cli(capsys, main, *args):
    code = run_cli(main, list(args))
    out, err = capsys.readouterr()
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    return code, lines, err


def one_line(code, lines, err):
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny SSD trained one step (depth multiplier 0.25)."""
    model_dir = str(tmp_path_factory.mktemp("trained"))
    assert run_cli(
        train_cli.main,
        ["--pipeline", TINY, "--model_dir", model_dir, "--num_steps", "1", "--no_progress"],
    ) in (0, None)
    return model_dir


def _no_model(monkeypatch):
    """Fail the test if a model is built: the check must come first."""
    from detbench.builders import model_builder

    def refuse(*a, **k):
        raise AssertionError("the model was built before the output was checked")

    monkeypatch.setattr(model_builder, "build_model", refuse)


def _check_mismatch(line, model_dir):
    """The message names a variable and both shapes; the checkpoint really holds that
    variable with the first shape (read here with tf.train.list_variables)."""
    assert "does not match this config's model" in line, line
    name = line.split(": ")[-1].split(" has shape ")[0].split()[-1]
    saved = dict(tf.train.list_variables(tf.train.latest_checkpoint(model_dir)))
    shape = saved[name + "/.ATTRIBUTES/VARIABLE_VALUE"]
    assert f"has shape {list(shape)} in the checkpoint and [" in line, line


def test_checkpoint_mismatch_in_train(trained, capsys):
    line = one_line(
        *cli(
            capsys,
            train_cli.main,
            "--pipeline",
            TINY,
            "--model_dir",
            trained,
            "--num_steps",
            "2",
            "--no_progress",
            *DEPTH,
        )
    )
    _check_mismatch(line, trained)


def test_checkpoint_mismatch_in_evaluate(trained, tmp_path, capsys):
    line = one_line(
        *cli(
            capsys,
            evaluate.main,
            "--pipeline",
            TINY,
            "--checkpoint",
            trained,
            "--out",
            str(tmp_path / "eval"),
            "--no_progress",
            *DEPTH,
        )
    )
    _check_mismatch(line, trained)


def test_checkpoint_mismatch_in_export(trained, tmp_path, capsys):
    line = one_line(
        *cli(
            capsys,
            export_cli.main,
            "--pipeline",
            TINY,
            "--checkpoint",
            trained,
            "--out",
            str(tmp_path / "export"),
            *DEPTH,
        )
    )
    _check_mismatch(line, trained)


def test_binary_file_given_as_pbtxt(tmp_path, capsys):
    path = tmp_path / "model.pbtxt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    for main, args in (
        (config_cli.main, ["validate", str(path)]),
        (train_cli.main, ["--pipeline", str(path), "--model_dir", str(tmp_path / "m")]),
    ):
        line = one_line(*cli(capsys, main, *args))
        assert f"{path}: not a text file (byte 0x89 at offset 0" in line, line


def test_set_out_of_range_int(tmp_path, capsys):
    line = one_line(
        *cli(
            capsys,
            train_cli.main,
            "--pipeline",
            TINY,
            "--model_dir",
            str(tmp_path / "m"),
            "--set",
            "train_config.batch_size=99999999999",
        )
    )
    assert "train_config.batch_size=99999999999" in line and "does not fit batch_size" in line
    assert "int32" in line


def test_model_dir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "a_file"
    path.write_text("x")
    line = one_line(
        *cli(capsys, train_cli.main, "--pipeline", TINY, "--model_dir", str(path), "--no_progress")
    )
    assert line == f"error: model_dir {path}: is a file, not a folder"


def test_annotations_file_that_is_a_directory(tmp_path, capsys):
    folder = tmp_path / "annotations"
    folder.mkdir()
    line = one_line(
        *cli(
            capsys,
            train_cli.main,
            "--pipeline",
            TINY,
            "--model_dir",
            str(tmp_path / "m"),
            "--no_progress",
            "--set",
            f"train_input_reader.coco_json={{annotations_file: '{folder}' "
            f"image_dir: '{tmp_path}'}}",
        )
    )
    assert f"annotations_file {folder}: is a folder" in line, line


def _image(tmp_path):
    import numpy as np
    from PIL import Image

    path = tmp_path / "in.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path)
    return str(path)


@pytest.mark.parametrize(
    "out, message",
    [
        ("missing/out.png", "does not exist"),
        ("out.xyz", "unknown extension '.xyz'; use one of"),
    ],
)
def test_infer_out_is_checked_before_the_model_runs(tmp_path, capsys, monkeypatch, out, message):
    _no_model(monkeypatch)
    line = one_line(
        *cli(
            capsys,
            infer.main,
            "--pipeline",
            TINY,
            "--image",
            _image(tmp_path),
            "--out",
            str(tmp_path / out),
        )
    )
    assert f"--out {tmp_path / out}: " in line and message in line, line


def test_evaluate_out_that_is_a_file_is_checked_before_the_model_runs(
    trained, tmp_path, capsys, monkeypatch
):
    _no_model(monkeypatch)
    path = tmp_path / "results.json"
    path.write_text("{}")
    line = one_line(
        *cli(capsys, evaluate.main, "--pipeline", TINY, "--checkpoint", trained, "--out", str(path))
    )
    assert line == f"error: --out {path}: is a file, not a folder"


NUM_CLASSES = ["--set", "model.ssd.num_classes=5"]


def test_num_classes_not_matching_the_data_in_train(tmp_path, capsys):
    line = one_line(
        *cli(
            capsys,
            train_cli.main,
            "--pipeline",
            TINY,
            "--model_dir",
            str(tmp_path / "m"),
            "--no_progress",
            *NUM_CLASSES,
        )
    )
    assert (
        "model.ssd.num_classes vs train_input_reader: num_classes is 5 but the data has "
        "3 categories"
        in line
        and "set num_classes: 3" in line
    ), line
    assert not os.path.exists(tmp_path / "m" / "checkpoint")  # refused before a step


def test_num_classes_not_matching_the_data_in_evaluate(trained, tmp_path, capsys):
    line = one_line(
        *cli(
            capsys,
            evaluate.main,
            "--pipeline",
            TINY,
            "--checkpoint",
            trained,
            "--out",
            str(tmp_path / "eval"),
            "--no_progress",
            *NUM_CLASSES,
        )
    )
    assert (
        "model.ssd.num_classes vs eval_input_reader: num_classes is 5 but the data has "
        "3 categories" in line
    ), line
    assert not os.path.exists(tmp_path / "eval")
