import filecmp
import json
import os

import numpy as np
import pytest

from detbench.data import synthetic
from detbench.data.errors import DataError
from detbench.protos import input_reader_pb2


def _load(annotations_file):
    with open(annotations_file) as f:
        return json.load(f)


def test_same_seed_gives_identical_files(tmp_path):
    a = synthetic.write_dataset(str(tmp_path / "a"), 6, image_size=96, seed=5, progress=False)
    b = synthetic.write_dataset(str(tmp_path / "b"), 6, image_size=96, seed=5, progress=False)
    names = sorted(os.listdir(a[0]))
    assert len(names) == 6
    match, mismatch, errors = filecmp.cmpfiles(a[0], b[0], names, shallow=False)
    assert (len(match), mismatch, errors) == (6, [], [])
    with open(a[1], "rb") as fa, open(b[1], "rb") as fb:
        assert fa.read() == fb.read()


def test_image_depends_only_on_seed_split_index():
    first, ann_first = synthetic.generate_image(3, "train", 4, image_size=64)
    again, ann_again = synthetic.generate_image(3, "train", 4, image_size=64)
    np.testing.assert_array_equal(first, again)
    assert ann_first == ann_again
    other_seed, _ = synthetic.generate_image(4, "train", 4, image_size=64)
    val, _ = synthetic.generate_image(3, "val", 4, image_size=64)
    assert not np.array_equal(first, other_seed)
    assert not np.array_equal(first, val)


def test_train_and_val_images_are_disjoint():
    train = [synthetic.generate_image(0, "train", i, image_size=48)[0] for i in range(8)]
    val = [synthetic.generate_image(0, "val", i, image_size=48)[0] for i in range(8)]
    for t in train:
        assert not any(np.array_equal(t, v) for v in val)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    image_dir, annotations_file = synthetic.write_dataset(
        str(out), 30, image_size=320, num_classes=6, seed=0, progress=False
    )
    return image_dir, _load(annotations_file)


def test_objects_in_all_three_coco_size_ranges(generated):
    _, coco = generated
    areas = np.array([a["area"] for a in coco["annotations"]])
    small = np.sum(areas < 32**2)
    medium = np.sum((areas >= 32**2) & (areas < 96**2))
    large = np.sum(areas >= 96**2)
    assert small >= 10 and medium >= 10 and large >= 3, (small, medium, large)


def test_boxes_inside_images_and_consistent_with_area(generated):
    _, coco = generated
    sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    assert coco["annotations"]
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        width, height = sizes[a["image_id"]]
        assert w > 0 and h > 0
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height
        # The area is the visible pixel count: positive, at most the box.
        assert 0 < a["area"] <= w * h
        assert a["iscrowd"] == 0


def test_coco_json_layout(generated):
    image_dir, coco = generated
    assert [c["name"] for c in coco["categories"]] == list(synthetic.SHAPES[:6])
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4, 5, 6]
    ids = [a["id"] for a in coco["annotations"]]
    assert len(set(ids)) == len(ids)
    for im in coco["images"]:
        assert os.path.exists(os.path.join(image_dir, im["file_name"]))
    used = {a["category_id"] for a in coco["annotations"]}
    assert used == {1, 2, 3, 4, 5, 6}


def test_object_pixels_differ_from_surroundings(generated):
    """A labelled object is visible: its box's pixels differ from a ring just outside it."""
    from PIL import Image

    image_dir, coco = generated
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    contrasted = total = 0
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        if w < 24 or h < 24:
            continue
        image = np.asarray(Image.open(os.path.join(image_dir, files[a["image_id"]])), np.float32)
        inner = image[y + h // 3 : y + 2 * h // 3, x + w // 3 : x + 2 * w // 3].reshape(-1, 3)
        total += 1
        contrasted += np.abs(inner.mean(0) - image.reshape(-1, 3).mean(0)).max() > 10
    assert total >= 10 and contrasted / total > 0.7


def test_shapes_are_distinct():
    """Class is shape: rendered masks of different shapes overlap far from fully."""
    masks = {
        name: synthetic.render_shape_mask(name, 64, 64, np.random.default_rng(0)) >= 0.5
        for name in synthetic.SHAPES
    }
    for i, a in enumerate(synthetic.SHAPES):
        for b in synthetic.SHAPES[i + 1 :]:
            iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
            limit = 0.85 if {a, b} <= set(synthetic.SHAPES[:6]) else 0.9
            assert iou < limit, (a, b, iou)
    # Holes where the shape has them.
    assert not masks["ring"][32, 32] and not masks["frame"][32, 32]
    assert masks["circle"][32, 32] and masks["square"][2, 2] and not masks["circle"][1, 1]


def test_colour_does_not_define_class(generated):
    from PIL import Image

    image_dir, coco = generated
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    colours = {}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        if a["category_id"] == 2 and w >= 16 and h >= 16:  # squares fill their box
            image = np.asarray(Image.open(os.path.join(image_dir, files[a["image_id"]])))
            colours[a["id"]] = image[y + h // 2, x + w // 2].astype(float)
    values = np.array(list(colours.values()))
    assert len(values) >= 3 and values.std(axis=0).max() > 30


def test_bad_generator_arguments():
    with pytest.raises(DataError, match="num_classes"):
        synthetic.generate_image(0, "train", 0, num_classes=11)
    with pytest.raises(DataError, match="split"):
        synthetic.generate_image(0, "test2", 0)


def _config(cache_dir, **fields):
    config = input_reader_pb2.SyntheticShapes(num_images=3, image_size=48, cache_dir=cache_dir)
    for key, value in fields.items():
        setattr(config, key, value)
    return config


def test_ensure_synthetic_generates_once_and_reuses(tmp_path):
    config = _config(str(tmp_path))
    image_dir, annotations_file = synthetic.ensure_synthetic(config)
    assert len(os.listdir(image_dir)) == 3
    mtime = os.stat(annotations_file).st_mtime_ns
    again = synthetic.ensure_synthetic(config)
    assert again == (image_dir, annotations_file)
    assert os.stat(annotations_file).st_mtime_ns == mtime
    # Another config lands elsewhere; train and val differ.
    val = synthetic.ensure_synthetic(_config(str(tmp_path), split="val"))
    assert val[0] != image_dir
    assert _load(val[1])["info"]["split"] == "val"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]


def test_ensure_synthetic_ignores_a_half_written_set(tmp_path, monkeypatch):
    config = _config(str(tmp_path))

    def killed(*args, **kwargs):
        os.makedirs(os.path.join(args[0], "images"))
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "write_dataset", killed)
    with pytest.raises(KeyboardInterrupt):
        synthetic.ensure_synthetic(config)
    assert os.listdir(tmp_path) == []  # nothing left that could be reused
    monkeypatch.undo()
    image_dir, annotations_file = synthetic.ensure_synthetic(config)
    assert len(_load(annotations_file)["images"]) == 3


def test_command_line(tmp_path, capsys):
    synthetic.main(
        [
            "--out",
            str(tmp_path),
            "--num_images",
            "2",
            "--image_size",
            "40",
            "--num_classes",
            "3",
            "--seed",
            "9",
            "--split",
            "val",
        ]
    )
    coco = _load(tmp_path / "instances_val.json")
    assert [im["file_name"] for im in coco["images"]] == ["val_000000.jpg", "val_000001.jpg"]
    assert len(coco["categories"]) == 3
    from PIL import Image

    written = np.asarray(Image.open(tmp_path / "images" / "val_000001.jpg"), np.float32)
    same, _ = synthetic.generate_image(9, "val", 1, image_size=40, num_classes=3)
    other, _ = synthetic.generate_image(9, "val", 0, image_size=40, num_classes=3)
    # The JPEG of that very image: close to it, far from its neighbour.
    assert np.abs(written - same).mean() < 8 < np.abs(written - other).mean()
