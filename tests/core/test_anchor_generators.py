import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

from detbench.core import anchor_generators as ag
from detbench.protos import anchor_generator_pb2


def test_grid_anchors_by_hand():
    gen = ag.GridAnchorGenerator(
        scales=(0.5, 1.0), aspect_ratios=(0.5, 1.0, 2.0), base_size=256, stride=16
    )
    assert gen.num_anchors_per_location() == 6
    a = gen.generate((2, 3), (32, 48)).numpy()
    assert a.shape == (2 * 3 * 6, 4)
    # Location (0, 0): centre (8, 8) px.  Scale 0.5, ratio 0.5: side 128,
    # h = 128 / sqrt(.5) = 181.019336, w = 90.509668 -> px [-82.509668,
    # -37.254834, 98.509668, 53.254834] / (32, 48, 32, 48).
    np.testing.assert_allclose(a[0], [-2.5784271, -0.7761424, 3.0784271, 1.1094757], rtol=1e-5)
    # Scale 0.5, ratio 1: [-56, -56, 72, 72] px.
    np.testing.assert_allclose(a[1], [-1.75, -1.1666667, 2.25, 1.5], rtol=1e-5)
    # Scale 1, ratio 2: h = 181.019336, w = 362.038672 -> [-82.509668,
    # -173.019336, 98.509668, 189.019336] px.
    np.testing.assert_allclose(a[5], [-2.5784271, -3.6045695, 3.0784271, 3.9379028], rtol=1e-5)
    # Location (0, 1): centre (8, 24); scale 0.5 ratio 1: [-56, -40, 72, 88].
    np.testing.assert_allclose(a[7], [-1.75, -0.8333333, 2.25, 1.8333333], rtol=1e-5)
    # Location (1, 0) starts at 3 * 6 = 18: centre (24, 8): [-40, -56, 88, 72].
    np.testing.assert_allclose(a[19], [-1.25, -1.1666667, 2.75, 1.5], rtol=1e-5)


def test_grid_default_stride_offset_and_clip():
    # Stride 0/None: 64 / 4 = 96 / 6 = 16 px; index 1 is [-56, -56, 72, 72] px.
    a = ag.GridAnchorGenerator(scales=(0.5, 1.0)).generate((4, 6), (64, 96))
    np.testing.assert_allclose(a[1], [-0.875, -0.5833333, 1.125, 0.75], rtol=1e-5)
    # offset 0: centre (0, 0); side 128 -> [-64, -64, 64, 64] px.
    a = ag.GridAnchorGenerator(scales=(0.5,), stride=16, offset=0).generate((2, 3), (32, 48))
    np.testing.assert_allclose(a[1], [-2.0, -1.3333333, 2.0, 1.3333333], rtol=1e-5)
    a = ag.GridAnchorGenerator(stride=16, clip=True).generate((2, 3), (32, 48))
    assert a.numpy().min() == 0.0 and a.numpy().max() == 1.0


def test_multiscale_ssd_anchors_by_hand():
    gen = ag.MultiscaleAnchorGenerator()  # 6 layers, scales .2 .35 .5 .65 .8 .95
    assert gen.num_anchors_per_location() == [3, 6, 6, 6, 6, 6]
    shapes = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    a = gen.generate(shapes).numpy()
    # 361 * 3 + 100 * 6 + 25 * 6 + 9 * 6 + 4 * 6 + 1 * 6 = 1917
    assert a.shape == (1917, 4)
    c = 0.5 / 19  # 0.02631579
    np.testing.assert_allclose(
        a[:4],
        [
            # (0.1, 1): half side 0.05
            [c - 0.05, c - 0.05, c + 0.05, c + 0.05],
            # (0.2, 2): h = 0.14142136, w = 0.28284271
            [-0.04439489, -0.11510557, 0.09702647, 0.16773715],
            # (0.2, 0.5): h and w swapped
            [-0.11510557, -0.04439489, 0.16773715, 0.09702647],
            # next location (0, 1): centre x = 1.5 / 19 = 0.07894737
            [c - 0.05, 0.02894737, c + 0.05, 0.12894737],
        ],
        atol=1e-6,
    )
    # Layer 1 starts at 1083; centre 0.05.  Scale 0.35 ratio 1, then the
    # extra anchor sqrt(0.35 * 0.5) = 0.41833001 (index 1083 + 5).
    np.testing.assert_allclose(a[1083], [-0.125, -0.125, 0.225, 0.225], atol=1e-6)
    np.testing.assert_allclose(
        a[1088], [-0.15916501, -0.15916501, 0.25916501, 0.25916501], atol=1e-6
    )
    # Last layer (1 x 1, index 1911..1916): 0.95 at ratios 1, 2, ...; extra
    # anchor sqrt(0.95 * 1.0) = 0.97467943.
    np.testing.assert_allclose(a[1911], [0.025, 0.025, 0.975, 0.975], atol=1e-6)
    np.testing.assert_allclose(
        a[1912], [0.16412428, -0.17175144, 0.83587572, 1.17175144], atol=1e-6
    )
    np.testing.assert_allclose(a[1916], [0.01266028, 0.01266028, 0.98733972, 0.98733972], atol=1e-6)
    # Non-square 300 x 600 image: widths * min/W = 0.5, so the 0.95 1:1
    # anchor is 285 x 285 px: [0.025, 0.2625, 0.975, 0.7375].
    b = gen.generate(shapes, image_shape=(300, 600)).numpy()
    np.testing.assert_allclose(b[1911], [0.025, 0.2625, 0.975, 0.7375], atol=1e-6)
    with pytest.raises(ValueError, match="6 layers"):
        gen.generate(shapes[:2])


def test_multiscale_options():
    gen = ag.MultiscaleAnchorGenerator(
        num_layers=2,
        min_scale=0.2,
        max_scale=0.9,
        aspect_ratios=(1.0,),
        interpolated_scale_aspect_ratio=0.0,
        reduce_boxes_in_lowest_layer=False,
    )
    assert gen.num_anchors_per_location() == [1, 1]
    a = gen.generate([(1, 1), (1, 1)]).numpy()
    np.testing.assert_allclose(a, [[0.4, 0.4, 0.6, 0.6], [0.05, 0.05, 0.95, 0.95]], atol=1e-6)


def test_multilevel_anchors_by_hand():
    gen = ag.MultilevelAnchorGenerator(
        min_level=3, max_level=4, anchor_scale=4, scales_per_octave=2, aspect_ratios=(0.5, 1.0, 2.0)
    )
    assert gen.num_anchors_per_location() == 6
    out = gen.generate((64, 32))
    assert sorted(out) == [3, 4]
    a3, a4 = out[3].numpy(), out[4].numpy()
    assert a3.shape == (8 * 4 * 6, 4) and a4.shape == (4 * 2 * 6, 4)
    # Level 3, centre (4, 4) px.  Side 32, ratio 0.5: h 45.254834, w 22.627417
    # -> [-18.627417, -7.3137085, 26.627417, 15.3137085] / (64, 32, 64, 32).
    np.testing.assert_allclose(a3[0], [-0.2910534, -0.2285534, 0.4160534, 0.4785534], rtol=1e-5)
    # Side 32 * 2^(1/2) = 45.254834, ratio 0.5: h 64, w 32 -> [-28, -12, 36, 20].
    np.testing.assert_allclose(a3[3], [-0.4375, -0.375, 0.5625, 0.625], rtol=1e-5)
    # Same side, ratio 1: [-18.627417, -18.627417, 26.627417, 26.627417] px.
    np.testing.assert_allclose(a3[4], [-0.2910534, -0.5821068, 0.4160534, 0.8321068], rtol=1e-5)
    # Level 4, centre (8, 8), side 64, ratio 1: [-24, -24, 40, 40] px.
    np.testing.assert_allclose(a4[1], [-0.375, -0.75, 0.625, 1.25], rtol=1e-5)
    np.testing.assert_allclose(ag.concat_levels(out), np.concatenate([a3, a4]))


def test_multilevel_feature_map_sides_are_ceil():
    gen = ag.MultilevelAnchorGenerator()  # levels 2..6, 3 anchors
    out = gen.generate((100, 130))
    # ceil(100/4)=25 x ceil(130/4)=33; 13 x 17; 7 x 9; 4 x 5; 2 x 3
    sizes = {2: 25 * 33, 3: 13 * 17, 4: 7 * 9, 5: 4 * 5, 6: 2 * 3}
    assert {l: v.shape[0] for l, v in out.items()} == {l: 3 * n for l, n in sizes.items()}
    out = gen.generate((100, 130), {2: (24, 32)})
    assert out[2].shape[0] == 24 * 32 * 3


def test_build_anchor_generator():
    def build(text, **kw):
        return ag.build_anchor_generator(
            text_format.Parse(text, anchor_generator_pb2.AnchorGenerator()), **kw
        )

    g = build("grid {}")
    assert g.scales == (0.25, 0.5, 1.0, 2.0) and g.aspect_ratios == (0.5, 1, 2)
    assert g.base_size == 256 and g.stride is None
    g = build("grid { scales: 1 aspect_ratios: 1 stride: 8 base_size: 64 }")
    np.testing.assert_allclose(
        g.generate((1, 1), (64, 64)), [[-0.4375, -0.4375, 0.5625, 0.5625]]
    )  # 4 +- 32
    g = build("multiscale {}")
    assert g.num_anchors_per_location() == [3, 6, 6, 6, 6, 6]
    assert build(
        "multiscale { aspect_ratios: [1, 2] }", num_layers=3
    ).num_anchors_per_location() == [3, 3, 3]
    g = build("multilevel { min_level: 3 max_level: 7 scales_per_octave: 3 }")
    assert g.num_anchors_per_location() == 9 and g.levels == [3, 4, 5, 6, 7]
    with pytest.raises(ValueError, match="anchor_generator"):
        build("")


def test_inside_tf_function_with_dynamic_shapes():
    grid = ag.GridAnchorGenerator(stride=16)
    ssd = ag.MultiscaleAnchorGenerator(num_layers=2)
    fpn = ag.MultilevelAnchorGenerator(min_level=3, max_level=4)

    @tf.function(input_signature=[tf.TensorSpec([2], tf.int32)] * 2)
    def fn(fmap, image):
        return (
            grid.generate((fmap[0], fmap[1]), (image[0], image[1])),
            ssd.generate([(fmap[0], fmap[1]), (1, 1)], (image[0], image[1])),
            ag.concat_levels(fpn.generate((image[0], image[1]))),
        )

    g, s, f = fn(tf.constant([2, 3]), tf.constant([32, 48]))
    np.testing.assert_allclose(g, grid.generate((2, 3), (32, 48)))
    np.testing.assert_allclose(s, ssd.generate([(2, 3), (1, 1)], (32, 48)))
    np.testing.assert_allclose(f, ag.concat_levels(fpn.generate((32, 48))))


def test_anchor_cache_one_entry_per_shape_and_a_constant_in_graphs():
    # One 16 px anchor per cell of a 2 x 2 map over a 32 x 32 input: centres
    # (8, 8), (8, 24), (24, 8), (24, 24) px.
    cache = ag.AnchorCache(ag.GridAnchorGenerator((1.0,), (1.0,), base_size=16, stride=16))
    fmap = tf.zeros([1, 2, 2, 1])
    expected = np.array([[0, 0, 16, 16], [0, 16, 16, 32], [16, 0, 32, 16], [16, 16, 32, 32]])
    np.testing.assert_allclose(cache((32, 32), [fmap]).numpy(), expected / 32.0, atol=1e-6)
    cache((32, 32), [fmap])
    assert len(cache) == 1
    op_types = []

    @tf.function
    def static(x):
        anchors = cache((32, 32), [x])
        op_types.append(anchors.op.type)
        return anchors

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 1])])
    def dynamic(x):
        shape = tf.shape(x)
        return cache((shape[1] * 16, shape[2] * 16), [x])

    np.testing.assert_allclose(static(fmap), expected / 32.0, atol=1e-6)
    np.testing.assert_allclose(dynamic(fmap), expected / 32.0, atol=1e-6)
    assert op_types == ["Const"] and len(cache) == 1


def test_anchor_cache_levels_and_layers_in_order():
    # Multilevel levels 3..4 over a 32 x 32 input: 4 x 4 then 2 x 2 cells.
    gen = ag.MultilevelAnchorGenerator(3, 4, anchor_scale=1.0, aspect_ratios=(1.0,))
    maps = [tf.zeros([1, 4, 4, 1]), tf.zeros([1, 2, 2, 1])]
    anchors = ag.AnchorCache(gen)((32, 32), maps).numpy()
    assert anchors.shape == (16 + 4, 4)
    # level 3 cell (0, 0): centre 4 px, side 8; level 4 cell (0, 0): centre 8, side 16
    np.testing.assert_allclose(anchors[0] * 32, [0, 0, 8, 8], atol=1e-5)
    np.testing.assert_allclose(anchors[16] * 32, [0, 0, 16, 16], atol=1e-5)
    ms = ag.MultiscaleAnchorGenerator(num_layers=2, reduce_boxes_in_lowest_layer=False)
    np.testing.assert_allclose(
        ag.AnchorCache(ms)((32, 32), maps).numpy(), ms.generate([(4, 4), (2, 2)], (32, 32))
    )
