"""Errors a user can act on.

Every user mistake (bad config key, unknown plugin name, missing teacher, ...) raises a
``KdcoreError`` whose message is one line naming what was wrong and where. The CLI prints that
line and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KdcoreError(Exception):
    """A mistake in the user's input: printed as one line, never as a traceback."""


class ConfigError(KdcoreError):
    """A configuration key or value is invalid."""


class UnknownNameError(KdcoreError):
    """A mode, strategy, dataset or model name that no plugin registered."""


class DuplicateNameError(KdcoreError):
    """Two plugins registered the same name."""


class IncompatibleError(KdcoreError):
    """A mode and a distillation strategy that cannot be combined."""


class TeacherError(KdcoreError):
    """The teacher for knowledge distillation is missing or does not fit the student."""


class CheckpointError(KdcoreError):
    """A checkpoint file is unreadable, unsafe, or of the wrong kind."""


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to a misspelt one, or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_name_message(kind: str, name: str, known: Iterable[str]) -> str:
    """``unknown mode 'curiculum'; known: a, b; did you mean 'curriculum'?``"""
    known = sorted(known)
    message = f"unknown {kind} {name!r}; known: {', '.join(known) or '(none)'}"
    suggestion = closest(name, known)
    if suggestion:
        message += f"; did you mean {suggestion!r}?"
    return message
