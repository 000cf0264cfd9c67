"""Files holding keys, passwords or tokens: written mode 0600, refused when others can read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class SecretFileError(ValueError):
    """A secret file that cannot be read, or that users other than its owner can read or write."""


def check_private(path: Path) -> None:
    """Raise SecretFileError unless ``path`` exists and its group and others have no access to it."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise SecretFileError(f"cannot read {path}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretFileError(f"{path} holds a secret but is readable by others (mode "
                              f"{stat.S_IMODE(mode):04o}): chmod 600 {path}")


def read_private(path: Path) -> str:
    """The text of a secret file (stripped), after :func:`check_private`."""
    check_private(path)
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretFileError(f"cannot read {path}: {exc}") from None


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, replacing it in one rename (never briefly readable)."""
    temporary = path.with_name(f".{path.name}.new")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temporary, path)
