"""Where loradex keeps things: ``$LORADEX_HOME`` (default: the platform's user data dir)."""

from __future__ import annotations

import os
from pathlib import Path


def loradex_home(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get("LORADEX_HOME")
    if env:
        return Path(env).expanduser().resolve()
    from platformdirs import user_data_dir

    return Path(user_data_dir("loradex", appauthor=False))


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
