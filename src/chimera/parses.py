"""A batch's parses by content SHA-256, some still being made while the batch books others.

:func:`chimera.ingest.prepare_sources` gives every new file of a batch to its parser at once.
A worker pool (:func:`chimera.staging.parse_in_pool`) hands its parses back as they are asked
for, so the batch books its first files while the workers parse later ones (issue 12).
:class:`Parses` is the batch's record of them: looking up a file whose parse is still being
made waits for it (or makes it here, :class:`chimera.workers.Mapped`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chimera.ingest import Prepared


class Parses:
    """Each file's parse (or refusal) by content SHA-256; a file whose parser crashed has none.

    A parse still being made (:meth:`expect`) is taken in when its file is first looked up;
    an error of the parser that makes it (not of the file: a broken worker's function) is
    raised there.
    """

    def __init__(self) -> None:
        self._found: dict[str, Prepared] = {}
        self._coming: dict[str, tuple[Sequence[Prepared | None], int]] = {}

    def expect(self, sha256: str, parses: Sequence[Prepared | None], index: int) -> None:
        """The parse of ``sha256`` will be ``parses[index]`` (None: its parser crashed)."""
        self._found.pop(sha256, None)
        self._coming[sha256] = (parses, index)

    def get(self, sha256: str) -> Prepared | None:
        """The file's parse, taken in (waited for) if it is still being made; None if none."""
        coming = self._coming.pop(sha256, None)
        if coming is not None:
            parses, index = coming
            found = parses[index]
            if found is not None:
                self._found[sha256] = found
        return self._found.get(sha256)

    def __contains__(self, sha256: object) -> bool:
        return isinstance(sha256, str) and self.get(sha256) is not None

    def __getitem__(self, sha256: str) -> Prepared:
        found = self.get(sha256)
        if found is None:
            raise KeyError(sha256)
        return found

    def __setitem__(self, sha256: str, prepared: Prepared) -> None:
        self._coming.pop(sha256, None)
        self._found[sha256] = prepared
