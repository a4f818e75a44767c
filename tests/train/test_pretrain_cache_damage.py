"""Issue 27 item 2: damaged pretraining cache entries are named in one line, moved
aside or discarded, and computed again (instead of failing every later run)."""

import os

import pytest

from detbench.protos import feature_extractor_pb2
from detbench.train import pretrain

TINY = dict(
    resolution=32, steps=3, batch_size=4, num_train_images=3, num_val_images=2, warmup_steps=1
)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DETBENCH_CACHE_DIR", str(tmp_path / "cache"))


def _extractor():
    return feature_extractor_pb2.FeatureExtractor(type="mobilenet_v2", depth_multiplier=0.35)


@pytest.mark.parametrize("report", ['{"steps": 3, "val_acc', "[1, 2]", '{"steps": 3}'])
def test_a_damaged_report_beside_its_weights_is_moved_aside_and_pretrained_again(
    report, capsys, monkeypatch
):
    config, recipe = _extractor(), pretrain.Recipe(**TINY)
    key = pretrain.cache_key(config, recipe)
    os.makedirs(pretrain.cache_dir())
    weights = os.path.join(pretrain.cache_dir(), key + ".h5")
    with open(weights, "wb") as f:
        f.write(b"intact weights")
    with open(weights[:-3] + ".json", "w") as f:
        f.write(report)
    assert pretrain.resolve_reference(pretrain.REFERENCE_PREFIX + key) is None
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {weights[:-3]}.json: damaged pretraining report")
    assert err.count("\n") == 1 and "moved aside" in err and "pretrained again" in err
    left = sorted(os.listdir(pretrain.cache_dir()))
    assert [n.split(".damaged-")[0] for n in left] == [key + ".h5", key + ".json"]
    calls = []

    def pretrain_again(*args, **kwargs):
        calls.append(args)
        raise KeyboardInterrupt  # stop there: what is pretrained is not this test's

    monkeypatch.setattr(pretrain, "pretrain", pretrain_again)
    with pytest.raises(KeyboardInterrupt):
        pretrain.ensure_pretrained(config, recipe, progress=False)
    assert [c[2] for c in calls] == [weights]  # computed again, into the same cache path


@pytest.mark.parametrize("damage", ["index", "data"])
def test_a_damaged_partial_checkpoint_is_discarded_and_pretraining_starts_again(
    tmp_path, capsys, damage
):
    import tensorflow as tf

    out = tmp_path / "w.h5"
    partial = str(out) + ".partial"
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(v=tf.Variable(tf.ones([64, 64]))), partial, max_to_keep=1
    )
    saved = manager.save()
    victim = saved + (".index" if damage == "index" else ".data-00000-of-00001")
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) // 3)
    if damage == "index":  # the failure the issue saw, every run: named now, then gone
        report = pretrain.pretrain(_extractor(), pretrain.Recipe(**TINY), str(out), progress=False)
        assert report.resumed_from == 0 and report.steps == 3 and out.exists()
    else:
        assert pretrain.discard_damaged_checkpoint(partial)
    err = capsys.readouterr().err
    assert f"warning: {partial}: damaged pretraining checkpoint (" in err
    assert "discarded, pretraining starts again" in err
    assert not os.path.exists(partial)
