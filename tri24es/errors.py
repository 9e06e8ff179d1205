"""The exception tree of tri24es. The CLI turns any of these into one line on stderr."""

from __future__ import annotations


class Tri24esError(Exception):
    """tri24es could not do what was asked."""


class UsageError(Tri24esError):
    """The user asked for something malformed (exit code 2)."""


class ConfigError(UsageError):
    """A setting or environment variable has a bad value."""


class AlreadyRunning(Tri24esError):
    """Another live process holds what this one would run as (a worker id, the watchdog)."""
