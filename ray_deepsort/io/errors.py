"""The one error type of unreadable inputs."""

from __future__ import annotations


class InputError(ValueError):
    """An input that cannot be read (missing, unreadable, malformed); names the file."""
