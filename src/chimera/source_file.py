"""An input file read once: its bytes, SHA-256 and detected format (:class:`SourceFile`).

The inbox, ``chimera ingest FILES`` and the flow read each file once (:func:`read_source`):
its size is checked before reading, a link is refused where asked, and detection runs on the
bytes (never the name). Everything after (:mod:`chimera.ingest`) works from the
:class:`SourceFile`.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from chimera.detect import DecodedExport, Detection, detect
from chimera.errors import ChimeraError, FileTooLargeError, UnreadableFileError
from chimera.filing import display_name, printable
from chimera.textio import check_size
from chimera.warehouse import sha256_of

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceFile:
    """One input file as read once: its bytes, their SHA-256 and the detected format."""

    path: Path
    data: bytes
    sha256: str
    detection: Detection | None
    """None when the content matches no known format."""
    export: DecodedExport | ChimeraError | None = None
    """The file as :func:`chimera.detect.detect` read it, or why it was refused (a link, too
    large, undecodable; None: not read yet; :func:`read_source` always fills it)."""
    unread_bytes: int = 0
    """Size of a file refused unread (``data`` is then empty)."""

    @property
    def name(self) -> str:
        """The file's name as the ledger shows it (never used to decide its format)."""
        return display_name(self.path.name)

    @property
    def size_bytes(self) -> int:
        """The file's size in bytes."""
        return len(self.data) or self.unread_bytes


def refused_source(path: Path, refusal: ChimeraError, *, size_bytes: int) -> SourceFile:
    """A file refused without reading its content.

    Its ``sha256`` is that of its path, size and modification time (the content is unknown).
    """
    info = path.lstat()
    identity = f"unread:{path.name}:{size_bytes}:{info.st_mtime_ns}".encode(
        "utf-8", "surrogateescape"
    )
    return SourceFile(path, b"", sha256_of(identity), None, refusal, size_bytes)


def _read_no_follow(path: Path) -> bytes:
    """Read a regular file without following a link to it (``OSError`` otherwise)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path.name}: not a regular file")  # noqa: EM102
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_source(
    path: Path, *, max_bytes: int | None = None, follow_links: bool = True
) -> SourceFile:
    """Read a file's bytes and detect its format, once (raises ``OSError`` when unreadable).

    A file above ``max_bytes`` is refused from its size alone, never read.
    ``follow_links=False`` (the inbox) refuses to open a symbolic link.
    """
    try:
        check_size(path, max_bytes)
    except FileTooLargeError as err:
        refusal = FileTooLargeError(printable(str(err)))
        return refused_source(path, refusal, size_bytes=path.stat().st_size)
    data = path.read_bytes() if follow_links else _read_no_follow(path)
    export = detect_export(data, file_name=display_name(path.name))
    detection = export.detection if isinstance(export, DecodedExport) else None
    return SourceFile(path, data, sha256_of(data), detection, export)


def detect_export(data: bytes, *, file_name: str) -> DecodedExport | ChimeraError:
    """:func:`chimera.detect.detect`, with its refusal returned instead of raised.

    Any other exception (a detector bug) is a refusal too, so one file never stops the others.
    """
    try:
        return detect(data, file_name=file_name)
    except ChimeraError as err:
        return err
    except Exception as err:  # noqa: BLE001 - a detector bug must not stop the other files
        # The type only: an exception's message may quote the content, which logs never carry.
        kind = type(err).__name__
        LOGGER.error("%s could not be recognised (%s)", file_name, kind)
        msg = f"{file_name}: the content could not be decoded or recognised ({kind})"
        return UnreadableFileError(msg)
