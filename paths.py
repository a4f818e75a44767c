"""Checks of the paths a command will write, made before its work starts."""

import os

from detbench.errors import ConfigError


def check_output_folder(path, flag):
    """``path`` is a folder or can become one: not a file, nor under a file."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return
        probe = parent
    if not os.path.isdir(probe):
        what = "is a file" if probe == os.path.abspath(path) else f"is under a file ({probe})"
        raise ConfigError(f"{flag} {path}: {what}, not a folder")
    if not os.access(probe, os.W_OK):
        raise ConfigError(f"{flag} {path}: {probe} is not writable")


def check_output_file(path, flag, extensions):
    """``path`` can be written: its folder exists and is writable, it is not a folder,
    and its extension is one of ``extensions`` (lower case, with the dot)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"{flag} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{flag} {path}: folder {folder} is not writable")
    if os.path.isdir(path):
        raise ConfigError(f"{flag} {path}: is a folder; give a file name")
    ext = os.path.splitext(path)[1].lower()
    if ext not in extensions:
        raise ConfigError(
            f"{flag} {path}: unknown extension {ext or '(none)'!r}; "
            f"use one of {', '.join(sorted(extensions))}"
        )
