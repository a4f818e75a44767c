"""Name maps from other people's weight files into detbench's backbones.

A *source* is a flat ``{name: array}`` view of a file (a legacy Keras HDF5
file as ``layer/variable``, a TF checkpoint by its variable names). A *name
map* (one per extractor and format, registered in ``MAPS[format]`` by the
format's module: ``weights_keras.py``, ``weights_slim.py``) turns our backbone
into ``Entry``s: which of our variables takes which of the file's values,
possibly with a bias folded into a batch norm's moving mean or a transform.
``apply_map`` checks every shape before assigning anything and accounts for
every value of the file: loaded, folded, skipped as a classification head
(the map's ``skip`` patterns), or refused as belonging to another network.
"""

import dataclasses
import logging
import re

import numpy as np
import tf_keras

from detbench.errors import ConfigError
from detbench.registry import Registry

log = logging.getLogger("detbench.weights")

# format name -> Registry(extractor name -> NameMap)
MAPS = {}
# How a source names what lies outside the network's scope (skipped, counted).
OUTSIDE = "<outside>/"


def format_registry(fmt):
    return MAPS.setdefault(fmt, Registry(f"{fmt} name map"))


@dataclasses.dataclass
class NameMap:
    """``entries(extractor, backbone, source) -> [Entry]``; ``skip``: regexes of the file's
    names that ours lacks on purpose (heads, auxiliary logits, counters)."""

    entries: object
    skip: tuple = ()
    note: str = ""

    def skips(self, name):
        return any(re.search(p, name) for p in self.skip)


@dataclasses.dataclass
class Entry:
    var: object  # our tf.Variable
    key: str  # the file's name of its value
    fold: str = None  # a conv bias folded exactly into this moving mean: mean - bias
    transform: object = None  # array -> array (exact re-layout, e.g. input channel order)


@dataclasses.dataclass
class WeightsReport:
    path: str
    format: str
    model: str
    loaded: int
    folded: int = 0
    skipped: int = 0
    left_at_init: int = 0
    skipped_examples: tuple = ()
    settings: str = ""  # what the network was built as (the extractor's settings_summary)

    def summary(self):
        skipped = f"skipped {self.skipped} of the file's"
        if self.skipped_examples:
            skipped += f" ({', '.join(self.skipped_examples)}{', ...' if self.skipped > 3 else ''})"
        return (
            f"feature_extractor.weights_path: {self.path} ({self.format}) into {self.model}: "
            f"loaded {self.loaded} variables, folded {self.folded} conv biases into batch "
            f"norm, {skipped}, left {self.left_at_init} of ours at their initial values"
            + (f"; {self.settings}" if self.settings else "")
        )


def short(name):
    """'conv1/kernel:0' -> 'conv1/kernel' (our names as the report prints them)."""
    return name.split(":")[0]


def error(path, what):
    return ConfigError(f"feature_extractor.weights_path: {path}: {what}")


def first_line(e):
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class H5Source:
    """A legacy Keras HDF5 weights file: ``layer/variable`` (``conv1_conv/kernel``) -> array,
    and its layers with weights in file order."""

    def __init__(self, path):
        import h5py

        self.path = path
        self._file = h5py.File(path, "r")
        group = self._file["model_weights"] if "model_weights" in self._file else self._file
        self._keys = {}
        self.layers = []  # [(layer name, [key, ...])]
        for layer in group.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            keys = []
            for w in group[layer].attrs["weight_names"]:
                w = w.decode() if isinstance(w, bytes) else w
                key = f"{layer}/{short(w).split('/')[-1]}"
                self._keys[key] = (layer, w)
                keys.append(key)
            if keys:
                self.layers.append((layer, keys))
        self._group = group

    def __iter__(self):
        return iter(self._keys)

    def shape(self, key):
        layer, w = self._keys[key]
        return tuple(self._group[layer][w].shape)

    def value(self, key):
        layer, w = self._keys[key]
        try:
            return np.asarray(self._group[layer][w])
        except Exception as e:  # noqa: BLE001  (a truncated or damaged file)
            raise error(self.path, f"cannot read {key}: {first_line(e)}") from None

    def __contains__(self, key):
        return key in self._keys

    def close(self):
        self._file.close()


class CheckpointSource:
    """A TF checkpoint read by variable name (TF1 name-based, or object paths)."""

    def __init__(self, path, listed):
        import tensorflow as tf

        self.path = path
        self._shapes = {k: tuple(s) for k, s in listed}
        self._reader = tf.train.load_checkpoint(path)

    def __iter__(self):
        return iter(self._shapes)

    def shape(self, key):
        return self._shapes[key]

    def value(self, key):
        try:
            return self._reader.get_tensor(key)
        except Exception as e:  # noqa: BLE001  (a truncated or damaged file)
            raise error(self.path, f"cannot read {key}: {first_line(e)}") from None

    def __contains__(self, key):
        return key in self._shapes

    def close(self):
        pass


def _channel_hint(ours, theirs):
    if len(ours) == len(theirs) and ours[:-2] == theirs[:-2] and ours != theirs:
        return " (another depth multiplier or min depth than the file's? it is not cropped)"
    return ""


def apply_map(fmt, name_map, entries, backbone, source, path):
    """Check then assign ``entries``; return a WeightsReport. ConfigError on the first misfit."""
    assignments, used = [], set()
    for e in entries:
        theirs = e.key if e.key in source else None
        if theirs is None:
            raise error(
                path,
                f"does not match {backbone.name} as a {fmt} file: it lacks "
                f"{e.key} for our {short(e.var.name)} {tuple(e.var.shape)}",
            )
        shape = source.shape(e.key)
        value_shape = shape if e.transform is None else e.transform(np.zeros(shape)).shape
        if tuple(value_shape) != tuple(e.var.shape):
            raise error(
                path,
                f"does not match {backbone.name}: our {short(e.var.name)} "
                f"{tuple(e.var.shape)} vs the file's {e.key} {tuple(shape)}"
                + _channel_hint(tuple(e.var.shape), tuple(shape)),
            )
        value = source.value(e.key)
        if e.transform is not None:
            value = e.transform(value)
        if e.fold is not None:
            if e.fold not in source or source.shape(e.fold) != shape:
                raise error(
                    path,
                    f"does not match {backbone.name}: the bias {e.fold} to fold "
                    f"into our {short(e.var.name)} {tuple(e.var.shape)} is missing "
                    "or of another shape",
                )
            value = value - source.value(e.fold)
            used.add(e.fold)
        used.add(e.key)
        assignments.append((e.var, value))
    skipped = []
    for key in source:
        if key in used:
            continue
        if not key.startswith(OUTSIDE) and not name_map.skips(key):
            raise error(
                path,
                f"does not match {backbone.name}: the file's {key} "
                f"{tuple(source.shape(key))} has no place in it (a file of another "
                "network?)",
            )
        skipped.append(key)
    ours = {id(v) for v in backbone.variables}
    assigned = {id(v) for v, _ in assignments}
    tf_keras.backend.batch_set_value(assignments)
    report = WeightsReport(
        path,
        fmt,
        backbone.name,
        loaded=len(assignments),
        folded=sum(e.fold is not None for e in entries),
        skipped=len(skipped),
        left_at_init=len(ours - assigned),
        skipped_examples=tuple(sorted(k.replace(OUTSIDE, "") for k in skipped)[:3]),
    )
    return report


# -- helpers the maps share ----------------------------------------------------


def batch_norm_entries(
    norm, prefix, names=("gamma", "beta", "moving_mean", "moving_variance"), fold=None
):
    """Entries for a BatchNormalization layer from ``prefix + name`` (slim: ``.../BatchNorm/``)."""
    out = []
    for attr in names:
        var = getattr(norm, attr, None)
        if var is None:
            continue
        out.append(Entry(var, f"{prefix}{attr}", fold=fold if attr == "moving_mean" else None))
    return out
