"""Files and folders Chimera creates are readable by their owner and group only (issue 13).

Trial data is regulated: nothing under the data root is world-readable. The commands set the
process umask (:func:`restrict_umask`) so every file they or their libraries create (reports,
the Prefect database) is covered, and the writers of the warehouse, archive and quarantine
also set the modes explicitly, so a library call from another process is covered too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o750
"""Folders: owner rwx, group r-x, others nothing."""
FILE_MODE = 0o640
"""Files: owner rw, group r, others nothing."""
UMASK = 0o027
"""Process umask of every command: no permission bits for others, no group write."""


def restrict_umask() -> int:
    """Add :data:`UMASK` to the process umask (never loosening it); return the previous one."""
    previous = os.umask(UMASK)
    os.umask(previous | UMASK)
    return previous


def private_dirs(folder: Path) -> Path:
    """Create ``folder`` and its missing parents with :data:`DIR_MODE`; return ``folder``.

    Only folders created here get the mode; existing ones (the user's own) are left alone.
    """
    missing = []
    current = folder
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        path.chmod(DIR_MODE)
    return folder


def private_file(path: Path) -> Path:
    """Give a file Chimera just wrote :data:`FILE_MODE` (a symbolic link is left as it is)."""
    if not path.is_symlink():
        path.chmod(FILE_MODE)
    return path


def world_readable(path: Path) -> bool:
    """Whether others may read (or list) ``path`` (its own mode, links not followed).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     target = Path(tmp) / "x"
    ...     _ = target.write_bytes(b"")
    ...     _ = private_file(target)
    ...     world_readable(target)
    False
    """
    return bool(path.lstat().st_mode & stat.S_IROTH)
