"""Checks of the paths a command will write or read, made before its work starts."""

import os
import stat

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


# Bounds on what a user's file may hold before it is read: beyond them it is not
# the file the option asks for (the COCO 2017 train annotations are 448 MiB).
MAX_TEXT_BYTES = 64 * 2**20  # a pipeline, sweep or label map
MAX_ANNOTATIONS_BYTES = 2 * 2**30  # a COCO / detection JSON
MAX_IMAGE_BYTES = 1 * 2**30  # one image file
MAX_TFRECORD_BYTES = 2**40  # one TFRecord shard (streamed, never read whole)
_SPECIAL = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_input_file(path, what, max_bytes, error=ConfigError, folder_hint="a file", name=None):
    """``path``, about to be read, is a regular file of at most ``max_bytes``: a FIFO
    would block the read forever and a device (/dev/zero) never end it. One line
    naming ``what`` and the path; a path that does not exist is left to the reader."""
    name = name or f"{what} {path}".strip()
    try:
        st = os.stat(path)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{name}: is a folder; give {folder_hint}")
    if not stat.S_ISREG(st.st_mode):
        kind = next((label for test, label in _SPECIAL if test(st.st_mode)), "a special file")
        raise error(f"{name}: is {kind}, not a regular file")
    if st.st_size > max_bytes:
        raise error(
            f"{name}: {st.st_size / 2**20:.0f} MiB is more than the "
            f"{max_bytes / 2**20:.0f} MiB such a file may hold"
        )


def read_bounded(f, max_bytes, what, path, error=ConfigError):
    """``f.read()`` of at most ``max_bytes`` (a file that grew past its check fails)."""
    data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        name = f"{what} {path}".strip()
        raise error(f"{name}: more than the {max_bytes / 2**20:.0f} MiB such a file may hold")
    return data
