"""ORM rows of the catalog (SQLAlchemy 2.x).

Rows never leave ``loradex.registry``: ``to_entity()`` turns them into the frozen dataclasses of
``loradex.registry.catalog.entities``. Migrations (``registry/catalog/migrations``) describe the same schema
without importing this module, so an old revision keeps working when these classes change.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from . import entities as E


class Base(DeclarativeBase):
    pass


class AdapterRow(Base):
    __tablename__ = "adapters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    base: Mapped[str] = mapped_column(String(32), nullable=False, default="unknown")
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    tags: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    def to_entity(self) -> E.Adapter:
        return E.Adapter(
            id=self.id,
            name=self.name,
            kind=self.kind,
            base=self.base,
            description=self.description,
            tags=dict(self.tags or {}),
            created_at=self.created_at,
        )


class VersionRow(Base):
    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("adapter_id", "version", name="uq_versions_adapter_version"),
        # live_sha256 is the blob hash while the version is live and NULL once soft-deleted, so
        # one adapter cannot hold the same blob twice, even under concurrent writers.
        UniqueConstraint("adapter_id", "live_sha256", name="uq_versions_adapter_live_blob"),
        Index("ix_versions_adapter_sort", "adapter_id", "sort_key"),
        Index("ix_versions_sha256", "sha256"),
        Index("ix_versions_autov2", "autov2"),
        Index("ix_versions_autov3", "autov3"),
        # The listing's newest live version per adapter from the index alone (migration 0008).
        Index("ix_versions_live_latest", "adapter_id", "sort_key", "deleted_at", "version", "size",
              sqlite_where=text("deleted_at IS NULL"), postgresql_where=text("deleted_at IS NULL")),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), nullable=False)
    version: Mapped[str] = mapped_column(String(64), nullable=False)
    sort_key: Mapped[str] = mapped_column(String(128), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    live_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    autov1: Mapped[str | None] = mapped_column(String(16), nullable=True)
    autov2: Mapped[str] = mapped_column(String(16), nullable=False)
    autov3: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    file_format: Mapped[str] = mapped_column(String(64), nullable=False)
    file_name: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    probe: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    file_metadata: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    trigger_words: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    extra: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    deleted_by: Mapped[str | None] = mapped_column(String(200), nullable=True)

    def to_entity(self, adapter_name: str) -> E.Version:
        return E.Version(
            id=self.id,
            adapter=adapter_name,
            version=self.version,
            sha256=self.sha256,
            autov1=self.autov1,
            autov2=self.autov2,
            autov3=self.autov3,
            size=self.size,
            file_format=self.file_format,
            file_name=self.file_name,
            probe=dict(self.probe or {}),
            file_metadata=dict(self.file_metadata or {}),
            trigger_words=tuple(self.trigger_words or ()),
            extra=dict(self.extra or {}),
            message=self.message,
            created_at=self.created_at,
            created_by=self.created_by,
            deleted=self.deleted_at is not None,
        )


class VersionFileRow(Base):
    """One named file of a multi-file version (migration 0009; ``registry.catalog.version_files``).
    Position 0 is the primary file, the blob the version row itself names."""

    __tablename__ = "version_files"
    __table_args__ = (
        UniqueConstraint("version_id", "name", name="uq_version_files_version_name"),
        UniqueConstraint("version_id", "position", name="uq_version_files_version_position"),
        Index("ix_version_files_sha256", "sha256"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    file_name: Mapped[str] = mapped_column(String(500), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    file_format: Mapped[str] = mapped_column(String(64), nullable=False)
    probe: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)

    def to_entity(self) -> E.VersionFile:
        return E.VersionFile(name=self.name, file_name=self.file_name, sha256=self.sha256, size=self.size,
                             file_format=self.file_format, probe=dict(self.probe or {}))


class AliasRow(Base):
    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("adapter_id", "name", name="uq_aliases_adapter_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), nullable=False)


class AliasEventRow(Base):
    __tablename__ = "alias_events"
    __table_args__ = (Index("ix_alias_events_adapter_alias", "adapter_id", "alias", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), nullable=False)
    alias: Mapped[str] = mapped_column(String(100), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False)  # set | rollback | remove | refused (moved nothing)
    from_version_id: Mapped[int | None] = mapped_column(ForeignKey("versions.id"), nullable=True)
    to_version_id: Mapped[int | None] = mapped_column(ForeignKey("versions.id"), nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    by: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")


class LineageRow(Base):
    __tablename__ = "lineage"
    __table_args__ = (Index("ix_lineage_child", "child_version_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    child_version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), nullable=False)
    parent_version_id: Mapped[int | None] = mapped_column(ForeignKey("versions.id"), nullable=True)
    parent_ref: Mapped[str | None] = mapped_column(String(500), nullable=True)
    relation: Mapped[str] = mapped_column(String(32), nullable=False)
    recipe: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class PromptRecordRow(Base):
    __tablename__ = "prompt_records"
    __table_args__ = (Index("ix_prompt_records_image_sha256", "image_sha256"),)  # the web app's image look-up
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    record: Mapped[dict] = mapped_column(JSON, nullable=False)
    image_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False, default="")


class PromptRecordVersionRow(Base):
    """Which catalog versions a prompt record used (its stack), for ``records list REF``."""

    __tablename__ = "prompt_record_versions"
    record_id: Mapped[str] = mapped_column(ForeignKey("prompt_records.id"), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), primary_key=True)


class EvalCardRow(Base):
    __tablename__ = "eval_cards"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), nullable=False)
    card: Mapped[dict] = mapped_column(JSON, nullable=False)
    passed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False, default="")


class RemoteRow(Base):
    __tablename__ = "remotes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    url: Mapped[str] = mapped_column(String(1000), nullable=False)
    settings: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class SyncStateRow(Base):
    __tablename__ = "sync_state"
    __table_args__ = (
        UniqueConstraint("remote_id", "version_id", "direction", name="uq_sync_remote_version_dir"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    remote_id: Mapped[int] = mapped_column(ForeignKey("remotes.id"), nullable=False)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), nullable=False)
    direction: Mapped[str] = mapped_column(String(8), nullable=False)  # push | pull
    remote_ref: Mapped[str] = mapped_column(String(1000), nullable=False)
    remote_oid: Mapped[str] = mapped_column(String(128), nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class FileCacheRow(Base):
    """Hashes of files seen by ``import``, keyed on what changes when a file changes."""

    __tablename__ = "file_cache"
    path: Mapped[str] = mapped_column(String(2000), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    mtime_ns: Mapped[int] = mapped_column(BigInteger, nullable=False)
    inode: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    outcome: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)


class AliasPolicyRow(Base):
    """What a version needs before ``alias`` may point at it (the promotion gate)."""

    __tablename__ = "alias_policies"
    __table_args__ = (UniqueConstraint("adapter_id", "alias", name="uq_alias_policies_adapter_alias"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), nullable=False)
    alias: Mapped[str] = mapped_column(String(100), nullable=False)
    require_pass: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    minimums: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    maximums: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_by: Mapped[str] = mapped_column(String(200), nullable=False, default="")


class ServeTokenRow(Base):
    """A ``loradex serve`` API token: only its sha256 is stored (``registry.server_tokens``)."""

    __tablename__ = "serve_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    scope: Mapped[str] = mapped_column(String(16), nullable=False)
    namespace: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ServeAuditRow(Base):
    """One write request to ``loradex serve``: who (token name, never the secret), what, when."""

    __tablename__ = "serve_audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    token_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    token_name: Mapped[str] = mapped_column(String(100), nullable=False)
    method: Mapped[str] = mapped_column(String(10), nullable=False)
    path: Mapped[str] = mapped_column(String(2000), nullable=False)
    status: Mapped[int] = mapped_column(Integer, nullable=False)
    client: Mapped[str | None] = mapped_column(String(100), nullable=True)


class WebSessionRow(Base):
    """A signed-in browser (``registry.server.web.sessions``): only the sha256 of the session id
    is stored; ``credential_check`` binds it to the token it was opened with (revoking the token
    ends the session)."""

    __tablename__ = "web_sessions"
    __table_args__ = (Index("ix_web_sessions_expires", "expires_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    credential_check: Mapped[str] = mapped_column(String(64), nullable=False)
    token_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    token_name: Mapped[str] = mapped_column(String(100), nullable=False)
    scope: Mapped[str] = mapped_column(String(16), nullable=False)
    namespace: Mapped[str | None] = mapped_column(String(100), nullable=True)
    csrf_secret: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class BlobUploadRow(Base):
    """An upload to a shared blob store (S3) in progress: its staging key from the start, the
    sha256 once known. ``gc`` on any replica keeps what these name; the writer deletes its row
    after committing the row that names the blob (``registry.catalog.blob_uploads``)."""

    __tablename__ = "blob_uploads"
    __table_args__ = (Index("ix_blob_uploads_sha256", "sha256"), Index("ix_blob_uploads_started", "started_at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    staging_key: Mapped[str | None] = mapped_column(String(1100), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class HubRepoRow(Base):
    """A repository of the Hub server when its repos live in the database (stateless replicas,
    ``registry.server.hub.repo_backends``): ``meta`` is the repo's JSON metadata."""

    __tablename__ = "hub_repos"
    repo_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(100), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    meta: Mapped[str] = mapped_column(Text, nullable=False)


class HubCommitRow(Base):
    """An immutable commit document of a Hub repo (its whole tree), keyed by its oid."""

    __tablename__ = "hub_commits"
    repo_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    oid: Mapped[str] = mapped_column(String(40), primary_key=True)
    document: Mapped[str] = mapped_column(Text, nullable=False)


class HubRefRow(Base):
    """A branch or tag of a Hub repo; moved only by compare-and-swap on ``target``."""

    __tablename__ = "hub_refs"
    repo_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # "branch" | "tag"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    target: Mapped[str] = mapped_column(String(40), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")


class ServerSecretRow(Base):
    """A signing key every ``loradex serve`` replica on this database shares (the Civitai
    download URLs, the Hub's LFS upload URLs), so a URL one replica signs is honoured by all."""

    __tablename__ = "server_secrets"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128), nullable=False)


# --- datasets (registry/catalog/datasets.py; migration 0010) -----------------------------------

class DatasetRow(Base):
    """A named, versioned set of training images with captions."""

    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class DatasetVersionRow(Base):
    """One immutable dataset version: its manifest (image blobs by sha256, captions, per-image
    facts; ``schemas/dataset_manifest.schema.json``) and the ``dataset check`` report made on add.
    ``training_sha256`` is the manifest hash a training run over the exported folder records
    (``dataset_check.DatasetReport.manifest_sha256``)."""

    __tablename__ = "dataset_versions"
    __table_args__ = (
        UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_dataset_version"),
        Index("ix_dataset_versions_dataset_sort", "dataset_id", "sort_key"),
        Index("ix_dataset_versions_manifest", "manifest_sha256"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), nullable=False)
    version: Mapped[str] = mapped_column(String(64), nullable=False)
    sort_key: Mapped[str] = mapped_column(String(128), nullable=False)
    manifest_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    training_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    manifest: Mapped[dict] = mapped_column(JSON, nullable=False)
    report: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    num_images: Mapped[int] = mapped_column(Integer, nullable=False)
    total_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    deleted_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class DatasetAliasRow(Base):
    __tablename__ = "dataset_aliases"
    __table_args__ = (UniqueConstraint("dataset_id", "name", name="uq_dataset_aliases_dataset_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"), nullable=False)


class DatasetAliasEventRow(Base):
    """Every move of a dataset alias (set | remove), as ``alias_events`` for adapters."""

    __tablename__ = "dataset_alias_events"
    __table_args__ = (Index("ix_dataset_alias_events_dataset_alias", "dataset_id", "alias", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), nullable=False)
    alias: Mapped[str] = mapped_column(String(100), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    from_version_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id"), nullable=True)
    to_version_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id"), nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    by: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")


# Migration 0011 (issue 22: events, promotion requests): its rows live in their own module.
from .db_events import (  # noqa: E402,F401  (after Base: db_events subclasses it)
    AliasProtectionRow, OutboxRow, PromotionRequestRow, WebhookDeliveryRow, WebhookRow)
