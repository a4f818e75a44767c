import numpy as np
import tensorflow as tf

from detbench.data import augmentation, build_dataset
from detbench.protos import input_reader_pb2
from tests.data.data_helpers import coco_reader_config


def coordinate_image(height, width):
    """Channel 0 holds x, channel 1 holds y: a crop tells where it came from."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx, yy, np.zeros_like(xx)], axis=-1).astype(np.uint8)


def test_flip_boxes_hand_computed():
    boxes = tf.constant([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 0.25]])
    np.testing.assert_allclose(
        augmentation.flip_boxes_left_right(boxes).numpy(),
        [[0.1, 0.4, 0.5, 0.8], [0.0, 0.75, 1.0, 1.0]],
        atol=1e-7,
    )


def test_random_flip_moves_image_and_boxes_together():
    image = coordinate_image(6, 10)
    boxes = tf.constant([[0.5, 0.1, 1.0, 0.3]])
    seen = set()
    for s in range(12):
        out, out_boxes = augmentation.random_horizontal_flip(
            tf.constant(image), boxes, tf.constant([s, 0])
        )
        flipped = bool(out.numpy()[0, 0, 0] == 9)
        seen.add(flipped)
        expected_image = image[:, ::-1] if flipped else image
        expected_boxes = [[0.5, 0.7, 1.0, 0.9]] if flipped else [[0.5, 0.1, 1.0, 0.3]]
        np.testing.assert_array_equal(out.numpy(), expected_image)
        np.testing.assert_allclose(out_boxes.numpy(), expected_boxes, atol=1e-7)
    assert seen == {True, False}


def test_crop_to_window_hand_computed():
    image = coordinate_image(10, 20)  # h=10, w=20; window y 2..8, x 4..14
    boxes_px = np.array(
        [
            [3, 5, 5, 9],  # centre (4, 7): inside, fully
            [1, 10, 5, 16],  # centre (3, 13): inside, overhangs top and right -> clipped
            [0, 2, 4, 8],  # centre (2, 5): on the top edge -> dropped
            [6, 12, 9, 20],  # centre (7.5, 16): right of the window -> dropped
        ],
        dtype=np.float32,
    )
    boxes = boxes_px / np.array([10, 20, 10, 20], np.float32)
    crop, out, keep = augmentation.crop_to_window(
        tf.constant(image), tf.constant(boxes), tf.constant([2, 4, 8, 14])
    )
    np.testing.assert_array_equal(crop.numpy(), image[2:8, 4:14])
    np.testing.assert_array_equal(keep.numpy(), [0, 1])
    np.testing.assert_allclose(
        out.numpy(), [[1 / 6, 1 / 10, 3 / 6, 5 / 10], [0.0, 6 / 10, 3 / 6, 1.0]], atol=1e-6
    )


def test_ssd_random_crop_keeps_centred_boxes_inside_unit_square():
    height, width = 160, 200
    image = tf.constant(coordinate_image(height, width))
    rng = np.random.default_rng(0)
    y0 = rng.uniform(0, 0.8, 12)
    x0 = rng.uniform(0, 0.8, 12)
    boxes = np.stack(
        [y0, x0, y0 + rng.uniform(0.05, 0.2, 12), x0 + rng.uniform(0.05, 0.2, 12)], axis=1
    ).astype(np.float32)
    cropped = dropped = 0
    for s in range(40):
        crop, out, keep = augmentation.ssd_random_crop(
            image, tf.constant(boxes), tf.constant([s, 1])
        )
        crop, out, keep = crop.numpy(), out.numpy(), keep.numpy()
        # Where the crop came from, read off the coordinate image.
        wy0, wx0 = int(crop[0, 0, 1]), int(crop[0, 0, 0])
        wh, ww = crop.shape[:2]
        assert crop.shape[2] == 3 and wh >= 1 and ww >= 1
        cropped += (wh, ww) != (height, width)
        px = boxes * [height, width, height, width]
        cy, cx = (px[:, 0] + px[:, 2]) / 2, (px[:, 1] + px[:, 3]) / 2
        inside = (cy > wy0) & (cy < wy0 + wh) & (cx > wx0) & (cx < wx0 + ww)
        np.testing.assert_array_equal(keep, np.nonzero(inside)[0])
        dropped += len(boxes) - len(keep)
        expected = np.clip((px[inside] - [wy0, wx0, wy0, wx0]) / [wh, ww, wh, ww], 0, 1)
        np.testing.assert_allclose(out, expected, atol=1e-5)
        assert ((out >= 0) & (out <= 1)).all()
        assert (out[:, 2] > out[:, 0]).all() and (out[:, 3] > out[:, 1]).all()
        if (wh, ww) != (height, width):
            assert len(keep) >= 1  # a patch always holds at least one box centre
    # Boxes this small (area <= 4% of the image) cannot reach IoU >= 0.3 with a patch of
    # >= 10% of the image: only the 0.1 and "any" options crop (2 in 7).
    assert cropped >= 5 and dropped > 0


def test_ssd_random_crop_without_boxes():
    crop, out, keep = augmentation.ssd_random_crop(
        tf.zeros([20, 30, 3], tf.uint8), tf.zeros([0, 4]), tf.constant([3, 4])
    )
    assert out.shape == (0, 4) and keep.shape == (0,)
    assert crop.shape[2] == 3


def test_scale_jitter_zoom_out_is_hand_computable():
    image = tf.fill([40, 60, 3], tf.constant(200, tf.uint8))
    boxes = tf.constant([[0.2, 0.1, 0.6, 0.5]])
    out, out_boxes, keep = augmentation.random_scale_jitter(
        image, boxes, 0.5, 0.5, tf.constant([0, 0])
    )
    out = out.numpy()
    assert out.shape == (40, 60, 3)
    assert (out[:20, :30] == 200).all() and not out[20:].any() and not out[:, 30:].any()
    np.testing.assert_allclose(out_boxes.numpy(), [[0.1, 0.05, 0.3, 0.25]], atol=1e-6)
    np.testing.assert_array_equal(keep.numpy(), [0])


def test_scale_jitter_zoom_in_doubles_boxes():
    image = tf.zeros([50, 50, 3], tf.uint8)
    boxes = tf.constant([[0.45, 0.45, 0.55, 0.55], [0.0, 0.0, 0.04, 0.04]])
    for s in range(5):
        out, out_boxes, keep = augmentation.random_scale_jitter(
            image, boxes, 2.0, 2.0, tf.constant([s, 0])
        )
        assert out.shape == (50, 50, 3)
        b = out_boxes.numpy()
        assert ((b >= 0) & (b <= 1)).all()
        if 0 in keep.numpy():  # the central box, unclipped, is twice as large
            central = b[list(keep.numpy()).index(0)]
            if (central > 0).all() and (central < 1).all():
                np.testing.assert_allclose(central[2:] - central[:2], [0.2, 0.2], atol=1e-5)


def test_augmented_training_pipeline_is_reproducible(small_coco):
    config = coco_reader_config(*small_coco, max_num_boxes=4)
    config.augmentation.CopyFrom(
        input_reader_pb2.Augmentation(
            random_horizontal_flip=True,
            ssd_random_crop=True,
            scale_jitter_min=0.7,
            scale_jitter_max=1.3,
        )
    )
    runs = []
    for _ in range(2):
        ds = build_dataset(config, 1, training=True, seed=3)
        runs.append([{k: v.numpy() for k, v in b.items()} for b in ds.take(6)])
    for a, b in zip(*runs):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    for b in runs[0]:
        n = b["num_groundtruth_boxes"][0]
        boxes = b["groundtruth_boxes"][0]
        assert ((boxes >= 0) & (boxes <= 1)).all()
        assert (b["groundtruth_classes"][0][:n] > 0).all() and not b["groundtruth_classes"][0][
            n:
        ].any()
        assert tuple(b["true_shape"][0]) == b["image"].shape[1:]


def test_no_augmentation_at_evaluation(small_coco):
    config = coco_reader_config(*small_coco)
    config.augmentation.random_horizontal_flip = True
    config.augmentation.ssd_random_crop = True
    plain = coco_reader_config(*small_coco)
    for a, b in zip(
        build_dataset(config, 1, training=False), build_dataset(plain, 1, training=False)
    ):
        np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
        np.testing.assert_array_equal(
            a["groundtruth_boxes"].numpy(), b["groundtruth_boxes"].numpy()
        )
