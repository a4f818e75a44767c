"""The training loop with a toy DetectionModel: learning, resume, fine-tune, NaN, summaries."""

import glob
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from detbench.errors import DetbenchError, run_cli
from detbench.train import FineTuneError, NonFiniteLossError, restore_matching_variables, train
from tests.evaluation.coco_fixture import set_eval_reader, write_coco_set
from tests.train.train_toy_model import ToyDetector, make_dataset, make_examples, toy_pipeline


def _run(model_dir, num_steps, model=None, dataset_kwargs=None, **pipeline_kwargs):
    model = model or ToyDetector()
    pipeline = toy_pipeline(num_steps=num_steps, **pipeline_kwargs)
    dataset = make_dataset(model, **(dataset_kwargs or {}))
    return train(pipeline, str(model_dir), model=model, dataset=dataset, progress=False)


def _mean_loss(model, num_images=8):
    images, boxes = make_examples(num_images)
    inputs, true_shapes = model.preprocess(images)
    predictions = model.predict(inputs, true_shapes)
    return float(model.loss(predictions, {"groundtruth_boxes": boxes})["box_loss"])


def _weights(model):
    return [v.numpy() for v in model.trainable_variables]


def test_loss_decreases_and_summaries_are_written(tmp_path):
    model = ToyDetector()
    result = _run(
        tmp_path, 20, model=model, optimizer="adam", learning_rate=0.05, checkpoint_every_n_steps=10
    )
    assert result.step == 20 and result.model is model and result.wall_time > 0
    assert set(result.losses) == {"box_loss", "regularization_loss", "total_loss"}
    tf_keras.utils.set_random_seed(0)  # train_config.seed 0: the trained model's initial weights
    fresh = _built(ToyDetector())
    assert _mean_loss(model) < 0.8 * _mean_loss(fresh)
    assert sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "ckpt-*.index"))) == [
        "ckpt-10.index",
        "ckpt-20.index",
    ]
    events = glob.glob(str(tmp_path / "train" / "events.out.tfevents.*"))
    tags = {v.tag for e in tf.compat.v1.train.summary_iterator(events[0]) for v in e.summary.value}
    assert {"loss/box_loss", "loss/total_loss", "learning_rate", "steps_per_sec"} <= tags


def test_resume_continues_the_step_counter_and_the_weights(tmp_path):
    # one repeated batch, so an interrupted run sees the same data as a continuous one
    data = {"num_images": 4}
    straight = _run(tmp_path / "straight", 5, dataset_kwargs=data)
    first = _run(tmp_path / "resumed", 3, dataset_kwargs=data, checkpoint_every_n_steps=2)
    assert first.step == 3
    assert os.path.exists(tmp_path / "resumed" / "ckpt-3.index")
    second = _run(tmp_path / "resumed", 5, dataset_kwargs=data, checkpoint_every_n_steps=2)
    assert second.step == 5
    for a, b in zip(_weights(straight.model), _weights(second.model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the saved checkpoint holds the final weights
    saved = tf.train.load_checkpoint(str(tmp_path / "resumed" / "ckpt-5"))
    kernel = saved.get_tensor("model/box_head/kernel/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_allclose(kernel, second.model.box_head.kernel.numpy())
    assert saved.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 5
    # already at num_steps: nothing runs
    again = _run(tmp_path / "resumed", 5, dataset_kwargs=data)
    assert again.step == 5 and again.losses == {}


def _built(model):
    model.predict(*model.preprocess(np.zeros([1, 16, 16, 3], np.float32)))
    return model


def test_fine_tune_restores_matching_variables_only(tmp_path, caplog):
    source = _run(tmp_path / "source", 2).model
    ckpt = str(tmp_path / "source")
    # detection: conv kernel+bias and box_head bias match; box_head kernel [6,4] vs [5,4]
    # does not; the hidden layer is not in the checkpoint
    target = _built(ToyDetector(hidden=5))
    report = restore_matching_variables(target, ckpt, "detection")
    assert sorted(report.restored) == [
        "backbone/layer_with_weights-0/bias",
        "backbone/layer_with_weights-0/kernel",
        "box_head/bias",
    ]
    reasons = dict(report.not_restored)
    assert reasons["box_head/kernel"] == "shape [5, 4] != checkpoint [6, 4]"
    assert reasons["hidden/kernel"] == reasons["hidden/bias"] == "not in checkpoint"
    np.testing.assert_array_equal(target.box_head.bias.numpy(), source.box_head.bias.numpy())
    np.testing.assert_array_equal(
        target.backbone.weights[0].numpy(), source.backbone.weights[0].numpy()
    )
    # classification: the backbone only, found under the checkpoint's model/backbone prefix
    target = _built(ToyDetector())
    report = restore_matching_variables(target, ckpt, "classification")
    assert len(report.restored) == 2 and not report.not_restored
    assert not np.array_equal(target.box_head.bias.numpy(), source.box_head.bias.numpy())
    # through train(): counts logged and reported
    caplog.set_level(logging.INFO, logger="detbench.train")
    result = _run(
        tmp_path / "tuned",
        1,
        model=ToyDetector(hidden=5),
        fine_tune_checkpoint=ckpt,
        fine_tune_checkpoint_type="detection",
    )
    assert len(result.fine_tune.restored) == 3 and len(result.fine_tune.not_restored) == 3
    assert "restored 3 of 6 variables" in caplog.text
    assert "not restored box_head/kernel (shape [5, 4] != checkpoint [6, 4])" in caplog.text


def test_fine_tune_errors(tmp_path):
    with pytest.raises(FineTuneError, match="not found"):
        restore_matching_variables(_built(ToyDetector()), str(tmp_path / "nope"))
    other = tf.train.Checkpoint(thing=tf.Variable(np.zeros([7, 7], np.float32)))
    path = other.save(str(tmp_path / "other" / "ckpt"))
    with pytest.raises(FineTuneError, match="no variable of the model matches"):
        restore_matching_variables(_built(ToyDetector()), path)


def test_nan_loss_stops_with_the_step_named(tmp_path):
    # batch 3 (images 8..11) holds a NaN box: the loss of step 3 is NaN
    with pytest.raises(
        NonFiniteLossError,
        match=r"step 3: non-finite loss \(box_loss=nan, "
        r"total_loss=nan\)",
    ) as info:
        _run(
            tmp_path, 10, dataset_kwargs={"num_images": 16, "nan_at": 9}, checkpoint_every_n_steps=1
        )
    assert isinstance(info.value, DetbenchError) and info.value.step == 3
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")  # NaN weights not saved


def test_bad_train_config_is_a_config_error(tmp_path):
    with pytest.raises(DetbenchError, match="train_config.num_steps must be > 0"):
        _run(tmp_path, 0)


def test_periodic_evaluation_is_written_to_tensorboard(tmp_path):
    model = ToyDetector()
    pipeline = toy_pipeline(num_steps=4, eval_every_n_steps=2)
    set_eval_reader(pipeline, *write_coco_set(str(tmp_path / "set")))
    pipeline.eval_config.metrics_set.append("coco_detection_metrics")
    result = train(
        pipeline, str(tmp_path / "run"), model=model, dataset=make_dataset(model), progress=False
    )
    assert 0.0 <= result.eval_metrics["mAP"] <= 1.0 and result.eval_metrics["num_images"] == 3
    events = glob.glob(str(tmp_path / "run" / "eval" / "events.out.tfevents.*"))
    steps = {
        e.step
        for path in events
        for e in tf.compat.v1.train.summary_iterator(path)
        for v in e.summary.value
        if v.tag == "mAP"
    }
    assert steps == {2, 4}
    # the same evaluations, in order, with the training seconds before each
    assert [h[0] for h in result.eval_history] == [2, 4]
    assert result.eval_history[-1][2] is result.eval_metrics
    assert 0 < result.eval_history[0][1] < result.eval_history[1][1]
    assert 0 < result.eval_seconds < result.wall_time


def test_eval_callback_and_time_budget_excluding_evaluation(tmp_path, monkeypatch):
    """A budget stops training before a step that would overrun it (evaluation
    time not counted), checkpoints the last step, and a later call resumes."""
    import detbench.train.trainer as trainer_lib

    clock = {"now": 1000.0}
    monkeypatch.setattr(trainer_lib.time, "time", lambda: clock["now"])
    real_step = trainer_lib._Trainer._make_step_fn

    def slow_step_fn(self):  # every training step takes 10 s of the fake clock
        step_fn = real_step(self)

        def timed(batch):
            clock["now"] += 10.0
            return step_fn(batch)

        return timed

    def slow_evaluate(self, step):  # every evaluation takes 100 s
        clock["now"] += 100.0
        return {"mAP": step / 100.0}

    monkeypatch.setattr(trainer_lib._Trainer, "_make_step_fn", slow_step_fn)
    monkeypatch.setattr(trainer_lib._Trainer, "_evaluate", slow_evaluate)
    seen = []
    model = ToyDetector()
    pipeline = toy_pipeline(num_steps=20, eval_every_n_steps=2)
    result = train(
        pipeline,
        str(tmp_path),
        model=model,
        dataset=make_dataset(model),
        progress=False,
        time_budget_s=45.0,
        eval_callback=lambda *args: seen.append(args),
    )
    # steps 1-4 take 40 s; a fifth would end at 50 s > 45 s. The evaluations at
    # steps 2 and 4 (200 s) do not count.
    assert result.step == 4 and result.stopped_early
    assert [(s, t) for s, t, _ in seen] == [(2, 20.0), (4, 40.0)]
    assert [m["mAP"] for _, _, m in seen] == [0.02, 0.04]
    assert result.eval_seconds == 200.0 and result.wall_time == 240.0
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-4")
    again = train(
        toy_pipeline(num_steps=6),
        str(tmp_path),
        model=ToyDetector(),
        dataset=make_dataset(ToyDetector()),
        progress=False,
    )
    assert again.step == 6 and not again.stopped_early


def test_cli_config_error_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    import detbench.config
    from detbench.train.__main__ import main

    monkeypatch.setattr(
        detbench.config,
        "load_pipeline",
        lambda path, overrides=(), adjust=None: toy_pipeline(num_steps=1),
    )
    code = run_cli(
        main, ["--pipeline", "p.pbtxt", "--model_dir", str(tmp_path), "--num_steps", "0"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "error: train_config.num_steps must be > 0, got 0"
