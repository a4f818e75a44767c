"""Backbone weight files: round trip in every accepted format, clear errors on mismatch."""

import numpy as np
import pytest

from detbench.errors import ConfigError
from detbench.feature_extractors import mobilenet  # noqa: F401
from detbench.feature_extractors.base import FEATURE_EXTRACTORS
from detbench.feature_extractors.weights import load_backbone_weights
from detbench.protos import feature_extractor_pb2 as pb


def make(name="mobilenet_v1", **fields):
    return FEATURE_EXTRACTORS.get(name).from_config(pb.FeatureExtractor(type=name, **fields))


@pytest.fixture(scope="module")
def source():
    fe = make()
    backbone = fe.build_backbone()
    # make moving statistics differ from their initial values too
    for v in backbone.variables:
        v.assign(np.random.RandomState(len(v.name)).normal(size=v.shape).astype("float32"))
    return fe


@pytest.mark.parametrize("filename", ["bb.h5", "bb.weights.h5", "ckpt/bb"])
@pytest.mark.parametrize("freeze", [False, True])
def test_round_trip_restores_every_variable(source, tmp_path, filename, freeze):
    path = tmp_path / filename
    source.build_backbone().save_weights(str(path))
    fresh = make(weights_path=str(path), freeze_batchnorm=freeze)
    first_stage = fresh.build_first_stage()  # built before loading: shares the layers
    box = fresh.build_box_classifier()
    assert fresh.load_weights().loaded == len(source.build_backbone().variables)
    ours = fresh.build_backbone()
    assert ours.count_params() == source.build_backbone().count_params()
    src = {id(v): v for v in source.build_backbone().variables}
    for a, b in zip(source.build_backbone().variables, ours.variables):
        if not freeze:
            assert a.name.split("/")[-1] == b.name.split("/")[-1]

    # compare by layer path (variable order in .variables changes when BN is frozen)
    def by_layer(model):
        out = {}
        for layer in model.layers:
            for w in sorted(layer.weights, key=lambda w: w.name):
                out.setdefault(layer.name, []).append(w.numpy())
        return out

    expected, got = by_layer(source.build_backbone()), by_layer(ours)
    assert expected.keys() == got.keys()
    for name in expected:
        for a, b in zip(
            sorted(expected[name], key=lambda a: (a.shape, a.ravel()[0])),
            sorted(got[name], key=lambda a: (a.shape, a.ravel()[0])),
        ):
            np.testing.assert_array_equal(a, b)
    restored = {id(v) for v in ours.variables}
    assert {id(v) for v in first_stage.variables} <= restored
    assert {id(v) for v in box.variables} <= restored
    assert src  # the source is unchanged


def test_legacy_h5_into_frozen_batchnorm_keeps_gamma_beta_in_place(source, tmp_path):
    path = tmp_path / "bb.h5"
    source.build_backbone().save_weights(str(path))
    fresh = make(weights_path=str(path), freeze_batchnorm=True)
    fresh.build_backbone()
    fresh.load_weights()
    src = source.build_backbone().get_layer("layer_3")
    dst = fresh.build_backbone().get_layer("layer_3")
    for attr in ("_norm0", "_norm1"):
        for var in ("gamma", "beta", "moving_mean", "moving_variance"):
            np.testing.assert_array_equal(
                getattr(getattr(src, attr), var).numpy(), getattr(getattr(dst, attr), var).numpy()
            )


@pytest.mark.parametrize("filename", ["bb.h5", "bb.weights.h5", "ckpt/bb"])
def test_mismatched_file_names_file_and_layer(source, tmp_path, filename):
    path = tmp_path / filename
    source.build_backbone().save_weights(str(path))  # mobilenet_v1 weights
    target = make("mobilenet_v2", weights_path=str(path))
    target.build_backbone()
    with pytest.raises(ConfigError) as e:
        target.load_weights()
    message = str(e.value)
    assert str(path) in message and "\n" not in message
    assert "mobilenet_v2" in message


def test_mobilenet_weights_into_resnet_fail(source, tmp_path):
    from detbench.feature_extractors import resnet  # noqa: F401

    path = tmp_path / "mobilenet.h5"
    source.build_backbone().save_weights(str(path))
    target = make("resnet50_v1", weights_path=str(path))
    target.build_backbone()
    # legacy .h5 with other layer names than ours: read as a Keras Applications file
    with pytest.raises(
        ConfigError,
        match=r"mobilenet\.h5: does not match resnet50_v1 as a Keras "
        r"Applications \.h5 file: it lacks conv1_conv/kernel "
        r"for our conv1/kernel \(7, 7, 3, 64\)$",
    ):
        target.load_weights()


def test_missing_and_corrupt_files(tmp_path):
    fe = make(weights_path=str(tmp_path / "nope.h5"))
    with pytest.raises(ConfigError, match="nope.h5: no such"):
        fe.load_weights()
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ConfigError, match="bad.h5: not an HDF5"):
        load_backbone_weights(fe.build_backbone(), bad)
    assert make().load_weights() == 0
