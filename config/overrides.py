"""``a.b.c=value`` overrides on any proto field (``--set`` on the command line).

Paths walk message fields; ``name[i]`` indexes a repeated message field (an
index equal to the length appends). Values are parsed by the field's type:
numbers, ``true``/``false``, enum names, strings; a repeated scalar takes a
comma-separated list (replacing the old values); a message field takes a
text-format body in braces (``{fixed_shape {height: 128 width: 128}}``),
which replaces the message.
"""

import re

from google.protobuf import descriptor as _descriptor, text_format

from detbench.config.loader import field_names, nearest_first
from detbench.errors import ConfigError

FD = _descriptor.FieldDescriptor
_PART = re.compile(r"^(\w+)(?:\[(\d+)\])?$")
_TYPE_NAMES = {getattr(FD, n): n[5:].lower() for n in dir(FD) if n.startswith("TYPE_")}
_INT_TYPES = {FD.CPPTYPE_INT32, FD.CPPTYPE_INT64, FD.CPPTYPE_UINT32, FD.CPPTYPE_UINT64}


def _is_repeated(field):
    return field.is_repeated


def _scalar(field, text, where):
    text = text.strip()
    t = field.cpp_type
    try:
        if t in _INT_TYPES:
            return int(text)
        if t in (FD.CPPTYPE_FLOAT, FD.CPPTYPE_DOUBLE):
            return float(text)
        if t == FD.CPPTYPE_BOOL:
            low = text.lower()
            if low in ("true", "1"):
                return True
            if low in ("false", "0"):
                return False
            raise ValueError
        if t == FD.CPPTYPE_ENUM:
            names = [v.name for v in field.enum_type.values]
            if text in names:
                return field.enum_type.values_by_name[text].number
            raise ConfigError(f"{where}: {text!r} is not one of {', '.join(names)}")
        if t == FD.CPPTYPE_STRING:
            return text.strip('"') if len(text) >= 2 and text[0] == text[-1] == '"' else text
    except ConfigError:
        raise
    except ValueError:
        kind = {
            FD.CPPTYPE_BOOL: "true or false",
            FD.CPPTYPE_FLOAT: "a number",
            FD.CPPTYPE_DOUBLE: "a number",
        }.get(t, "an integer")
        raise ConfigError(f"{where}: {text!r} is not {kind}") from None
    raise ConfigError(f"{where}: cannot set a field of this type")


def _field(message, name, where):
    field = message.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        names = nearest_first(name, field_names(message.DESCRIPTOR))
        raise ConfigError(
            f"{where}: no field {name!r} in {message.DESCRIPTOR.name}; "
            f"fields there: {', '.join(names)}"
        )
    return field


def apply_override(message, override):
    """Apply one ``path=value`` string to ``message`` in place."""
    where = f"override {override!r}"
    if "=" not in override:
        raise ConfigError(f"{where}: expected path=value")
    path, value = override.split("=", 1)
    parts = path.strip().split(".")
    target = message
    for i, part in enumerate(parts):
        m = _PART.match(part)
        if not m:
            raise ConfigError(f"{where}: bad path element {part!r}")
        name, index = m.group(1), m.group(2)
        field = _field(target, name, where)
        last = i == len(parts) - 1
        if field.message_type is not None:
            if _is_repeated(field):
                container = getattr(target, name)
                idx = int(index) if index is not None else None
                if idx is None or idx > len(container):
                    raise ConfigError(
                        f"{where}: {name} is a repeated message; "
                        f"index it as {name}[0..{len(container)}]"
                    )
                sub = container.add() if idx == len(container) else container[idx]
            else:
                sub = getattr(target, name)
            if last:
                body = value.strip()
                if not (body.startswith("{") and body.endswith("}")):
                    raise ConfigError(
                        f"{where}: {name} is a message; give a text-format "
                        "body in braces, e.g. {a: 1}"
                    )
                sub.Clear()
                try:
                    text_format.Parse(body[1:-1], sub)
                except text_format.ParseError as e:
                    raise ConfigError(f"{where}: {e}") from None
                sub.SetInParent()
                return message
            sub.SetInParent()
            target = sub
            continue
        if not last:
            raise ConfigError(f"{where}: {name} is not a message, cannot descend into it")
        try:
            if _is_repeated(field):
                container = getattr(target, name)
                del container[:]
                items = [v for v in value.strip().strip("[]").split(",") if v.strip()]
                container.extend(_scalar(field, v, where) for v in items)
            else:
                setattr(target, name, _scalar(field, value, where))
        except (ValueError, TypeError) as e:  # e.g. an int beyond the field's type
            if isinstance(e, ConfigError):
                raise
            kind = _TYPE_NAMES.get(field.type, "value")
            raise ConfigError(
                f"{where}: {value.strip()!r} does not fit {name} ({kind}: {str(e).splitlines()[0]})"
            ) from None
    return message


def apply_overrides(message, overrides):
    for o in overrides:
        apply_override(message, o)
    return message


def get_field(message, path):
    """Value at a dotted path (no indexing), or None where a message is unset."""
    target = message
    for part in path.split("."):
        field = _field(target, part, f"path {path!r}")
        if field.message_type is not None and not _is_repeated(field) and not target.HasField(part):
            return None
        target = getattr(target, part)
    return target
