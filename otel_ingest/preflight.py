"""Start-up checks that turn a file-permission mistake into one sentence saying what to chown.

Without them a root-owned bind mount (``docker run -v /srv/otel:/data``) surfaced as a
traceback from table creation (exit 3), or as a server that is healthy but never ready; a
token file that Docker created as a directory (the host file did not exist) as
"Is a directory". Object-store warehouses are not checked here: ``/readyz`` probes them.
"""

from __future__ import annotations

import os
from pathlib import Path

from otel_ingest.config import ConfigError
from otel_ingest.tables import Warehouse

# catalog/schema/table/_delta_log: the folders a writer creates files in. Data files
# themselves are never rewritten, so the walk stops here and stays cheap on big warehouses.
_TABLE_DEPTH = 4
# Set by the Dockerfile: messages then speak of OTEL_INGEST_* variables and host folders.
CONTAINER_ENV = "OTEL_INGEST_IN_CONTAINER"


def in_container() -> bool:
    return bool(os.environ.get(CONTAINER_ENV))


def _who() -> str:
    return f"uid {os.geteuid()}"


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_token_file(path: str) -> None:
    """The token file exists, is a file, and this process can read it."""
    file = Path(path)
    make_one = f"otel-ingest tokens new NAME 'CATALOG.SCHEMA.*' > {path}"
    if in_container():
        make_one = "docker run --rm otel-ingest tokens new NAME 'CATALOG.SCHEMA.*' > tokens.toml"
    if file.is_dir():
        raise ConfigError(
            f"Token file {path} is a directory, not a file (Docker makes one when the host file to mount does "
            f"not exist): remove it and create the file first, e.g. `{make_one}`."
        )
    try:
        with file.open("rb"):
            pass
    except FileNotFoundError:
        raise ConfigError(f"Token file {path} does not exist: create it, e.g. `{make_one}`.") from None
    except PermissionError:
        raise ConfigError(
            f"Token file {path} is not readable by this process ({_who()}): "
            f"run `chown {os.geteuid()} {path}` or `chmod 644 {path}` on it."
        ) from None


def check_warehouse(warehouse: Warehouse) -> None:
    """A local warehouse folder (and the table folders in it) is writable by this process."""
    if not warehouse.is_local:
        return
    root = Path(warehouse.root)
    owner = root if root.exists() else _nearest_existing(root)
    fix = f"run `chown -R {os.geteuid()} {owner}`"
    if in_container():
        fix += f" on the host folder or volume mounted at {owner} (the image runs as uid {os.geteuid()})"
    if root.exists() and not root.is_dir():
        raise ConfigError(f"Warehouse {root} is a file, not a folder: choose another --warehouse.")
    try:
        warehouse.probe()  # creates the folder if needed, writes and deletes a marker
    except PermissionError:
        raise ConfigError(f"Warehouse folder {root} is not writable by this process ({_who()}): {fix}.") from None
    except OSError as exc:
        raise ConfigError(f"Warehouse folder {root} cannot be written: {exc.strerror} ({exc.filename}).") from None
    for folder in _table_folders(root):
        if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
            raise ConfigError(f"Folder {folder} in the warehouse is not writable by this process ({_who()}): {fix}.")


def _table_folders(root: Path) -> list[Path]:
    """Folders down to catalog/schema/table/_delta_log; an unreadable one is listed, not entered."""
    found: list[Path] = []
    level = [root]
    for _ in range(_TABLE_DEPTH):
        below = []
        for folder in level:
            if not os.access(folder, os.R_OK | os.X_OK):
                continue  # the caller's access check reports it
            below += [entry for entry in folder.iterdir() if entry.is_dir() and not entry.is_symlink()]
        found += below
        level = below
    return found
