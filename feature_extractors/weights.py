"""Load a backbone's weights from a local file, or fail naming the file and what mismatched.

The format is recognised from the file itself:

* HDF5 without ``layer_names``: detbench's own ``*.weights.h5`` (Keras v3
  weights format, variables addressed by layer/attribute path);
* HDF5 with ``layer_names`` (legacy format) whose layers with weights are
  ours, by name: detbench's own ``.h5``. tf_keras matches it by layer order
  and, inside a layer, by the order of ``trainable_weights +
  non_trainable_weights``, which changes when batch norm is frozen (gamma,
  beta, moving mean and variance share a shape, so a file written with
  trainable BN would load permuted, silently). Here each layer's variables are
  matched by name instead (sub-layer kind, its creation rank, variable name),
  with every shape checked before anything is assigned;
* any other legacy HDF5: a Keras Applications file, through the extractor's
  map in ``weights_keras.py``;
* a TF checkpoint prefix (``path.index`` exists) with object paths at its
  root: detbench's own (``save_weights``), object-based restore;
* object paths of a network laid out as ours under a prefix (``backbone/``):
  a Model Garden checkpoint (``tf.train.Checkpoint(backbone=...)``);
* TF1 variable names: a TF-slim checkpoint, through ``weights_slim.py``; under
  ``FirstStageFeatureExtractor/`` and ``SecondStageFeatureExtractor/``, a TF OD API
  Faster R-CNN / R-FCN checkpoint: the backbone from the first scope, conv5 (the
  box classifier) from the second.

``file_format`` names the format from the file alone (before any network is
built): the extractor takes the stride placement, input normalization and
batch-norm epsilon the file was trained with from it (``file_conventions``).

Every load ends in one ``WeightsReport`` line (format, loaded, folded, skipped,
left at init, and what the network was built as); every misfit in one ConfigError line naming the first variable that
does not fit, with both names and shapes.
"""

import logging
import os
import re

import numpy as np
import tensorflow as tf
import tf_keras

from detbench.feature_extractors import weights_keras, weights_slim
from detbench.feature_extractors.weight_maps import (
    MAPS,
    OUTSIDE,
    CheckpointSource,
    Entry,
    H5Source,
    NameMap,
    WeightsReport,
    apply_map,
    error as _error,
    first_line as _first_line,
)

log = logging.getLogger("detbench.weights")

_VAR_RANK = {
    "kernel": 0,
    "depthwise_kernel": 0,
    "pointwise_kernel": 1,
    "bias": 2,
    "gamma": 3,
    "beta": 4,
    "moving_mean": 5,
    "moving_variance": 6,
}


def load_backbone_weights(backbone_model, path, extractor=None):
    """Restore ``backbone_model``'s variables from ``path``; return a ``WeightsReport``.

    The format is recognised from the file itself (see ``detect_format``);
    ``extractor`` (the FeatureExtractor that built the backbone) selects the
    name map of a foreign format. Logs the report's one line.
    """
    path = os.fspath(path)
    _, loader = detect_format(backbone_model, path, extractor)
    report = loader(backbone_model, path, extractor)
    if extractor is not None:
        report.settings = extractor.settings_summary()
    log.info(report.summary())
    return report


ODAPI_FASTER_RCNN = "TF OD API Faster R-CNN checkpoint"
GARDEN = "Model Garden checkpoint"
_ODAPI_SCOPES = ("FirstStageFeatureExtractor/", "SecondStageFeatureExtractor/")


def file_format(path):
    """The format of the weights at ``path``, from the file alone: Keras Applications
    .h5 (ResNet's ``conv1_conv`` layer), TF-slim or TF OD API Faster R-CNN checkpoint,
    Model Garden checkpoint (object paths under a prefix), another HDF5 or TF
    checkpoint (detbench's own: ``layer_with_weights-N/`` at the root); None when
    there is no readable file (a pretraining reference, a file not there yet)."""
    path = os.fspath(path)
    try:
        if os.path.isfile(path):
            import h5py

            with h5py.File(path, "r") as f:
                g = f["model_weights"] if "model_weights" in f else f
                names = {
                    n.decode() if isinstance(n, bytes) else n
                    for n in g.attrs.get("layer_names", [])
                }
            return weights_keras.FORMAT if weights_keras.SIGNATURE in names else "HDF5 weights"
        if os.path.isfile(path + ".index"):
            return _checkpoint_format(tf.train.list_variables(path))
    except Exception:  # noqa: BLE001  (unreadable: detect_format says why when loading)
        return None
    return None


def _checkpoint_format(listed):
    if any(k.endswith(_VALUE_SUFFIX) for k, _ in listed):
        own = any(k.startswith(("layer_with_weights-", "layer-")) for k, _ in listed)
        return "TF checkpoint" if own else GARDEN
    if any(k.startswith(_ODAPI_SCOPES) for k, _ in listed):
        return ODAPI_FASTER_RCNN
    return weights_slim.FORMAT


def detect_format(model, path, extractor=None):
    """(format name, loader) for ``path``, from its HDF5 layout or checkpoint variable names."""
    if os.path.isfile(path):
        import h5py

        if not h5py.is_hdf5(path):
            raise _error(path, "not an HDF5 weights file (nor a TF checkpoint prefix)")
        try:
            with h5py.File(path, "r") as f:
                g = f["model_weights"] if "model_weights" in f else f
                legacy = "layer_names" in g.attrs
                names = [
                    n.decode() if isinstance(n, bytes) else n
                    for n in g.attrs.get("layer_names", [])
                ]
                weighted = [n for n in names if len(g[n].attrs.get("weight_names", [])) > 0]
        except Exception as e:  # noqa: BLE001  (a truncated or damaged file)
            raise _error(path, f"unreadable HDF5 file: {_first_line(e)}") from None
        if not legacy:
            return "detbench .weights.h5", _own(_load_keras_v3)
        ours = [layer.name for layer in model.layers if layer.weights]
        if weighted != ours and _name_map(weights_keras.FORMAT, extractor) is not None:
            return weights_keras.FORMAT, _mapped(weights_keras.FORMAT)
        return "detbench .h5", _own(_load_legacy_h5)
    if os.path.isfile(path + ".index"):
        try:
            listed = tf.train.list_variables(path)
        except Exception as e:  # noqa: BLE001
            raise _error(path, f"unreadable checkpoint: {_first_line(e)}") from None
        fmt = _checkpoint_format(listed)
        if fmt in (weights_slim.FORMAT, ODAPI_FASTER_RCNN):
            return fmt, _mapped(weights_slim.FORMAT, listed, fmt)
        if _garden_prefix(model, listed):
            return GARDEN, _load_garden(listed)
        return "detbench TF checkpoint", _own(_load_checkpoint)
    raise _error(path, "no such weights file or TF checkpoint prefix")


def _own(load):
    """A loader of detbench's own formats (``save_weights`` of the backbone itself)."""

    def loader(model, path, extractor):
        return WeightsReport(path, "detbench", model.name, loaded=load(model, path))

    return loader


def _name_map(fmt, extractor):
    name = getattr(extractor, "registered_name", None)
    registry = MAPS.get(fmt)
    return registry.get(name) if registry is not None and name in registry else None


def _mapped(fmt, listed=None, name=None):
    """A loader through the extractor's name map for ``fmt`` (Keras .h5 or TF-slim);
    ``name``: the format the report names (a TF OD API checkpoint read as slim's)."""

    def loader(model, path, extractor):
        name_map = _name_map(fmt, extractor)
        if name_map is None:
            raise _error(
                path, f"a {fmt}; {model.name} has no name map for it (see docs/weights.md)"
            )
        source = H5Source(path) if listed is None else CheckpointSource(path, listed)
        try:
            if listed is not None:
                source = _rebase(source, name_map, name_map.entries(extractor, model, source), path)
            return apply_map(
                name or fmt,
                name_map,
                name_map.entries(extractor, model, source),
                model,
                source,
                path,
            )
        finally:
            source.close()

    return loader


def _rebase(source, name_map, probe, path):
    """Find the network's scope under outer prefixes (a detection checkpoint's
    ``FeatureExtractor/``; a Faster R-CNN's ``FirstStageFeatureExtractor/`` and
    ``SecondStageFeatureExtractor/``, each holding part of it); names outside
    them are skipped."""
    first = probe[0].key
    if first in source:
        return source
    net = "/" + first.split("/", 1)[0] + "/"
    outers = sorted({k[: k.find(net) + 1] for k in source if net in k})
    if not outers:
        return source  # apply_map names what is missing
    return RebasedSource(source, outers)


class RebasedSource:
    """``source`` seen from inside ``outers``; a name under several of them is read
    from the last (a Faster R-CNN checkpoint's ``SecondStageFeatureExtractor/``
    holds conv5 as the box classifier was trained; the first stage's unused copy
    is skipped); names outside them read as skipped heads."""

    def __init__(self, source, outers):
        self._source, self._outers = source, sorted(outers)

    def __iter__(self):
        for k in self._source:
            outer = next((o for o in self._outers if k.startswith(o)), None)
            rel = k[len(outer) :] if outer is not None else None
            yield rel if rel is not None and self._real(rel) == k else f"{OUTSIDE}{k}"

    def __contains__(self, key):
        return any(o + key in self._source for o in self._outers)

    def shape(self, key):
        return self._source.shape(self._real(key))

    def value(self, key):
        return self._source.value(self._real(key))

    def _real(self, key):
        if key.startswith(OUTSIDE):
            return key[len(OUTSIDE) :]
        return next((o + key for o in reversed(self._outers) if o + key in self._source), key)

    def close(self):
        self._source.close()


# -- Model Garden: tf.train.Checkpoint of its backbone (object paths) --------------

_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def _object_paths(model):
    from detbench.train.fine_tune import variable_paths

    return variable_paths(model)


def _garden_prefix(model, listed):
    """The prefix (``backbone``, ``model/backbone``) under which the checkpoint holds a
    network laid out as ours; None for detbench's own (no prefix) or no match."""
    first = next(iter(_object_paths(model)))
    tail = f"/{first}{_VALUE_SUFFIX}"
    prefixes = [k[: -len(tail)] for k, _ in listed if k.endswith(tail)]
    return min(prefixes, key=len) if prefixes else None


def _load_garden(listed):
    def loader(model, path, extractor):
        prefix = _garden_prefix(model, listed)
        entries = [
            Entry(var, f"{prefix}/{p}{_VALUE_SUFFIX}") for p, var in _object_paths(model).items()
        ]
        skip = NameMap(
            None,
            (
                r"^(?!" + re.escape(prefix) + "/)",
                r"\.OPTIMIZER_SLOT",
                r"^_CHECKPOINTABLE_OBJECT_GRAPH$",
                r"/\.ATTRIBUTES/(?!VARIABLE_VALUE)",
            ),
        )
        source = CheckpointSource(path, listed)
        return apply_map(GARDEN, skip, entries, model, source, path)

    return loader


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
            status.expect_partial()  # no per-value warnings at exit: the error says it
        message = _first_line(e)
        if isinstance(e, AssertionError):
            missing = re.search(r"Unresolved object in checkpoint.*|Some Python objects.*", str(e))
            message = (
                f"{len(model.variables)} backbone variables expected, the checkpoint "
                f"holds {len(expected) - 1} values; {missing.group(0)[:200] if missing else message}"
            )
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
            weight_names = [
                w.decode() if isinstance(w, bytes) else w for w in group[n].attrs["weight_names"]
            ]
            if weight_names:
                saved.append((n, weight_names))
        for i, layer in enumerate(layers):
            if i >= len(saved):
                raise _error(
                    path,
                    f"does not match {model.name}: it holds {len(saved)} layers "
                    f"with weights, the model needs {len(layers)} (first missing: "
                    f"{layer.name})",
                )
            file_layer, weight_names = saved[i]
            ours = sorted(layer.weights, key=lambda w: _canonical(w.name))
            theirs = sorted(weight_names, key=_canonical)
            if len(ours) != len(theirs):
                raise _error(
                    path,
                    f"does not match {model.name}: layer #{i} {layer.name} has "
                    f"{len(ours)} variables, the file's {file_layer} {len(theirs)}",
                )
            for var, wname in zip(ours, theirs):
                value = np.asarray(group[file_layer][wname])
                if _canonical(var.name)[1:] != _canonical(wname)[1:] or value.shape != tuple(
                    var.shape
                ):
                    raise _error(
                        path,
                        f"does not match {model.name}: {var.name} "
                        f"{tuple(var.shape)} vs the file's {wname} {value.shape}",
                    )
                assignments.append((var, value))
        if len(saved) != len(layers):
            raise _error(
                path,
                f"does not match {model.name}: it holds {len(saved)} layers with "
                f"weights, the model has {len(layers)} (first extra: "
                f"{saved[len(layers)][0]})",
            )
    tf_keras.backend.batch_set_value(assignments)
    return len(assignments)
