"""Refuse secret files others could read, as ssh does for private keys.

A keyring or private key that is group- or world-accessible, or owned by
another user, may already be known to someone else: using it would give a
false sense of authentication. The check is on the open file (fstat), so the
file checked is the file read.
"""

from __future__ import annotations

import os
import stat


class SecretFileError(PermissionError):
    """The file's mode or owner makes it unfit to hold a secret; the message says how to fix it."""


def check_fd(fd: int, path: str | os.PathLike[str], what: str = "secret file") -> None:
    st = os.fstat(fd)
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != os.geteuid():
        raise SecretFileError(
            f"{what} '{path}' is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}): "
            "refusing to use it"
        )
    if mode & 0o077:
        raise SecretFileError(
            f"permissions {mode:04o} for {what} '{path}' are too open: it must not be "
            f"accessible by group or others (run: chmod 600 {path})"
        )


def read_secret(path: str | os.PathLike[str], what: str = "secret file") -> bytes:
    """The file's bytes, after checking owner and mode; OSError when unreadable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        check_fd(fd, path, what)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)

