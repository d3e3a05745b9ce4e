"""Output paths the CLI writes, checked before a run rather than after it.

A run of minutes whose `--records nodir/r.csv` fails only when it is written throws the run
away and prints a bare "[Errno 2] No such file or directory"; these checks name the option and
what is wrong with the path before anything runs, and `writing` names the option if the write
itself fails (a full disk, say).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..core.errors import ConfigError


def check_file(option: str, path) -> None:
    """`path` can be written as a file: its folder exists and is writable, and it is not a
    folder itself."""
    if not path:  # None or "": the option was not given, nothing is written
        return
    p = Path(path)
    if p.is_symlink():  # written through the link: where it points is what must exist
        p = p.resolve()
    folder = p.parent
    if p.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give a file name")
    if not folder.exists():
        tilde = " (~ is not expanded here: give the full path)" \
            if str(path).startswith("~") else "; create it first"
        raise ConfigError(f"{option} {path}: folder {folder} does not exist{tilde}")
    if not folder.is_dir():
        raise ConfigError(f"{option} {path}: {folder} is not a folder")
    if not os.access(folder if not p.exists() else p, os.W_OK):
        raise ConfigError(f"{option} {path}: cannot write there (permission denied)")


def check_folder(option: str, path) -> None:
    """`path` can be written as a folder: it is one, or can be created where the nearest
    existing part of it is a writable folder."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{option} {path}: is a file; give a folder (created if missing)")
    existing = p
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # mkdir said only "[Errno 17] File exists: '<link>'"
            raise ConfigError(f"{option} {path}: {existing} is a link to "
                              f"{os.readlink(existing)}, which does not exist")
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{option} {path}: {existing} is a file, so the folder cannot be "
                          "created")
    if not os.access(existing, os.W_OK):
        raise ConfigError(f"{option} {path}: cannot write in {existing} (permission denied)")


@contextlib.contextmanager
def writing(option: str, path):
    """Name the option when writing `path` fails anyway (a full disk, a folder removed
    during the run)."""
    try:
        yield
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot write: {exc.strerror or exc}") from None
