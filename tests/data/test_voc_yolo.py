"""Pascal VOC and YOLO readers, format detection and `detbench data convert`.

The same hand-made boxes are written as COCO, as VOC XML and as YOLO label
lines; each reader must give the boxes the COCO reader gives for the COCO form.
Each broken variant must fail with one line naming the file at fault, exit 2.
"""

import json
import os

import numpy as np
import pytest
from PIL import Image

from detbench.cli import main as cli_main
from detbench.data import coco, user_data
from detbench.errors import run_cli

# image name -> (width, height, [(class name, x, y, w, h, difficult)])
IMAGES = {
    "a": (64, 48, [("cat", 10, 5, 20, 15, 0), ("dog", 30, 20, 16, 20, 1)]),
    "b": (40, 40, [("cat", 0, 0, 40, 40, 0)]),
    "c": (50, 30, [("dog", 12.5, 3, 7.25, 9, 0)]),
}
NAMES = ["cat", "dog"]


def _image(path, w, h):
    rng = np.random.default_rng(len(path))
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def write_coco(root):
    os.makedirs(os.path.join(root, "images"))
    images, anns = [], []
    for i, (name, (w, h, objects)) in enumerate(sorted(IMAGES.items()), 1):
        _image(os.path.join(root, "images", name + ".png"), w, h)
        images.append({"id": i, "file_name": name + ".png", "width": w, "height": h})
        for cls, x, y, bw, bh, difficult in objects:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": NAMES.index(cls) + 1,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": difficult,
                }
            )
    cats = [{"id": i, "name": n} for i, n in enumerate(NAMES, 1)]
    path = os.path.join(root, "annotations.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": cats}, f)
    return path


def voc_xml(name, w, h, objects):
    body = "".join(
        f"<object><name>{cls}</name><truncated>{int(x == 0)}</truncated>"
        f"<difficult>{d}</difficult><bndbox><xmin>{x}</xmin><ymin>{y}</ymin>"
        f"<xmax>{x + bw}</xmax><ymax>{y + bh}</ymax></bndbox></object>"
        for cls, x, y, bw, bh, d in objects
    )
    return (
        f"<annotation><filename>{name}.png</filename><size><width>{w}</width>"
        f"<height>{h}</height><depth>3</depth></size>{body}</annotation>"
    )


def write_voc(root):
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(os.path.join(root, sub))
    for name, (w, h, objects) in IMAGES.items():
        _image(os.path.join(root, "JPEGImages", name + ".png"), w, h)
        with open(os.path.join(root, "Annotations", name + ".xml"), "w") as f:
            f.write(voc_xml(name, w, h, objects))
    with open(os.path.join(root, "ImageSets/Main/train.txt"), "w") as f:
        f.write("a\nc\n")
    return root


def write_yolo(root):
    for sub in ("images/train", "labels/train", "images/val", "labels/val"):
        os.makedirs(os.path.join(root, sub))
    for name, (w, h, objects) in IMAGES.items():
        split = "val" if name == "b" else "train"
        _image(os.path.join(root, "images", split, name + ".png"), w, h)
        with open(os.path.join(root, "labels", split, name + ".txt"), "w") as f:
            for cls, x, y, bw, bh, _ in objects:
                cx, cy = (x + bw / 2) / w, (y + bh / 2) / h
                f.write(f"{NAMES.index(cls)} {cx!r} {cy!r} {bw / w!r} {bh / h!r}\n")
    with open(os.path.join(root, "data.yaml"), "w") as f:
        f.write("path: .\ntrain: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n")
    return root


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    return {
        "coco": write_coco(str(root / "coco")),
        "voc": write_voc(str(root / "voc")),
        "yolo": write_yolo(str(root / "yolo")),
    }


def _by_name(data):
    return {os.path.splitext(os.path.basename(e.path))[0]: e for e in data.examples}


def _expected(name):
    w, h, objects = IMAGES[name]
    boxes = [[y / h, x / w, (y + bh) / h, (x + bw) / w] for _, x, y, bw, bh, _ in objects]
    classes = [NAMES.index(o[0]) + 1 for o in objects]
    return np.array(boxes, np.float32), classes, [bool(o[5]) for o in objects]


@pytest.mark.parametrize(
    "fmt,split,names",
    [
        ("coco", "", "abc"),
        ("voc", "", "abc"),
        ("voc", "train", "ac"),
        ("yolo", "", "abc"),
        ("yolo", "train", "ac"),
        ("yolo", "val", "b"),
    ],
)
def test_each_format_gives_the_coco_boxes(sets, fmt, split, names):
    text = sets[fmt] + (f"#{split}" if split else "")
    assert user_data.detect_format(sets[fmt]) == fmt
    data = user_data.open_data(text)
    assert data.format == fmt
    assert [v["name"] for _, v in sorted(data.category_index.items())] == NAMES
    loaded = _by_name(coco.load_coco(data.annotations_file, data.image_dir))
    assert sorted(loaded) == list(names)
    for name, ex in loaded.items():
        boxes, classes, difficult = _expected(name)
        np.testing.assert_allclose(ex.boxes, boxes, atol=1e-6)
        assert ex.classes.tolist() == classes
        # VOC's difficult is COCO's iscrowd (ignored by pycocotools); YOLO has none.
        assert ex.is_crowd.tolist() == (difficult if fmt != "yolo" else [False] * len(classes))


def test_yolo_boxes_convert_exactly(sets):
    data = user_data.open_data(sets["yolo"])
    with open(data.annotations_file) as f:
        anns = json.load(f)["annotations"]
    got = sorted(tuple(a["bbox"]) for a in anns)
    want = sorted(tuple(float(v) for v in o[1:5]) for _, _, objs in IMAGES.values() for o in objs)
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_voc_keeps_difficult_and_truncated(sets):
    data = user_data.open_data(sets["voc"])
    with open(data.annotations_file) as f:
        anns = json.load(f)["annotations"]
    assert sum(a["difficult"] for a in anns) == 1
    assert sum(a["truncated"] for a in anns) == 1  # the box at x=0
    assert all(a["iscrowd"] == a["difficult"] for a in anns)


def test_carved_split_is_seeded_and_disjoint(sets):
    plan = user_data.prepare(sets["voc"])
    again = user_data.prepare(sets["voc"])
    train = {
        e.path for e in coco.load_coco(plan.train.annotations_file, plan.train.image_dir).examples
    }
    held = {
        e.path for e in coco.load_coco(plan.eval.annotations_file, plan.eval.image_dir).examples
    }
    assert len(held) == 1 and len(train) == 2 and not train & held
    assert again.eval.annotations_file == plan.eval.annotations_file
    assert "seed 0" in plan.note and plan.num_classes == 2


def test_convert_to_coco_and_tfrecord(sets, tmp_path, capsys):
    out = str(tmp_path / "c")
    assert (
        run_cli(
            cli_main,
            [
                "data",
                "convert",
                "--from",
                "voc",
                "--to",
                "coco",
                sets["voc"] + "#train",
                "--out",
                out,
            ],
        )
        == 0
    )
    loaded = _by_name(
        coco.load_coco(os.path.join(out, "annotations.json"), os.path.join(out, "images"))
    )
    assert sorted(loaded) == ["a", "c"]
    record = str(tmp_path / "y.tfrecord")
    assert (
        run_cli(
            cli_main,
            [
                "data",
                "convert",
                "--from",
                "yolo",
                "--to",
                "tfrecord",
                sets["yolo"],
                "--out",
                record,
            ],
        )
        == 0
    )
    assert user_data.detect_format(record) == "tfrecord"
    assert user_data.open_data(record).num_images == 3
    code = run_cli(
        cli_main, ["data", "convert", "--from", "yolo", "--to", "coco", sets["voc"], "--out", out]
    )
    assert code == 2 and "holds a voc set" in capsys.readouterr().err


def _break_voc(root, text):
    with open(os.path.join(root, "Annotations", "a.xml"), "w") as f:
        f.write(text)
    return "a.xml"


def _voc_obj(x0, y0, x1, y1, name="<name>cat</name>"):
    return (
        f"<annotation><filename>a.png</filename><object>{name}<bndbox><xmin>{x0}</xmin>"
        f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object></annotation>"
    )


VOC_BROKEN = {
    "not xml": ("<annotation><object>", "not valid XML"),
    "zero width": (_voc_obj(10, 5, 10, 20), "zero or negative"),
    "outside": (_voc_obj(10, 5, 90, 20), "outside the 64x48 image"),
    "not a number": (_voc_obj("ten", 5, 30, 20), "not a number"),
    "no name": (_voc_obj(10, 5, 30, 20, name=""), "no <name>"),
    "size mismatch": (
        "<annotation><filename>a.png</filename><size><width>65</width><height>48</height>"
        "</size></annotation>",
        "64x48 but <size> says 65x48",
    ),
}


@pytest.mark.parametrize(
    "variant", sorted(VOC_BROKEN) + ["missing image", "corrupt image", "missing xml"]
)
def test_broken_voc_is_one_line_exit_2(tmp_path, capsys, variant):
    root = write_voc(str(tmp_path / "voc"))
    at = "a.xml"
    if variant in VOC_BROKEN:
        _break_voc(root, VOC_BROKEN[variant][0])
        expect = VOC_BROKEN[variant][1]
    elif variant == "missing image":
        os.remove(os.path.join(root, "JPEGImages", "a.png"))
        expect = "image file not found"
    elif variant == "corrupt image":
        with open(os.path.join(root, "JPEGImages", "a.png"), "wb") as f:
            f.write(b"\x89PNG garbage")
        expect = "cannot read image"
    else:
        with open(os.path.join(root, "ImageSets/Main/train.txt"), "a") as f:
            f.write("zz\n")
        at, expect = "zz.xml", "annotation file not found"
    argv = [
        "data",
        "convert",
        "--from",
        "voc",
        "--to",
        "coco",
        root + ("#train" if variant == "missing xml" else ""),
        "--out",
        str(tmp_path / "o"),
    ]
    assert run_cli(cli_main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and at in err and expect in err, err


YOLO_BROKEN = {
    "four fields": ("0 0.5 0.5 0.1\n", "5 numbers"),
    "not numbers": ("0 a b c d\n", "is not 'class cx cy w h'"),
    "class out of range": ("2 0.5 0.5 0.1 0.1\n", "class 2 outside the 2 names"),
    "zero size": ("0 0.5 0.5 0 0.1\n", "zero or negative size"),
    "outside": ("0 0.95 0.5 0.2 0.1\n", "outside the 64x48 image"),
}


@pytest.mark.parametrize("variant", sorted(YOLO_BROKEN) + ["label without image", "no names"])
def test_broken_yolo_is_one_line_exit_2(tmp_path, capsys, variant):
    root = write_yolo(str(tmp_path / "yolo"))
    at = "a.txt"
    if variant in YOLO_BROKEN:
        with open(os.path.join(root, "labels/train/a.txt"), "w") as f:
            f.write(YOLO_BROKEN[variant][0])
        expect = YOLO_BROKEN[variant][1]
    elif variant == "label without image":
        os.remove(os.path.join(root, "images/train/a.png"))
        expect = "label file without an image"
    else:
        os.remove(os.path.join(root, "data.yaml"))
        at, expect = "yolo", "no class names"
    argv = ["data", "convert", "--from", "yolo", "--to", "coco", root, "--out", str(tmp_path / "o")]
    assert run_cli(cli_main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and at in err and expect in err, err


def test_unrecognised_path_names_the_formats(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(user_data.DataError, match="Pascal VOC folder"):
        user_data.detect_format(str(tmp_path / "x.txt"))


def test_folder_layout_wins_over_a_stray_json(tmp_path):
    root = write_voc(str(tmp_path / "voc"))
    with open(os.path.join(root, "notes.json"), "w") as f:
        f.write("{}")
    assert user_data.detect_format(root) == "voc"
