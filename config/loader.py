"""Load text-format protos with one-line errors: file, line, column, what is wrong."""

import difflib
import re

from google.protobuf import text_format

from detbench.errors import ConfigError
from detbench.paths import MAX_TEXT_BYTES, check_input_file, read_bounded

_NO_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "(\w+)"')


def field_names(descriptor):
    return [f.name for f in descriptor.fields]


def nearest_first(name, candidates):
    """``candidates`` ordered by similarity to ``name`` (all of them)."""
    return difflib.get_close_matches(name, candidates, n=len(candidates), cutoff=0.0) or list(
        candidates
    )


def _find_descriptor(root_descriptor, full_name):
    """The message descriptor named ``full_name`` reachable from ``root_descriptor``."""
    seen, stack = set(), [root_descriptor]
    while stack:
        d = stack.pop()
        if d.full_name == full_name:
            return d
        if d.full_name in seen:
            continue
        seen.add(d.full_name)
        stack.extend(f.message_type for f in d.fields if f.message_type is not None)
    return None


def parse_text(text, message, source="<string>"):
    """Parse ``text`` into ``message``; raise ConfigError 'source:line:col: ...'."""
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        where = f"{source}:{e.GetLine()}:{e.GetColumn()}" if e.GetLine() else source
        msg = str(e)
        msg = re.sub(r"^\d+:\d+ : ", "", msg)
        m = _NO_FIELD.search(msg)
        if m:
            desc = _find_descriptor(message.DESCRIPTOR, m.group(1))
            if desc is not None:
                names = nearest_first(m.group(2), field_names(desc))
                msg = (
                    f'unknown field "{m.group(2)}" in {desc.name}; fields there: {", ".join(names)}'
                )
        raise ConfigError(f"{where}: {msg}") from None
    return message


def read_text(path):
    """The file's text; ConfigError (one line) when it cannot be read or is not text."""
    check_input_file(path, "", MAX_TEXT_BYTES, folder_hint="a text-format .pbtxt file")
    try:
        with open(path, encoding="utf-8") as f:
            return read_bounded(f, MAX_TEXT_BYTES, "", path)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: not a text file (byte {e.object[e.start]:#04x} at offset "
            f"{e.start} is not UTF-8); give a text-format .pbtxt"
        ) from None


def load_text_proto(path, message):
    return parse_text(read_text(path), message, source=str(path))
