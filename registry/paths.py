"""Where loradex keeps things: ``$LORADEX_HOME`` (default: the platform's user data dir)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import HomeError


def loradex_home(explicit: str | os.PathLike | None = None) -> Path:
    given = explicit or os.environ.get("LORADEX_HOME")
    if given:
        try:
            return Path(given).expanduser().resolve()
        except (OSError, RuntimeError) as exc:  # a loop of symlinks, a name too long
            raise HomeError(f"cannot use the loradex home {given}: {exc}",
                            hint="set LORADEX_HOME (or --home) to a folder you can read and write") from None
    from platformdirs import user_data_dir

    return Path(user_data_dir("loradex", appauthor=False))


def prepare_home(home: Path) -> bool:
    """Create the home when it is missing; True when it exists but cannot be written (its folder
    or its ``catalog.db``): loradex then opens it read-only. A home that is not a folder, or that
    cannot be created or read, is a one-line ``HomeError`` saying what to do."""
    fix = "set LORADEX_HOME (or --home) to a folder you can read and write"
    try:
        return _check_home(home, fix)
    except HomeError:
        raise
    except OSError as exc:  # a name too long, a loop of links, an I/O error
        raise HomeError(f"cannot use the loradex home {home}: {exc.strerror or exc}", hint=fix) from None


def _check_home(home: Path, fix: str) -> bool:
    if home.exists() and not home.is_dir():
        raise HomeError(f"the loradex home {home} is not a folder", hint=fix)
    if not home.exists():
        try:
            home.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise HomeError(f"the loradex home {home} is not a folder (a file is in its way)",
                            hint=fix) from None
        except OSError as exc:
            raise HomeError(f"cannot create the loradex home {home}: {exc.strerror or exc}",
                            hint=fix) from None
        return False
    if not os.access(home, os.R_OK | os.X_OK):
        raise HomeError(f"cannot read the loradex home {home}: permission denied", hint=fix)
    db = home / "catalog.db"
    if db.exists() and not db.is_file():
        raise HomeError(f"{db} is not a file", hint="move it away; loradex keeps its catalog there")
    return not os.access(home, os.W_OK) or (db.exists() and not os.access(db, os.W_OK))


def read_only_sqlite_uri(db: Path) -> str:
    """An SQLite ``file:`` URI (for ``sqlite3.connect(uri=True)``) opening ``db`` read-only. With
    no write-ahead log to replay, the file is opened ``immutable`` (WAL mode otherwise needs to
    create ``-shm`` next to it, which a read-only folder refuses); with one, plain ``mode=ro``
    reads it through its existing ``-shm``."""
    from urllib.parse import quote

    wal = db.with_name(db.name + "-wal")
    has_log = wal.exists() and wal.stat().st_size > 0
    return f"file:{quote(str(db))}?mode=ro{'' if has_log else '&immutable=1'}"


def database_url(home: Path) -> str:
    """``LORADEX_DB`` (any SQLAlchemy URL) or SQLite inside the home."""
    return os.environ.get("LORADEX_DB") or f"sqlite:///{home / 'catalog.db'}"


def current_user() -> str:
    for var in ("LORADEX_USER", "USER", "USERNAME"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"
