"""Convert a COCO instances JSON + image folder to TFRecords (TF OD API layout).

    python -m detbench.data.to_tfrecord --annotations FILE --image_dir DIR --out PATH \
        [--num_shards N] [--skip_bad_examples]

The image bytes are copied as they are (no re-encoding). Labels are the COCO
category ids and ``class/text`` their names, as the Object Detection API writes
them. With N > 1 shards the files are ``PATH-00000-of-0000N``, each holding a
contiguous run of images, so reading the shards in name order gives file order.
The dataset is validated by the COCO reader first, so bad data fails before any
record is written; each shard is written to a temporary name and renamed.
"""

import argparse
import os

import tensorflow as tf
from tqdm import tqdm

from detbench.data import coco
from detbench.data.tfrecord import make_tf_example

_FORMATS = {"JPEG": "jpeg", "PNG": "png", "BMP": "bmp", "GIF": "gif"}


def shard_paths(out, num_shards):
    if num_shards <= 1:
        return [out]
    return [f"{out}-{k:05d}-of-{num_shards:05d}" for k in range(num_shards)]


def convert(annotations_file, image_dir, out, num_shards=1, skip_bad_examples=False, progress=True):
    """Write the shards; returns their paths."""
    data = coco.load_coco(annotations_file, image_dir, skip_bad_examples=skip_bad_examples)
    paths = shard_paths(out, num_shards)
    examples = data.examples
    bounds = [round(k * len(examples) / len(paths)) for k in range(len(paths) + 1)]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    bar = tqdm(total=len(examples), desc="to_tfrecord", unit="img", disable=not progress)
    for k, path in enumerate(paths):
        tmp = f"{path}.tmp{os.getpid()}"
        with tf.io.TFRecordWriter(tmp) as writer:
            for ex in examples[bounds[k] : bounds[k + 1]]:
                with open(ex.path, "rb") as f:
                    encoded = f.read()
                _, _, fmt = coco.inspect_image(ex.path, ex.path)
                original_ids = [data.category_index[int(c)]["id"] for c in ex.classes]
                names = [data.category_index[int(c)]["name"] for c in ex.classes]
                writer.write(
                    make_tf_example(
                        encoded,
                        _FORMATS[fmt],
                        ex.height,
                        ex.width,
                        str(ex.image_id),
                        os.path.relpath(ex.path, data.image_dir),
                        ex.boxes,
                        original_ids,
                        names,
                        ex.is_crowd,
                        ex.areas,
                    ).SerializeToString()
                )
                bar.update(1)
        os.replace(tmp, path)
    bar.close()
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  detbench data to-tfrecord --annotations /tmp/shapes/annotations.json "
        "--image_dir /tmp/shapes/images --out /tmp/shapes.tfrecord --num_shards 2",
    )
    parser.add_argument("--annotations", required=True, help="COCO instances JSON")
    parser.add_argument("--image_dir", required=True)
    parser.add_argument("--out", required=True, help="output path (prefix when sharded)")
    parser.add_argument("--num_shards", type=int, default=1)
    parser.add_argument("--skip_bad_examples", action="store_true")
    args = parser.parse_args(argv)
    paths = convert(
        args.annotations, args.image_dir, args.out, args.num_shards, args.skip_bad_examples
    )
    print("\n".join(paths))


if __name__ == "__main__":
    from detbench.errors import run_cli

    raise SystemExit(run_cli(main))
