"""Issue 27 item 4: a FIFO, /dev/zero or a folder given where a file is read is one
line (no hang, no MemoryError), and reads are bounded."""

import io
import os

import pytest

from detbench.benchmark import sweep
from detbench.config import __main__ as config_cli, load_pipeline, load_sweep
from detbench.data import coco, images, tfrecord
from detbench.data.errors import DataError
from detbench.errors import ConfigError, run_cli
from detbench.paths import read_bounded
from tests.evaluation.coco_fixture import write_coco_set


@pytest.fixture
def fifo(tmp_path):
    path = str(tmp_path / "pipe")
    os.mkfifo(path)  # nobody writes to it: an open() for reading would block forever
    return path


def test_a_fifo_or_dev_zero_as_a_pipeline_is_one_line_exit_2(fifo, capsys):
    assert run_cli(config_cli.validate_main, [fifo]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {fifo}: is a FIFO (named pipe), not a regular file\n"
    with pytest.raises(ConfigError, match=r"^/dev/zero: is a character device, not a regular"):
        load_pipeline("/dev/zero")


def test_a_fifo_as_a_sweep_grid_and_through_the_sweep_command(fifo, capsys, tmp_path):
    with pytest.raises(ConfigError, match="is a FIFO"):
        load_sweep(fifo)
    assert run_cli(sweep.main, ["--grid", fifo, "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_fifo_as_annotations_file_or_image_is_one_line(fifo, tmp_path):
    image_dir, annotations = write_coco_set(str(tmp_path / "set"))
    with pytest.raises(DataError) as e:
        coco.load_coco(fifo, image_dir)
    assert str(e.value) == f"annotations_file {fifo}: is a FIFO (named pipe), not a regular file"
    os.remove(os.path.join(image_dir, "1.jpg"))
    os.mkfifo(os.path.join(image_dir, "1.jpg"))  # one of the images
    with pytest.raises(DataError) as e:
        coco.load_coco(annotations, image_dir)
    assert str(e.value).startswith(f"{annotations}: image id 11: ")
    assert str(e.value).endswith("1.jpg: is a FIFO (named pipe), not a regular file")
    with pytest.raises(DataError, match="image_dir .*: is not a folder"):
        coco.load_coco(annotations, annotations)


def test_special_files_as_image_label_map_and_tfrecord(fifo):
    with pytest.raises(DataError, match=r"^--image /dev/zero: is a character device"):
        images.read_rgb("/dev/zero", name="--image /dev/zero")
    with pytest.raises(DataError, match=r"^label map .*pipe: is a FIFO"):
        tfrecord.read_label_map(fifo)
    with pytest.raises(DataError, match=r"^tfrecord input_path .*pipe: is a FIFO"):
        tfrecord.expand_paths([fifo])


def test_reads_are_bounded():
    assert read_bounded(io.StringIO("abc"), 3, "label map", "m.pbtxt") == "abc"
    with pytest.raises(ConfigError, match=r"^label map m.pbtxt: more than the 0 MiB"):
        read_bounded(io.StringIO("abcd"), 3, "label map", "m.pbtxt")
