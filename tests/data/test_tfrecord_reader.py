import glob
import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from pycocotools.coco import COCO

from detbench.data import build_dataset, load_dataset_info, to_tfrecord
from detbench.data.errors import DataError
from detbench.data.tfrecord import make_tf_example, read_label_map
from detbench.protos import input_reader_pb2
from tests.data.data_helpers import coco_reader_config


def _tfrecord_config(paths, label_map_path="", **fields):
    config = input_reader_pb2.InputReader()
    config.tfrecord.input_path.extend(paths)
    if label_map_path:
        config.tfrecord.label_map_path = label_map_path
    for key, value in fields.items():
        setattr(config, key, value)
    return config


def _by_source_id(dataset):
    out = {}
    for batch in dataset:
        b = {k: v.numpy() for k, v in batch.items()}
        for i, sid in enumerate(b["source_id"]):
            out[sid] = {k: v[i] for k, v in b.items()}
    return out


def test_coco_to_tfrecord_round_trip(small_coco, tmp_path):
    image_dir, annotations_file = small_coco
    out = str(tmp_path / "rec" / "train.tfrecord")
    to_tfrecord.main(
        [
            "--annotations",
            annotations_file,
            "--image_dir",
            image_dir,
            "--out",
            out,
            "--num_shards",
            "2",
        ]
    )
    shards = sorted(glob.glob(out + "-*"))
    assert [os.path.basename(s) for s in shards] == [
        "train.tfrecord-00000-of-00002",
        "train.tfrecord-00001-of-00002",
    ]

    coco_config = coco_reader_config(image_dir, annotations_file, max_num_boxes=4)
    rec_config = _tfrecord_config([out + "-*"], max_num_boxes=4)
    from_coco = _by_source_id(build_dataset(coco_config, 3, training=False))
    from_rec = _by_source_id(build_dataset(rec_config, 3, training=False))
    # Shards in name order give file order.
    ids = [i for b in build_dataset(rec_config, 1, training=False) for i in b["source_id"].numpy()]
    assert ids == [b"101", b"205", b"300"]
    assert from_rec.keys() == from_coco.keys()
    for sid, expected in from_coco.items():
        got = from_rec[sid]
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{sid} {key}")

    coco_info = load_dataset_info(coco_config)
    rec_info = load_dataset_info(rec_config)
    assert rec_info.category_index == coco_info.category_index
    assert rec_info.image_ids == coco_info.image_ids and rec_info.num_examples == 3
    # The eval JSON written for the records matches the original annotations.
    original, rebuilt = COCO(annotations_file), COCO(rec_info.annotations_file)
    assert sorted(rebuilt.getImgIds()) == sorted(original.getImgIds())
    for image_id in original.getImgIds():
        a = sorted(original.loadAnns(original.getAnnIds(imgIds=image_id)), key=lambda x: x["bbox"])
        b = sorted(rebuilt.loadAnns(rebuilt.getAnnIds(imgIds=image_id)), key=lambda x: x["bbox"])
        assert len(a) == len(b)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x["bbox"], y["bbox"], atol=1e-4)
            assert (x["category_id"], x["iscrowd"]) == (y["category_id"], y["iscrowd"])
            assert x["area"] == pytest.approx(y["area"])


def _png(height, width, value=0):
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_records(path, examples):
    with tf.io.TFRecordWriter(path) as writer:
        for e in examples:
            writer.write(e.SerializeToString())


def test_object_detection_api_labels_and_label_map(tmp_path):
    """COCO-style label ids (1, 18, 90) map to 1..3; names come from a pbtxt label map."""
    path = str(tmp_path / "od.record")
    _write_records(
        path,
        [
            make_tf_example(
                _png(10, 20),
                "png",
                10,
                20,
                "42",
                "a.png",
                [[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]],
                [90, 1],
                [],
                [0, 1],
                [1, 2],
            ),
            make_tf_example(
                _png(8, 8, 50),
                "png",
                8,
                8,
                "43",
                "b.png",
                [[0.25, 0.25, 0.75, 0.5]],
                [18],
                [],
                [0],
                [3],
            ),
        ],
    )
    label_map = tmp_path / "labels.pbtxt"
    label_map.write_text(
        "item {\n  name: '/m/01g317'\n  id: 1\n  display_name: 'person'\n}\n"
        "item { id: 18 name: 'dog' }\nitem {\n id: 90\n name: \"toothbrush\"\n}\n"
    )
    assert read_label_map(str(label_map)) == {1: "person", 18: "dog", 90: "toothbrush"}
    config = _tfrecord_config([path], str(label_map), max_num_boxes=3)
    info = load_dataset_info(config)
    assert info.category_index == {
        1: {"id": 1, "name": "person"},
        2: {"id": 18, "name": "dog"},
        3: {"id": 90, "name": "toothbrush"},
    }
    got = _by_source_id(build_dataset(config, 2, training=False))
    np.testing.assert_array_equal(got[b"42"]["groundtruth_classes"], [3, 1, 0])
    np.testing.assert_array_equal(got[b"42"]["groundtruth_is_crowd"], [False, True, False])
    np.testing.assert_allclose(got[b"42"]["groundtruth_boxes"][0], [0.1, 0.2, 0.5, 0.6])
    np.testing.assert_array_equal(got[b"43"]["groundtruth_classes"], [2, 0, 0])
    np.testing.assert_array_equal(got[b"43"]["true_shape"], [8, 8, 3])
    assert (got[b"43"]["image"][:8, :8] == 50).all() and not got[b"43"]["image"][8:].any()
    gt = COCO(info.annotations_file)
    np.testing.assert_allclose(gt.loadAnns(gt.getAnnIds(imgIds=43))[0]["bbox"], [2, 2, 2, 4])


def test_tfrecord_label_not_in_label_map(tmp_path):
    path = str(tmp_path / "bad.record")
    _write_records(
        path,
        [
            make_tf_example(
                _png(4, 4), "png", 4, 4, "7", "x.png", [[0, 0, 1, 1]], [5], [], [0], [16]
            )
        ],
    )
    label_map = tmp_path / "labels.pbtxt"
    label_map.write_text("item { id: 1 name: 'a' }")
    with pytest.raises(DataError) as e:
        load_dataset_info(_tfrecord_config([path], str(label_map)))
    assert f"{path}: record 0 (source_id 7)" in str(e.value) and "label 5" in str(e.value)


def test_tfrecord_bad_box_names_file_record_and_source_id(tmp_path):
    path = str(tmp_path / "bad.record")
    good = make_tf_example(
        _png(4, 4), "png", 4, 4, "1", "x.png", [[0, 0, 1, 1]], [1], [], [0], [16]
    )
    bad = make_tf_example(
        _png(4, 4), "png", 4, 4, "2", "y.png", [[0.1, 0.8, 0.5, 0.2]], [1], [], [0], [1]
    )
    _write_records(path, [good, bad])
    with pytest.raises(DataError) as e:
        build_dataset(_tfrecord_config([path]), 1, training=False)
    message = str(e.value)
    assert f"{path}: record 1 (source_id 2)" in message and "xmin >= xmax" in message

    config = _tfrecord_config([path], skip_bad_examples=True)
    ids = [i for b in build_dataset(config, 1, training=False) for i in b["source_id"].numpy()]
    assert ids == [b"1"]


def test_tfrecord_corrupt_image_and_empty_file(tmp_path):
    path = str(tmp_path / "bad.record")
    _write_records(
        path, [make_tf_example(b"not an image", "jpeg", 4, 4, "9", "z.jpg", [], [], [], [], [])]
    )
    with pytest.raises(DataError, match=r"record 0 \(source_id 9\).*cannot read image"):
        load_dataset_info(_tfrecord_config([path]))
    empty = str(tmp_path / "empty.record")
    _write_records(empty, [])
    with pytest.raises(DataError, match="empty dataset"):
        load_dataset_info(_tfrecord_config([empty]))
    with pytest.raises(DataError, match="matches no file"):
        load_dataset_info(_tfrecord_config([str(tmp_path / "nothing-*")]))
