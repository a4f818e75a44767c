import json

import numpy as np
import tensorflow as tf
from pycocotools.coco import COCO

from detbench.data import build_dataset, load_dataset_info
from detbench.data.coco import load_coco
from tests.data.data_helpers import ann, coco_reader_config, pattern_image, write_coco


def _elements(dataset):
    """Unbatch to a list of per-image numpy dicts."""
    out = []
    for batch in dataset:
        b = {k: v.numpy() for k, v in batch.items()}
        for i in range(len(b["source_id"])):
            out.append({k: v[i] for k, v in b.items()})
    return out


def test_category_ids_map_to_contiguous_labels(small_coco):
    info = load_dataset_info(coco_reader_config(*small_coco))
    assert info.num_classes == 3
    assert info.category_index == {
        1: {"id": 3, "name": "cat"},
        2: {"id": 7, "name": "dog"},
        3: {"id": 12, "name": "kite"},
    }
    assert info.num_examples == 3
    assert info.image_ids == [101, 205, 300]


def test_eval_elements_hold_the_hand_computed_groundtruth(small_coco):
    config = coco_reader_config(*small_coco, max_num_boxes=4)
    elements = _elements(build_dataset(config, batch_size=2, training=False))
    assert [e["source_id"] for e in elements] == [b"101", b"205", b"300"]  # file order, kept empty

    first, second, empty = elements
    # Image 101 (h=30, w=40): dog [x=4,y=3,w=10,h=6], crowd kite = whole image, cat [20,15,8,12].
    np.testing.assert_allclose(
        first["groundtruth_boxes"],
        [
            [3 / 30, 4 / 40, 9 / 30, 14 / 40],
            [0, 0, 1, 1],
            [15 / 30, 20 / 40, 27 / 30, 28 / 40],
            [0, 0, 0, 0],
        ],
        rtol=0,
        atol=1e-7,
    )
    np.testing.assert_array_equal(first["groundtruth_classes"], [2, 3, 1, 0])
    np.testing.assert_array_equal(first["groundtruth_is_crowd"], [False, True, False, False])
    assert first["num_groundtruth_boxes"] == 3
    np.testing.assert_array_equal(first["true_shape"], [30, 40, 3])
    # The batch is padded to the larger image: 30 x 50; the pixels are the PNG's.
    assert first["image"].shape == (30, 50, 3) and first["image"].dtype == np.uint8
    np.testing.assert_array_equal(first["image"][:30, :40], pattern_image(30, 40, 101))
    assert not first["image"][:, 40:].any()

    # Image 205 (h=20, w=50): cat [10, 5, 25, 10].
    np.testing.assert_allclose(
        second["groundtruth_boxes"][0], [5 / 20, 10 / 50, 15 / 20, 35 / 50], atol=1e-7
    )
    np.testing.assert_array_equal(second["groundtruth_classes"], [1, 0, 0, 0])
    np.testing.assert_array_equal(second["true_shape"], [20, 50, 3])
    np.testing.assert_array_equal(second["image"][:20, :50], pattern_image(20, 50, 205))
    assert not second["image"][20:].any()

    assert empty["num_groundtruth_boxes"] == 0
    assert not empty["groundtruth_classes"].any() and not empty["groundtruth_boxes"].any()
    np.testing.assert_array_equal(empty["image"], pattern_image(25, 25, 300))


def test_batch_dtypes_and_static_training_shapes(small_coco):
    config = coco_reader_config(*small_coco, max_num_boxes=5)
    ds = build_dataset(config, batch_size=2, training=True, seed=0)
    spec = ds.element_spec
    assert spec["image"].dtype == tf.uint8
    assert spec["groundtruth_boxes"].shape.as_list() == [2, 5, 4]
    assert spec["groundtruth_classes"].dtype == tf.int32
    assert spec["groundtruth_is_crowd"].dtype == tf.bool
    assert spec["num_groundtruth_boxes"].shape.as_list() == [2]
    assert spec["true_shape"].shape.as_list() == [2, 3]
    assert spec["source_id"].dtype == tf.string
    # Repeated by default when training: more batches than images.
    ids = [i for b in ds.take(6) for i in b["source_id"].numpy()]
    assert set(ids) == {b"101", b"205", b"300"} and len(ids) == 12


def test_training_shuffle_is_reproducible_with_a_seed(small_coco):
    config = coco_reader_config(*small_coco)
    runs = [
        [i for b in build_dataset(config, 1, True, seed=7).take(9) for i in b["source_id"].numpy()]
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_image_transform_output_replaces_the_image(small_coco):
    def transform(image):
        resized = tf.image.resize(tf.cast(image, tf.float32), [16, 16])
        return resized / 255.0, tf.constant([16, 16, 3])

    ds = build_dataset(
        coco_reader_config(*small_coco), 3, training=False, image_transform=transform
    )
    batch = next(iter(ds))
    assert batch["image"].dtype == tf.float32
    assert batch["image"].shape.as_list() == [3, 16, 16, 3]
    np.testing.assert_array_equal(batch["true_shape"].numpy(), [[16, 16, 3]] * 3)
    expected = tf.image.resize(pattern_image(30, 40, 101).astype(np.float32), [16, 16]) / 255.0
    np.testing.assert_allclose(batch["image"][0].numpy(), expected.numpy(), atol=1e-6)


def test_max_num_boxes_keeps_the_first(small_coco, caplog):
    elements = _elements(
        build_dataset(coco_reader_config(*small_coco, max_num_boxes=2), 3, training=False)
    )
    np.testing.assert_array_equal(elements[0]["groundtruth_classes"], [2, 3])
    assert elements[0]["num_groundtruth_boxes"] == 2
    assert "more than max_num_boxes=2" in caplog.text


def test_num_examples_and_eval_json(small_coco):
    config = coco_reader_config(*small_coco, num_examples=2)
    info = load_dataset_info(config)
    assert info.num_examples == 2 and info.image_ids == [101, 205]
    gt = COCO(info.annotations_file)
    assert sorted(gt.getImgIds()) == [101, 205]
    assert sorted(gt.getAnnIds()) == [1, 2, 3, 4]
    assert gt.loadAnns(2)[0]["iscrowd"] == 1
    ids = [i for b in build_dataset(config, 4, training=False) for i in b["source_id"].numpy()]
    assert ids == [b"101", b"205"]
    # The whole file is used as it is.
    assert load_dataset_info(coco_reader_config(*small_coco)).annotations_file == small_coco[1]


def test_box_overhanging_by_rounding_is_clipped(tmp_path):
    image_dir, annotations_file = write_coco(
        str(tmp_path),
        [(1, "x.png", 10, 20)],
        [ann(1, 1, 1, [10, 2, 10.5, 8.4])],
        [{"id": 1, "name": "a"}],
    )
    data = load_coco(annotations_file, image_dir)
    np.testing.assert_allclose(data.examples[0].boxes, [[0.2, 0.5, 1.0, 1.0]], atol=1e-7)


def test_missing_area_is_filled_in_for_eval(tmp_path):
    image_dir, annotations_file = write_coco(
        str(tmp_path),
        [(1, "x.png", 10, 20)],
        [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 2]}],
        [{"id": 1, "name": "a"}],
    )
    info = load_dataset_info(coco_reader_config(image_dir, annotations_file))
    assert info.annotations_file != annotations_file
    with open(info.annotations_file) as f:
        written = json.load(f)
    assert written["annotations"][0]["area"] == 8.0
    assert written["annotations"][0]["iscrowd"] == 0


def test_synthetic_source_through_the_pipeline(tmp_path):
    from detbench.protos import input_reader_pb2

    config = input_reader_pb2.InputReader()
    config.synthetic_shapes.num_images = 4
    config.synthetic_shapes.image_size = 64
    config.synthetic_shapes.num_classes = 3
    config.synthetic_shapes.cache_dir = str(tmp_path)
    info = load_dataset_info(config)
    assert info.num_classes == 3 and info.num_examples == 4
    with open(info.annotations_file) as f:
        coco = json.load(f)
    elements = _elements(build_dataset(config, 4, training=False))
    for e, image in zip(elements, coco["images"]):
        assert e["source_id"] == str(image["id"]).encode()
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert e["num_groundtruth_boxes"] == len(anns)
        for box, cls, a in zip(e["groundtruth_boxes"], e["groundtruth_classes"], anns):
            x, y, w, h = a["bbox"]
            np.testing.assert_allclose(box, [y / 64, x / 64, (y + h) / 64, (x + w) / 64], atol=1e-6)
            assert cls == a["category_id"]
