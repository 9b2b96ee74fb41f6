"""One exception family for everything ballistix raises on bad input."""

from __future__ import annotations


class BallistixError(Exception):
    """Base class of every error ballistix raises on purpose."""


class FileFormatError(BallistixError, ValueError):
    """A file is malformed, hostile, truncated or unsupported; ``path`` and ``problem`` say which and what."""

    def __init__(self, path, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{problem}")


class ScanFormatError(FileFormatError):
    """A scan file is malformed, hostile, truncated or unsupported.

    The message names the file and the problem.
    """


class ChecksumError(ScanFormatError):
    """A checksum stored in a file does not match its content."""


class IndexFormatError(FileFormatError):
    """A saved index file is corrupt, truncated, tampered with or of another format.

    The message names the file and the problem.
    """


class DescriptorMismatchError(BallistixError, ValueError):
    """Vectors or an index were made with other descriptor parameters than the ones asked for."""


class ParameterError(BallistixError, ValueError):
    """A function was called with an argument outside what it accepts."""


class SegmentationError(BallistixError, ValueError):
    """The breech-face region found on a scan failed the plausibility checks (no primer found, primer
    clipped by the field's border, firing pin far off the primer centre, too little of the region
    measured, ...). The message names the scan's source and the reasons."""


class SegmentationWarning(UserWarning):
    """The breech-face region found on a scan is doubtful: usable, but a comparison resting on it
    must say so (the message gives the reasons)."""


class ScanFormatWarning(UserWarning):
    """A recoverable problem in a scan file (for example a checksum mismatch when ``strict=False``, or
    lengths in micrometres or millimetres that ``units="auto"`` rescaled to metres)."""


class ResolutionWarning(UserWarning):
    """A scan was sampled far more coarsely than the grid it is compared on: resampling does not
    restore the detail it never held, so few congruent cells say little about the gun (the
    message names the scan and both spacings)."""


class StoreWarning(UserWarning):
    """A case store found and worked around a problem: a stale or foreign index rebuilt from the
    database, a candidate skipped because its cached scan is damaged, ... (the message says which
    file and what to run, usually ``ballistix check --store DIR --repair``)."""


class StoreError(BallistixError):
    """The store folder is not a ballistix store, is newer than this library, or is damaged."""


class DamagedScanError(StoreError):
    """An exhibit's cached processed scan is missing, unreadable, or not the file recorded at ingest.

    ``exhibit_id``, ``path`` and ``problem`` say which and what; ``state`` is ``"missing"`` when
    `CaseStore.check` dropped it earlier, else ``"damaged"``.
    """

    def __init__(self, path, exhibit_id: str, problem: str, state: str = "damaged"):
        self.path, self.exhibit_id, self.problem, self.state = str(path), exhibit_id, problem, state
        super().__init__(f"{path}: the cached scan of exhibit {exhibit_id!r} {problem}")
