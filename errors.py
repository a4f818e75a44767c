"""Errors a user can cause: each carries one line naming the file, field or item at fault.

Command-line entry points catch ``DetbenchError`` and print ``str(error)`` on a
single line with a non-zero exit, instead of a traceback.
"""

import sys


class DetbenchError(Exception):
    """Base of every error caused by the user's input, not by a bug."""


class ConfigError(DetbenchError, ValueError):
    """A pipeline or sweep file (or an override) is malformed or inconsistent."""


class RegistryError(DetbenchError, KeyError):
    """An unknown name was looked up in a registry."""

    def __str__(self):  # KeyError would repr() the message
        return self.args[0] if self.args else ""


def run_cli(main, argv=None):
    """Run ``main(argv)``; a DetbenchError becomes one line on stderr and exit 2."""
    try:
        code = main(argv)
    except DetbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if code is None else code
