"""Fine-tuning: restore the variables of a local checkpoint that match by name and shape.

A variable's *name* is its object path, the name TF2 checkpoints store it
under (``model/feature_extractor/conv1/kernel``), or, for a name-based (TF1)
checkpoint, its ``variable.name`` without ``:0``. The checkpoint may hold the
model (or backbone) under any prefix (``model/``, ``model/backbone/``, none
for ``save_weights``): for each model (``detection``) or backbone network
(``classification``) the prefix that matches the most names is used, and a
variable is restored only when ``prefix/name`` exists with the same shape.
Optimizer slots and counters are never restored.
"""

import collections
import dataclasses
import logging

import tensorflow as tf

from detbench.errors import ConfigError, DetbenchError

log = logging.getLogger("detbench.train")

_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


class FineTuneError(DetbenchError):
    """The fine-tune checkpoint is missing, unreadable or matches nothing."""


@dataclasses.dataclass
class FineTuneReport:
    checkpoint: str
    checkpoint_type: str
    restored: list  # model variable names restored
    not_restored: list  # (name, reason) for model variables left as initialised
    num_checkpoint_variables: int

    def summary(self):
        total = len(self.restored) + len(self.not_restored)
        return (
            f"fine-tune ({self.checkpoint_type}) from {self.checkpoint}: restored "
            f"{len(self.restored)} of {total} variables "
            f"({self.num_checkpoint_variables} in the checkpoint)"
        )


def variable_paths(root):
    """``{object path: variable}`` for every variable reachable from ``root`` (breadth first,
    shortest path, as ``tf.train.Checkpoint`` names them)."""
    view = tf.train.TrackableView(root)
    paths, seen = {}, {id(root)}
    queue = collections.deque([(root, "")])
    while queue:
        obj, path = queue.popleft()
        for name, child in view.children(obj).items():
            if id(child) in seen:
                continue
            seen.add(id(child))
            child_path = f"{path}/{name}" if path else name
            if isinstance(child, tf.Variable):
                paths[child_path] = child
            else:
                queue.append((child, child_path))
    return paths


class CheckpointMismatch(DetbenchError):
    """A checkpoint holds a variable of the model with another shape (the config changed)."""


def check_shapes_match(root, checkpoint_path, where="checkpoint"):
    """Raise CheckpointMismatch naming the first variable reachable from ``root`` (e.g.
    ``tf.train.Checkpoint(model=...)``, built) that the object-based checkpoint holds
    with another shape, and both shapes; restoring it would fail with a bare ValueError."""
    entries, object_based = _checkpoint_entries(checkpoint_path, field=where)
    if not object_based:
        return
    for path, variable in variable_paths(root).items():
        entry = entries.get(path)
        if entry is not None and tuple(entry[1]) != tuple(variable.shape):
            raise CheckpointMismatch(
                f"{where} {checkpoint_path}: does not match this config's model: {path} has "
                f"shape {list(entry[1])} in the checkpoint and {list(variable.shape)} in the "
                "model (was the config changed after the checkpoint was written?)"
            )


def _checkpoint_entries(checkpoint_path, field="fine_tune_checkpoint"):
    """``{name: shape}`` of the checkpoint's restorable (non-optimizer) variables."""
    try:
        listed = tf.train.list_variables(checkpoint_path)
    except (tf.errors.OpError, ValueError) as e:
        raise FineTuneError(
            f"{field} {checkpoint_path!r}: cannot be read ({str(e).splitlines()[0]})"
        ) from None
    object_based = any(k.endswith(_VALUE_SUFFIX) for k, _ in listed)
    entries = {}
    for key, shape in listed:
        if object_based:
            if not key.endswith(_VALUE_SUFFIX) or ".OPTIMIZER_SLOT" in key:
                continue
            name = key[: -len(_VALUE_SUFFIX)]
            if name.split("/")[0] in ("optimizer", "save_counter", "step"):
                continue
        else:
            name = key
        entries[name] = (key, tuple(shape))
    return entries, object_based


def _best_prefix(names, entries):
    """The checkpoint prefix under which the most of ``names`` occur."""
    counts = collections.Counter()
    for entry in entries:
        parts = entry.split("/")
        for i in range(len(parts)):
            if "/".join(parts[i:]) in names:
                counts["/".join(parts[:i])] += 1
    if not counts:
        return None
    return max(counts.items(), key=lambda kv: (kv[1], -len(kv[0])))[0]


def resolve_checkpoint(path, field="train_config.fine_tune_checkpoint"):
    """A checkpoint prefix, or a folder holding checkpoints (its latest)."""
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise FineTuneError(f"{field}: no checkpoint in folder {path!r}")
        return latest
    if not tf.io.gfile.exists(path + ".index") and not tf.io.gfile.exists(path):
        raise FineTuneError(f"{field}: checkpoint {path!r} not found")
    return path


def restore_matching_variables(model, checkpoint_path, checkpoint_type="detection"):
    """Assign the checkpoint's values to the model variables that match by name and shape.

    ``checkpoint_type``: ``detection`` (the whole model) or ``classification``
    (only ``model.backbone_models()``). Variables must exist (build the model
    first). Returns a ``FineTuneReport``; logs the counts and what was not restored.
    """
    if checkpoint_type == "detection":
        roots = [model]
    elif checkpoint_type == "classification":
        roots = list(model.backbone_models())
        if not roots:
            raise ConfigError(
                "train_config.fine_tune_checkpoint_type: 'classification' needs a "
                "model whose backbone_models() is not empty"
            )
    else:
        raise ConfigError(
            "train_config.fine_tune_checkpoint_type must be 'detection' or "
            f"'classification', got {checkpoint_type!r}"
        )
    checkpoint_path = resolve_checkpoint(checkpoint_path)
    entries, object_based = _checkpoint_entries(checkpoint_path)
    reader = tf.train.load_checkpoint(checkpoint_path)
    restored, not_restored, done = [], [], set()
    for root in roots:
        if object_based:
            names = variable_paths(root)
        else:
            names = {v.name.split(":")[0]: v for v in root.variables}
        prefix = _best_prefix(names, entries)
        for name, var in names.items():
            if id(var) in done:
                continue
            done.add(id(var))
            key = name if not prefix else f"{prefix}/{name}"
            if prefix is None or key not in entries:
                not_restored.append((name, "not in checkpoint"))
                continue
            ckpt_key, shape = entries[key]
            if tuple(var.shape) != shape:
                not_restored.append((name, f"shape {list(var.shape)} != checkpoint {list(shape)}"))
                continue
            var.assign(tf.cast(reader.get_tensor(ckpt_key), var.dtype))
            restored.append(name)
    report = FineTuneReport(checkpoint_path, checkpoint_type, restored, not_restored, len(entries))
    if not restored:
        raise FineTuneError(
            f"train_config.fine_tune_checkpoint {checkpoint_path!r}: no variable "
            f"of the model matches by name and shape ({len(entries)} in the "
            f"checkpoint, {len(not_restored)} in the model)"
        )
    log.info(report.summary())
    for name, reason in not_restored:
        log.info("fine-tune: not restored %s (%s)", name, reason)
    return report
