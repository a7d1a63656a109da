"""``loradex blobs migrate --to LOCATION``: copy a home's blobs to another blob store (e.g. an
S3 bucket), verified, then record that the home's blobs live there.

Resumable: a blob the target already holds with the right size is not sent again, so a run
killed or failed half-way is finished by running it again. Verified: every copy is hashed as it
is sent (the four hashes) and must hash to its name; the S3 backend also has the store check
each part's and the whole object's SHA-256. Only when every blob a row names is in the target
with its size is the new location recorded (``<home>/blobs/location.json``; ``LORADEX_BLOBS``
still overrides it). The source blobs are left where they were (delete them yourself, or keep
them as a backup).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..crashpoints import crashpoint
from ..errors import CatalogError
from ..files.blob_backends import open_blob_store, record_location
from .blob_uploads import CatalogUploadLedger
from .maintenance import referenced_blobs


@dataclass
class MigrateReport:
    location: str
    copied: list[str] = field(default_factory=list)
    already_there: int = 0
    bytes_copied: int = 0
    recorded: bool = False

    def to_dict(self) -> dict:
        return {"location": self.location, "copied": len(self.copied), "already_there": self.already_there,
                "bytes_copied": self.bytes_copied, "recorded": self.recorded}


def migrate_blobs(catalog, to: str, *, progress=None) -> MigrateReport:
    to = to.strip()
    if not to:
        raise CatalogError("give the blob store to migrate to", hint="e.g. --to s3://BUCKET/PREFIX")
    source = catalog.blobs
    target = open_blob_store(catalog.home, to, ledger=CatalogUploadLedger(catalog))
    if target.location == source.location:
        raise CatalogError(f"the blobs already live in {to}")
    report = MigrateReport(location=target.location)
    entries = sorted(source.iter_entries(), key=lambda e: e.sha256)
    sizes = {entry.sha256: entry.size for entry in entries}
    needed = catalog.read(referenced_blobs)
    missing = sorted(sha for sha in needed if sha not in sizes and target.size_of(sha) is None)
    if missing:
        raise CatalogError(f"{len(missing)} blob(s) named by the catalog are in neither store "
                           f"(e.g. sha256:{missing[0][:12]}); nothing was recorded",
                           hint="run `loradex verify`, repair or remove those versions, then migrate again")
    for i, entry in enumerate(entries):
        if target.size_of(entry.sha256) == entry.size:
            report.already_there += 1
        else:
            with target.writing():
                stored = target.add_file(source.path_for(entry.sha256))
            if stored.hashes.sha256 != entry.sha256:
                raise CatalogError(f"the blob sha256:{entry.sha256[:12]} in {source.location or catalog.home} "
                                   f"hashes to {stored.hashes.sha256[:12]}… (corrupted); nothing was recorded",
                                   hint="run `loradex verify` on the home first")
            report.copied.append(entry.sha256)
            report.bytes_copied += entry.size
            crashpoint("migrate-blob-copied")
        if progress:
            progress(i + 1, len(entries), "migrate")
    short = sorted(sha for sha in needed if target.size_of(sha) != sizes.get(sha, target.size_of(sha)))
    if short:
        raise CatalogError(f"{len(short)} blob(s) are not in {target.location} with their size after the copy "
                           f"(e.g. sha256:{short[0][:12]}); nothing was recorded", hint="run the migration again")
    record_location(catalog.home, target.location)
    report.recorded = True
    catalog.blobs = target
    return report
