"""Load a backbone's weights from a local file, or fail naming the file and what mismatched.

Accepted (all written by tf_keras ``Model.save_weights``):

* ``*.weights.h5``: the Keras v3 weights format (variables addressed by
  layer/attribute path; tf_keras loads it and names the layer that differs);
* ``*.h5`` / ``*.hdf5``: the legacy HDF5 format. tf_keras matches it by
  layer order and, inside a layer, by the order of ``trainable_weights +
  non_trainable_weights``, which changes when batch norm is frozen (gamma,
  beta, moving mean and variance share a shape, so a file written with
  trainable BN would load permuted, silently). Here each layer's variables are
  matched by name instead (sub-layer kind, its creation rank, variable name),
  with every shape checked before anything is assigned;
* a TF checkpoint prefix (``path.index`` exists): object-based restore; every
  backbone variable must be found with its shape.
"""
import os
import re

import numpy as np
import tensorflow as tf
import tf_keras

from detbench.errors import ConfigError

_VAR_RANK = {"kernel": 0, "depthwise_kernel": 0, "pointwise_kernel": 1, "bias": 2,
             "gamma": 3, "beta": 4, "moving_mean": 5, "moving_variance": 6}


def _error(path, what):
    return ConfigError(f"feature_extractor.weights_path: {path}: {what}")


def _first_line(e):
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def load_backbone_weights(backbone_model, path):
    """Restore ``backbone_model``'s variables from ``path``; return how many were restored."""
    path = os.fspath(path)
    if os.path.isfile(path):
        import h5py
        if not h5py.is_hdf5(path):
            raise _error(path, "not an HDF5 weights file (nor a TF checkpoint prefix)")
        with h5py.File(path, "r") as f:
            legacy = "layer_names" in f.attrs
        if legacy:
            return _load_legacy_h5(backbone_model, path)
        return _load_keras_v3(backbone_model, path)
    if os.path.isfile(path + ".index"):
        return _load_checkpoint(backbone_model, path)
    raise _error(path, "no such weights file or TF checkpoint prefix")


def _load_keras_v3(model, path):
    try:
        model.load_weights(path)
    except Exception as e:  # noqa: BLE001  (any failure means the file does not fit)
        raise _error(path, f"does not match {model.name}: {_first_line(e)}") from None
    return len(model.variables)


def _load_checkpoint(model, path):
    try:
        expected = dict(tf.train.list_variables(path))
    except Exception as e:  # noqa: BLE001
        raise _error(path, f"unreadable checkpoint: {_first_line(e)}") from None
    status = None
    try:
        status = model.load_weights(path)
        status.assert_existing_objects_matched()
    except Exception as e:  # noqa: BLE001
        if status is not None:
            status.expect_partial()   # no per-value warnings at exit: the error says it
        message = _first_line(e)
        if isinstance(e, AssertionError):
            missing = re.search(r"Unresolved object in checkpoint.*|Some Python objects.*", str(e))
            message = (f"{len(model.variables)} backbone variables expected, the checkpoint "
                       f"holds {len(expected) - 1} values; {missing.group(0)[:200] if missing else message}")
        raise _error(path, f"does not match {model.name}: {message}") from None
    return len(model.variables)


def _canonical(name):
    """'conv2_unit1/conv2d_3/kernel:0' -> sort key independent of global counters."""
    parts = name.split(":")[0].split("/")
    var = parts[-1]
    key = []
    for part in parts[1:-1]:
        m = re.fullmatch(r"(.*?)(?:_(\d+))?", part)
        key.append((m.group(1), int(m.group(2) or 0)))
    return (tuple(key), _VAR_RANK.get(var, 9), var)


def _load_legacy_h5(model, path):
    import h5py
    layers = [layer for layer in model.layers if layer.weights]
    assignments = []
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["layer_names"]]
        saved = []
        for n in names:
            weight_names = [w.decode() if isinstance(w, bytes) else w
                            for w in group[n].attrs["weight_names"]]
            if weight_names:
                saved.append((n, weight_names))
        for i, layer in enumerate(layers):
            if i >= len(saved):
                raise _error(path, f"does not match {model.name}: it holds {len(saved)} layers "
                                   f"with weights, the model needs {len(layers)} (first missing: "
                                   f"{layer.name})")
            file_layer, weight_names = saved[i]
            ours = sorted(layer.weights, key=lambda w: _canonical(w.name))
            theirs = sorted(weight_names, key=_canonical)
            if len(ours) != len(theirs):
                raise _error(path, f"does not match {model.name}: layer #{i} {layer.name} has "
                                   f"{len(ours)} variables, the file's {file_layer} {len(theirs)}")
            for var, wname in zip(ours, theirs):
                value = np.asarray(group[file_layer][wname])
                if _canonical(var.name)[1:] != _canonical(wname)[1:] or value.shape != tuple(var.shape):
                    raise _error(path, f"does not match {model.name}: {var.name} "
                                       f"{tuple(var.shape)} vs the file's {wname} {value.shape}")
                assignments.append((var, value))
        if len(saved) != len(layers):
            raise _error(path, f"does not match {model.name}: it holds {len(saved)} layers with "
                               f"weights, the model has {len(layers)} (first extra: "
                               f"{saved[len(layers)][0]})")
    tf_keras.backend.batch_set_value(assignments)
    return len(assignments)
