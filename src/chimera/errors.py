"""Errors users read, and the stable reason codes behind quarantine reports and alerts.

The hierarchy follows polars' exceptions: one base class, one subclass per kind of problem.
Messages are built in a variable and say what was expected, what was found, where, and what
to do next.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RejectReason(StrEnum):
    """Machine-readable reason a file was quarantined (dashboards group on these)."""

    UNRECOGNISED_FORMAT = "unrecognised_format"
    UNREADABLE = "unreadable"
    SCHEMA_VIOLATION = "schema_violation"
    UNKNOWN_SAMPLE = "unknown_sample"
    MISSING_REFERENCE = "missing_reference"
    NOT_A_CHIMERISM_ASSAY = "not_a_chimerism_assay"
    EMPTY_FILE = "empty_file"
    WAITED_TOO_LONG = "waited_too_long"
    CONFLICT = "conflict"
    TRUNCATED = "truncated"
    TOO_LARGE = "too_large"
    DIRECT_IDENTIFIER = "direct_identifier"
    NOT_A_REGULAR_FILE = "not_a_regular_file"
    IMPOSSIBLE_DATE = "impossible_date"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, in the lab's words.

    ``row`` is 1-based as a spreadsheet shows it (header = row 1) when known.
    """

    rule: str
    message: str
    row: int | None = None
    column: str | None = None
    value: str | None = None
    fix: str | None = None

    def render(self) -> str:
        """Return the problem as one readable line."""
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        if self.value is not None:
            where.append(f"value {self.value!r}")
        head = f"[{self.rule}] " + (", ".join(where) + ": " if where else "")
        tail = f" Fix: {self.fix}" if self.fix else ""
        return f"{head}{self.message}{tail}"


class ChimeraError(Exception):
    """Base class of every error Chimera raises on purpose."""

    reason: RejectReason = RejectReason.UNREADABLE

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems: list[Problem] = problems or []


class UnrecognisedExportError(ChimeraError):
    """The file's content matches no supported export layout."""

    reason = RejectReason.UNRECOGNISED_FORMAT


class UnreadableFileError(ChimeraError):
    """The file matches a known layout but cannot be read (truncated, corrupt, wrong encoding)."""

    reason = RejectReason.UNREADABLE


class EmptyFileError(UnreadableFileError):
    """The file holds no bytes, or only blanks and line ends."""

    reason = RejectReason.EMPTY_FILE


class BinaryContentError(UnrecognisedExportError, UnreadableFileError):
    """Binary bytes (NULs, control characters) that are neither a workbook nor text."""

    reason = RejectReason.UNRECOGNISED_FORMAT


class WrongFormatError(UnrecognisedExportError, UnreadableFileError):
    """A parser was handed an export that detection recognised as another format."""

    reason = RejectReason.UNRECOGNISED_FORMAT


class TruncatedExportError(UnreadableFileError):
    """The export ends early: mid-row, mid-workbook, or short of the rows its layout promises.

    The message always says "truncated" and what to do (copy or export the file again).
    """

    reason = RejectReason.TRUNCATED


class FileTooLargeError(ChimeraError):
    """The file is larger than ``InboxSettings.max_file_bytes``; it was not read."""

    reason = RejectReason.TOO_LARGE


class DirectIdentifierError(ChimeraError):
    """A registry file carries a column of direct identifiers (name, date of birth, MRN, ...)."""

    reason = RejectReason.DIRECT_IDENTIFIER


class ValidationFailedError(ChimeraError):
    """Parsed rows break the input's data contract; ``problems`` lists each broken rule."""

    reason = RejectReason.SCHEMA_VIOLATION


class NotChimerismAssayError(ChimeraError):
    """A readable instrument export that holds no chimerism assay (e.g. no reference gene)."""

    reason = RejectReason.NOT_A_CHIMERISM_ASSAY


class MissingMarkerError(ChimeraError):
    """A required marker, target or column is absent."""

    reason = RejectReason.SCHEMA_VIOLATION


class AmbiguousSampleIdError(ChimeraError):
    """One sample id maps to conflicting manifest rows."""

    reason = RejectReason.CONFLICT


class NotARegularFileError(ChimeraError):
    """A symbolic link, named pipe or device in the inbox: never followed, never read."""

    reason = RejectReason.NOT_A_REGULAR_FILE


class ImpossibleDateError(ChimeraError):
    """A registry date contradicts another or the ingest clock (sample before baseline ...)."""

    reason = RejectReason.IMPOSSIBLE_DATE
