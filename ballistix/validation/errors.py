"""The exceptions of the validation kit."""

from __future__ import annotations

from ..errors import BallistixError, FileFormatError


class ValidationError(BallistixError, ValueError):
    """The inputs of a validation cannot give a valid result; the message says which and why."""


class LabelsError(ValidationError, FileFormatError):
    """The labels (CSV or mapping) are missing, malformed, or do not cover a scan; ``path`` names
    the file concerned (the CSV or the scan) and ``problem`` what is wrong."""

    def __init__(self, path, problem: str):
        FileFormatError.__init__(self, path, problem)


class InsufficientDataError(ValidationError):
    """Too few firearms, scans or pairs to measure error rates or to cross-validate by gun."""
