"""A throwaway PostgreSQL database at 127.0.0.1:5432 for the team-catalog tests (conftest's
``pg_url`` fixture and the tests that need a database outside a fixture)."""

from __future__ import annotations

import uuid

import pytest

ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def fresh_pg_database():
    """(URL of a new empty database, drop()), or a skip where PostgreSQL is not reachable."""
    try:
        import psycopg

        admin = psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=3)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432 ({type(exc).__name__}); team-catalog tests skipped")
    name = f"loradex_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')

    def drop():
        try:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            admin.close()

    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", drop
