import json
import os

import pytest

from detbench.data import DataError, build_dataset, load_dataset_info
from detbench.errors import DetbenchError
from detbench.protos import input_reader_pb2
from tests.data.data_helpers import ann, coco_reader_config, write_coco

CATS = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def _dataset(tmp_path, annotations, images=((1, "one.png", 20, 30), (2, "two.png", 20, 30))):
    return write_coco(str(tmp_path), list(images), annotations, CATS)


def _error(image_dir, annotations_file, **fields):
    with pytest.raises(DataError) as e:
        build_dataset(coco_reader_config(image_dir, annotations_file, **fields), 1, training=False)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_data_error_is_a_detbench_value_error():
    assert issubclass(DataError, DetbenchError) and issubclass(DataError, ValueError)


def test_missing_image_file(tmp_path):
    image_dir, annotations_file = _dataset(tmp_path, [ann(1, 2, 1, [1, 1, 5, 5])])
    os.remove(os.path.join(image_dir, "two.png"))
    message = _error(image_dir, annotations_file)
    assert annotations_file in message and "image id 2" in message
    assert os.path.join(image_dir, "two.png") in message and "not found" in message


def test_corrupt_image_file(tmp_path):
    image_dir, annotations_file = _dataset(tmp_path, [])
    with open(os.path.join(image_dir, "one.png"), "wb") as f:
        f.write(b"\x89PNG garbage, not an image")
    message = _error(image_dir, annotations_file)
    assert "image id 1" in message and os.path.join(image_dir, "one.png") in message
    assert "cannot read image" in message


def test_truncated_jpeg(tmp_path):
    image_dir, annotations_file = write_coco(
        str(tmp_path), [(4, "t.jpg", 32, 32)], [], CATS, image_format="JPEG"
    )
    path = os.path.join(image_dir, "t.jpg")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    message = _error(image_dir, annotations_file)
    assert "image id 4" in message and path in message and "truncated" in message


def test_image_size_differs_from_json(tmp_path):
    image_dir, annotations_file = _dataset(tmp_path, [])
    with open(annotations_file) as f:
        coco = json.load(f)
    coco["images"][1]["width"] = 31
    with open(annotations_file, "w") as f:
        json.dump(coco, f)
    message = _error(image_dir, annotations_file)
    assert "image id 2" in message and "30x20" in message and "31x20" in message


@pytest.mark.parametrize(
    "bbox, words",
    [
        ([25, 2, 10, 5], "outside the 30x20 image"),  # x + w = 35 > 30
        ([-3, 2, 5, 5], "outside"),
        ([10, 2, -4, 5], "negative"),  # xmin > xmax
        ([10, 2, 0, 5], "zero"),
        ([10, 2, 5, "x"], "not 4 numbers"),
        ([10, 2, 5], "not 4 numbers"),
    ],
)
def test_bad_box_names_annotation_image_and_file(tmp_path, bbox, words):
    image_dir, annotations_file = _dataset(
        tmp_path, [ann(7, 1, 1, [1, 1, 4, 4]), {**ann(8, 2, 2, [1, 1, 1, 1]), "bbox": bbox}]
    )
    message = _error(image_dir, annotations_file)
    assert annotations_file in message and "annotation id 8" in message
    assert "image id 2" in message and os.path.join(image_dir, "two.png") in message
    assert words in message


def test_unknown_category_id(tmp_path):
    image_dir, annotations_file = _dataset(tmp_path, [ann(3, 1, 99, [1, 1, 4, 4])])
    message = _error(image_dir, annotations_file)
    assert "annotation id 3" in message and "image id 1" in message
    assert "unknown category_id 99" in message and "[1, 2]" in message


def test_annotation_of_unknown_image(tmp_path):
    image_dir, annotations_file = _dataset(tmp_path, [ann(5, 77, 1, [1, 1, 4, 4])])
    message = _error(image_dir, annotations_file)
    assert "annotation id 5" in message and "image_id 77" in message


def test_empty_dataset(tmp_path):
    image_dir, annotations_file = _dataset(tmp_path, [], images=())
    message = _error(image_dir, annotations_file)
    assert annotations_file in message and "empty dataset" in message


def test_missing_and_invalid_annotations_file(tmp_path):
    message = _error(str(tmp_path), str(tmp_path / "nope.json"))
    assert "not found" in message and "nope.json" in message
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert "not valid JSON" in _error(str(tmp_path), str(bad))


def test_no_source_configured():
    with pytest.raises(DataError, match="no source"):
        load_dataset_info(input_reader_pb2.InputReader())


def test_skip_bad_examples_counts_what_was_skipped(tmp_path, caplog):
    images = [(i, f"{i}.png", 20, 30) for i in range(1, 7)]
    annotations = [
        ann(1, 1, 1, [1, 1, 4, 4]),
        ann(2, 2, 1, [1, 1, 40, 4]),  # bad box
        ann(3, 3, 2, [1, 1, 4, 4]),  # image 3 will be corrupt
        ann(4, 5, 5, [1, 1, 4, 4]),  # unknown category
        ann(5, 6, 2, [2, 2, 3, 3]),
    ]
    image_dir, annotations_file = write_coco(str(tmp_path), images, annotations, CATS)
    with open(os.path.join(image_dir, "3.png"), "wb") as f:
        f.write(b"broken")
    os.remove(os.path.join(image_dir, "4.png"))
    config = coco_reader_config(image_dir, annotations_file, skip_bad_examples=True)
    with caplog.at_level("WARNING"):
        info = load_dataset_info(config)
    assert info.image_ids == [1, 6] and info.num_examples == 2
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1
    assert "skipped 4 of 6 images" in warnings[0] and annotations_file in warnings[0]
    for part in ("1 bad box", "1 corrupt image", "1 missing image", "1 unknown category"):
        assert part in warnings[0]
    ids = [i for b in build_dataset(config, 1, training=False) for i in b["source_id"].numpy()]
    assert ids == [b"1", b"6"]
    with open(info.annotations_file) as f:
        assert [im["id"] for im in json.load(f)["images"]] == [1, 6]


def test_all_images_bad_is_an_empty_dataset(tmp_path):
    image_dir, annotations_file = _dataset(
        tmp_path, [ann(1, 1, 9, [1, 1, 4, 4])], images=((1, "one.png", 20, 30),)
    )
    message = _error(image_dir, annotations_file, skip_bad_examples=True)
    assert "empty dataset" in message and "1 unknown category" in message
