"""The catalog's ``UploadLedger``: uploads to a shared blob store in progress, in the table
``blob_uploads`` of the catalog database (so every replica's ``gc`` sees every replica's
uploads). Each call is its own short committed transaction."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import delete, select, update

from ..files.blob_backends import UploadRecord
from .db_schema import BlobUploadRow


def _utc(value: datetime) -> datetime:
    """SQLite gives naive datetimes back: they were stored as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class CatalogUploadLedger:
    def __init__(self, catalog):
        self.catalog = catalog

    def begin(self, staging_key: str | None) -> int:
        def add(s):
            row = BlobUploadRow(staging_key=staging_key, started_at=datetime.now(timezone.utc))
            s.add(row)
            s.flush()
            return row.id

        return self.catalog.transact(add, crash_points=False)

    def name(self, upload_id: int, sha256: str) -> None:
        self.catalog.transact(lambda s: s.execute(
            update(BlobUploadRow).where(BlobUploadRow.id == upload_id).values(sha256=sha256)), crash_points=False)

    def finish(self, upload_id: int) -> None:
        self.catalog.transact(lambda s: s.execute(delete(BlobUploadRow).where(BlobUploadRow.id == upload_id)),
                              crash_points=False)

    def active(self) -> list[UploadRecord]:
        return self.catalog.read(active_uploads)

    def drop_older_than(self, cutoff: datetime) -> int:
        naive = cutoff.astimezone(timezone.utc)
        if self.catalog.url.startswith("sqlite"):
            naive = naive.replace(tzinfo=None)
        return self.catalog.transact(lambda s: s.execute(
            delete(BlobUploadRow).where(BlobUploadRow.started_at < naive)).rowcount, crash_points=False)


def active_uploads(s) -> list[UploadRecord]:
    return [UploadRecord(row.id, row.sha256, row.staging_key, _utc(row.started_at))
            for row in s.scalars(select(BlobUploadRow))]
