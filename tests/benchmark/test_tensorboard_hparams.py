"""A sweep's cells as TensorBoard HParams, read back with TensorBoard's own event reader."""

import glob
import os

import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

from detbench.benchmark.hparams_summary import write_hparams

ROWS = [
    {
        "cell_id": "c1",
        "train_key": "k1",
        "label": "SSD MobileNet v2 320px",
        "model_label": "SSD MobileNet v2 320px",
        "meta_arch": "ssd",
        "feature_extractor": "mobilenet_v2",
        "resolution": 320,
        "num_proposals": None,
        "axis_values": {"resolution": "320", "num_proposals": "-"},
        "latency_ms": 12.5,
        "peak_rss_mb": 800.0,
        "mAP": 0.25,
        "mAP (small)": 0.125,
    },
    {
        "cell_id": "c2",
        "train_key": "k2",
        "label": "Faster R-CNN MobileNet v2 480px, 100 proposals",
        "model_label": "Faster R-CNN MobileNet v2 480px",
        "meta_arch": "faster_rcnn",
        "feature_extractor": "mobilenet_v2",
        "resolution": 480,
        "num_proposals": 100,
        "axis_values": {"resolution": "480", "num_proposals": "100"},
        "latency_ms": 80.0,
        "peak_rss_mb": 1200.0,
        "mAP": 0.5,
    },
]


def _accumulator(path):
    acc = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def _plugin_data(acc, tag):
    content = acc.PluginTagToContent("hparams")[tag]
    return plugin_data_pb2.HParamsPluginData.FromString(content)


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sweep"))
    with tf.summary.create_file_writer(os.path.join(out, "models", "k1", "train")).as_default():
        tf.summary.scalar("loss/total", 3.0, step=7)
    write_hparams(ROWS, out)
    return write_hparams(ROWS, out)  # a second summary replaces the first


def test_experiment_lists_axes_and_metrics(logdir):
    data = _plugin_data(_accumulator(logdir), "_hparams_/experiment")
    names = {h.name for h in data.experiment.hparam_infos}
    assert {"meta_arch", "resolution", "num_proposals", "feature_extractor"} <= names
    metrics = {m.name.tag for m in data.experiment.metric_infos}
    assert {"latency_ms", "peak_rss_mb", "mAP", "mAP (small)"} <= metrics


def test_each_cell_is_a_session_with_its_values(logdir):
    for row in ROWS:
        acc = _accumulator(os.path.join(logdir, "cells", row["cell_id"]))
        info = _plugin_data(acc, "_hparams_/session_start_info").session_start_info
        assert info.group_name == row["label"]
        assert info.hparams["meta_arch"].string_value == row["meta_arch"]
        # resolution is a number in every cell; num_proposals is '-' for SSD: strings
        assert info.hparams["resolution"].number_value == row["resolution"]
        assert info.hparams["num_proposals"].string_value == str(
            row["axis_values"]["num_proposals"]
        )
        for tag in ("latency_ms", "peak_rss_mb", "mAP", "mAP (small)"):
            if tag in row:
                (event,) = acc.Tensors(tag)
                assert float(tensor_util.make_ndarray(event.tensor_proto)) == pytest.approx(
                    row[tag]
                )
            else:
                assert tag not in acc.Tags()["tensors"]


def test_training_curves_are_linked(logdir):
    (link,) = glob.glob(os.path.join(logdir, "training", "*"))
    assert "[k1]" in link  # k2 was never trained: no link
    (event,) = _accumulator(link).Tensors("loss/total")
    assert event.step == 7 and float(tensor_util.make_ndarray(event.tensor_proto)) == 3.0
    assert not glob.glob(logdir + ".tmp*") and not glob.glob(logdir + ".old*")
