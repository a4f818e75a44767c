"""``--data PATH``: a user's set in whatever format PATH holds, as input readers.

``PATH`` (optionally ``PATH#SPLIT``) is recognised from what it holds, through
the ``FORMATS`` registry:

- ``coco``: an instances ``.json`` (or a folder holding one ``.json``); the
  image folder is the first of the json's folder, ``images/`` beside it,
  ``../images`` or ``../<name>`` (``instances_val2017.json`` -> ``val2017``)
  that holds its first image;
- ``voc``: a folder with ``Annotations/`` and ``JPEGImages/``; ``#SPLIT`` is a
  list in ``ImageSets/Main`` (default: every XML file);
- ``yolo``: a folder with ``images/`` and ``labels/`` and class names
  (``data.yaml``, ``classes.txt``, ...), or its ``data.yaml``; ``#SPLIT`` is a
  subfolder of ``images/`` (default: every image);
- ``tfrecord``: a ``.tfrecord`` / ``.record`` file, a glob, or a folder of them.

VOC and YOLO sets are converted once to a COCO JSON in the cache
(``<cache>/user_data/``, keyed by the files' sizes and times), so one reader
streams, checks and evaluates every format. ``prepare`` pairs a training set
with an evaluation set, or carves a seeded evaluation split out of the
training set when none is given, and ``apply_to_pipeline`` points a
pipeline's readers at them and sets its model's ``num_classes`` from the data.
"""

import dataclasses
import glob
import hashlib
import json
import os

import numpy as np

from detbench.data import coco, voc, yolo
from detbench.data.errors import DataError
from detbench.data.synthetic import cache_root
from detbench.registry import Registry

FORMATS = Registry("data format")
EVAL_FRACTION = 0.2  # of the training images, when no evaluation set is given
SPLIT_SEED = 0


@dataclasses.dataclass
class DataSet:
    """One set as an input reader source: a COCO JSON + image folder, or TFRecords."""

    format: str  # the format PATH held
    path: str  # what the user gave
    annotations_file: str = ""  # coco json (converted, for VOC / YOLO)
    image_dir: str = ""
    tfrecords: tuple = ()
    label_map: str = ""
    num_images: int = 0
    category_index: dict = dataclasses.field(default_factory=dict)

    def set_reader(self, reader):
        """Point an InputReader message at this set (its other fields kept)."""
        if self.tfrecords:
            reader.tfrecord.Clear()
            reader.tfrecord.input_path.extend(self.tfrecords)
            if self.label_map:
                reader.tfrecord.label_map_path = self.label_map
        else:
            reader.coco_json.image_dir = self.image_dir
            reader.coco_json.annotations_file = self.annotations_file


def _digest(*parts):
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _write_json(data, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)
    return path


def _files_key(paths):
    return [(p, os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in sorted(paths)]


def _coco_set(fmt, path, annotations_file, image_dir):
    data = coco.load_coco(annotations_file, image_dir)
    return DataSet(
        fmt,
        path,
        annotations_file=data.annotations_file,
        image_dir=data.image_dir,
        num_images=len(data.examples),
        category_index=data.category_index,
    )


def _converted(fmt, path, split, files, read):
    """The cached COCO JSON of a VOC / YOLO split (converted when its files changed)."""
    key = _digest(fmt, os.path.abspath(path), split, _files_key(files))
    out = os.path.join(cache_root(), "user_data", f"{fmt}-{key}.json")
    key_file = out + ".image_dir"
    if not os.path.exists(out) or not os.path.exists(key_file):
        data, image_dir, _ = read()
        _write_json(data, out)
        with open(key_file + f".tmp{os.getpid()}", "w") as f:
            f.write(image_dir)
        os.replace(key_file + f".tmp{os.getpid()}", key_file)
    with open(key_file) as f:
        image_dir = f.read()
    return _coco_set(fmt, path if not split else f"{path}#{split}", out, image_dir)


# --- the formats: detect(path) -> bool, open(path, split) -> DataSet ---


class _Coco:
    @staticmethod
    def detect(path):
        return (os.path.isfile(path) and path.endswith(".json")) or (
            os.path.isdir(path) and len(glob.glob(os.path.join(path, "*.json"))) == 1
        )

    @staticmethod
    def open(path, split):
        json_file = path if os.path.isfile(path) else glob.glob(os.path.join(path, "*.json"))[0]
        if split:
            raise DataError(f"{path}#{split}: a COCO set is one JSON file; give that file")
        folder = os.path.dirname(os.path.abspath(json_file))
        stem = os.path.splitext(os.path.basename(json_file))[0]
        candidates = [
            folder,
            os.path.join(folder, "images"),
            os.path.join(folder, "..", "images"),
            os.path.join(folder, "..", stem.replace("instances_", "")),
            os.path.join(folder, stem),
        ]
        try:
            with open(json_file) as f:
                first = (json.load(f).get("images") or [{}])[0].get("file_name", "")
        except (OSError, ValueError, AttributeError):
            first = ""  # the COCO reader names what is wrong
        image_dir = next(
            (d for d in candidates if first and os.path.isfile(os.path.join(d, first))), None
        )
        if image_dir is None:
            raise DataError(
                f"{json_file}: image folder not found: its first image {first!r} is in none of "
                + ", ".join(os.path.normpath(d) for d in candidates)
            )
        return _coco_set("coco", path, json_file, os.path.normpath(image_dir))


class _Voc:
    @staticmethod
    def detect(path):
        return os.path.isdir(path) and voc.is_voc_root(path)

    @staticmethod
    def open(path, split):
        ids, listed = voc.split_ids(path, split)
        files = [os.path.join(path, "Annotations", i + ".xml") for i in ids]
        files = [f for f in files if os.path.exists(f)] + [listed]
        return _converted("voc", path, split, files, lambda: voc.read_voc(path, split))


class _Yolo:
    @staticmethod
    def detect(path):
        if os.path.isfile(path) and path.endswith((".yaml", ".yml")):
            return yolo.is_yolo_root(os.path.dirname(os.path.abspath(path)))
        return os.path.isdir(path) and yolo.is_yolo_root(path)

    @staticmethod
    def open(path, split):
        root = os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else path
        files = [
            os.path.join(d, f)
            for sub in ("images", "labels")
            for d, _, fs in os.walk(os.path.join(root, sub))
            for f in fs
        ]
        files += [
            os.path.join(root, n) for n in yolo.NAMES_FILES if os.path.exists(os.path.join(root, n))
        ]
        return _converted("yolo", root, split, files, lambda: yolo.read_yolo(root, split))


def _tfrecord_files(path):
    if os.path.isdir(path):
        return sorted(
            p for p in glob.glob(os.path.join(path, "*")) if ".tfrecord" in p or ".record" in p
        )
    if any(c in path for c in "*?["):
        return sorted(glob.glob(path))
    return [path] if os.path.isfile(path) and (".tfrecord" in path or ".record" in path) else []


class _TfRecord:
    @staticmethod
    def detect(path):
        return bool(_tfrecord_files(path))

    @staticmethod
    def open(path, split):
        from detbench.data import tfrecord

        if split:
            raise DataError(f"{path}#{split}: TFRecords have no named splits; give the files")
        files = _tfrecord_files(path)
        folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(files[0]))
        label_map = next(
            (
                os.path.join(folder, n)
                for n in ("label_map.pbtxt", "label_map.json")
                if os.path.exists(os.path.join(folder, n))
            ),
            "",
        )
        data = tfrecord.scan(files, label_map)
        return DataSet(
            "tfrecord",
            path,
            tfrecords=tuple(files),
            label_map=label_map,
            num_images=len(data.records),
            category_index=data.category_index,
        )


FORMATS.register("coco")(_Coco)
FORMATS.register("voc")(_Voc)
FORMATS.register("yolo")(_Yolo)
FORMATS.register("tfrecord")(_TfRecord)


def detect_format(path):
    """The name of the format ``path`` holds; DataError naming what was looked for."""
    if not os.path.exists(path) and not glob.glob(path):
        raise DataError(f"{path}: not found")
    # Folder layouts first: a VOC or YOLO folder may also hold a stray .json.
    order = sorted(FORMATS.names(), key=lambda n: (n not in ("voc", "yolo"), n))
    found = [name for name in order if FORMATS.get(name).detect(path)]
    if not found:
        raise DataError(
            f"{path}: not a dataset detbench recognises: a COCO .json, a Pascal VOC folder "
            "(Annotations/ + JPEGImages/), a YOLO folder (images/ + labels/ + data.yaml) "
            "or TFRecord files"
        )
    return found[0]


def open_data(text):
    """``PATH[#SPLIT]`` -> DataSet (the set read and checked; VOC / YOLO converted)."""
    path, _, split = text.partition("#")
    return FORMATS.get(detect_format(path)).open(path, split)


def carve_split(data: DataSet, fraction=EVAL_FRACTION, seed=SPLIT_SEED):
    """(train, eval) DataSets: a seeded ``fraction`` of the images held out, no image in both."""
    if data.tfrecords:
        raise DataError(
            f"{data.path}: cannot carve an evaluation split out of TFRecords; give --eval-data"
        )
    with open(data.annotations_file) as f:
        full = json.load(f)
    ids = [im["id"] for im in full["images"]]
    if len(ids) < 2:
        raise DataError(
            f"{data.path}: {len(ids)} image: too few to carve an evaluation split; give --eval-data"
        )
    n_eval = min(len(ids) - 1, max(1, round(fraction * len(ids))))
    held = set(np.random.default_rng(seed).permutation(ids)[:n_eval].tolist())
    key = _digest(_files_key([data.annotations_file]), fraction, seed)
    sets = []
    for name, keep in (("train", lambda i: i not in held), ("eval", lambda i: i in held)):
        images = [im for im in full["images"] if keep(im["id"])]
        anns = [a for a in full.get("annotations", []) if keep(a["image_id"])]
        out = os.path.join(cache_root(), "user_data", f"split-{key}-{name}.json")
        if not os.path.exists(out):
            _write_json(dict(full, images=images, annotations=anns), out)
        carved = _coco_set(data.format, f"{data.path} ({name} split)", out, data.image_dir)
        sets.append(carved)
    return sets[0], sets[1]


@dataclasses.dataclass
class DataPlan:
    train: DataSet
    eval: DataSet
    note: str  # one line saying what was read and how it was split

    @property
    def num_classes(self):
        return len(self.train.category_index)


def _categories(data):
    return [(v["id"], v["name"]) for _, v in sorted(data.category_index.items())]


def prepare(train_text, eval_text=None, fraction=EVAL_FRACTION, seed=SPLIT_SEED):
    """DataPlan of ``--data`` [and ``--eval-data``]: the eval split carved when not given."""
    train = full = open_data(train_text)
    if eval_text:
        evaluation = open_data(eval_text)
        if _categories(train) != _categories(evaluation):
            raise DataError(
                f"{eval_text}: its categories {_categories(evaluation)[:10]} differ from "
                f"{train_text}'s {_categories(train)[:10]}"
            )
        how = f"evaluation: {eval_text} ({evaluation.format}, {evaluation.num_images} images)"
    else:
        train, evaluation = carve_split(full, fraction, seed)
        how = (
            f"evaluation: {evaluation.num_images} of its {full.num_images} images carved out "
            f"(fraction {fraction:g}, seed {seed}; training uses the other {train.num_images})"
        )
    names = ", ".join(v["name"] for _, v in sorted(train.category_index.items()))
    note = (
        f"data: {train_text} ({full.format}, {full.num_images} images, "
        f"{len(train.category_index)} class{'es' if len(train.category_index) != 1 else ''}: "
        f"{names[:120]}); {how}"
    )
    return DataPlan(train, evaluation, note)


def apply_to_pipeline(pipeline, plan, train=True, evaluation=True):
    """Point the pipeline's readers at the plan's sets; num_classes from the data."""
    from detbench.config.validate import meta_arch_config

    if train:
        plan.train.set_reader(pipeline.train_input_reader)
    if evaluation:
        plan.eval.set_reader(pipeline.eval_input_reader)
    arch = meta_arch_config(pipeline)[1]
    if arch is not None:
        arch.num_classes = plan.num_classes
    return pipeline


def add_arguments(parser, evaluation_only=False):
    """``--data`` (and ``--eval-data``) on a command's parser."""
    if evaluation_only:
        parser.add_argument(
            "--data",
            metavar="PATH[#SPLIT]",
            help="evaluate on this set (COCO json, Pascal VOC or YOLO folder, TFRecords; "
            "num_classes from it) instead of the pipeline's eval_input_reader",
        )
        return
    parser.add_argument(
        "--data",
        metavar="PATH[#SPLIT]",
        help="train on this set (COCO json, Pascal VOC or YOLO folder, TFRecords), "
        "num_classes and labels from it; without --eval-data a seeded "
        f"{EVAL_FRACTION * 100:.0f}%% of its images is held out for evaluation",
    )
    parser.add_argument(
        "--eval-data", metavar="PATH[#SPLIT]", help="evaluate on this set (with --data)"
    )


def pipeline_adjuster(args, overrides=(), evaluation_only=False):
    """``adjust(pipeline)`` applying ``--data`` / ``--eval-data`` and then ``--set``
    overrides, and the line that says what data was read (or None)."""
    from detbench.config.overrides import apply_overrides

    data = getattr(args, "data", None)
    eval_data = getattr(args, "eval_data", None)
    if eval_data and not data:
        raise DataError("--eval-data needs --data (the training set)")
    plan, note = None, None
    if evaluation_only and data:
        evaluation = open_data(data)
        plan = DataPlan(evaluation, evaluation, "")
        note = f"data: {data} ({evaluation.format}, {evaluation.num_images} images)"
    elif data:
        plan = prepare(data, eval_data)
        note = plan.note

    def adjust(pipeline):
        if plan is not None:
            apply_to_pipeline(pipeline, plan, train=not evaluation_only)
        apply_overrides(pipeline, overrides)
        return pipeline

    return adjust, note
