"""What the rest of loradex sees of the catalog: plain frozen dataclasses.

``to_dict()`` gives the stable ``--json`` shape of each (documented in docs/JSON.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from loradex.families import UNKNOWN, family_names

KINDS = ("lora", "lycoris", "embedding", "checkpoint")
# Every registered base family (loradex.families: declarations only, light to import) + "unknown".
BASES = (*family_names(), UNKNOWN)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; loradex stores UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


@dataclass(frozen=True)
class Adapter:
    id: int
    name: str
    kind: str
    base: str
    description: str = ""
    tags: dict = field(default_factory=dict)
    created_at: datetime | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "base": self.base,
            "description": self.description,
            "tags": dict(self.tags),
            "created_at": _iso(self.created_at),
        }


@dataclass(frozen=True)
class VersionFile:
    """One named file of a multi-file version (e.g. ``high_noise`` and ``low_noise`` of a Wan 2.2
    A14B LoRA): ``name`` is its role, ``file_name`` the name it is exported and pushed under."""

    name: str
    file_name: str
    sha256: str
    size: int
    file_format: str
    probe: dict = field(default_factory=dict)

    def to_dict(self, *, full: bool = False) -> dict:
        out = {"name": self.name, "file_name": self.file_name, "sha256": self.sha256, "size": self.size,
               "file_format": self.file_format}
        if full:
            out["probe"] = self.probe
        return out


@dataclass(frozen=True)
class Version:
    id: int
    adapter: str
    version: str
    sha256: str
    autov1: str | None
    autov2: str
    autov3: str | None
    size: int
    file_format: str
    file_name: str = ""
    probe: dict = field(default_factory=dict)
    file_metadata: dict = field(default_factory=dict)
    trigger_words: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)
    message: str = ""
    created_at: datetime | None = None
    created_by: str = ""
    deleted: bool = False
    # the named files of a multi-file version, primary first (empty: one file, the fields above)
    files: tuple[VersionFile, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.adapter}@{self.version}"

    def to_dict(self, *, full: bool = False) -> dict:
        out = {
            "ref": self.ref,
            "name": self.adapter,
            "version": self.version,
            "sha256": self.sha256,
            "hashes": {
                "sha256": self.sha256,
                "autov1": self.autov1,
                "autov2": self.autov2,
                "autov3": self.autov3,
            },
            "size": self.size,
            "file_format": self.file_format,
            "file_name": self.file_name,
            "trigger_words": list(self.trigger_words),
            "message": self.message,
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
            "deleted": self.deleted,
        }
        if self.files:
            out["files"] = [f.to_dict(full=full) for f in self.files]
        if full:
            out["probe"] = self.probe
            out["metadata"] = self.file_metadata
            out["extra"] = self.extra
        return out


@dataclass(frozen=True)
class Alias:
    adapter: str
    name: str
    version: str

    def to_dict(self) -> dict:
        return {"name": self.adapter, "alias": self.name, "version": self.version}


@dataclass(frozen=True)
class AliasEvent:
    id: int
    adapter: str
    alias: str
    action: str
    from_version: str | None
    to_version: str | None
    at: datetime
    by: str
    reason: str

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.adapter,
            "alias": self.alias,
            "action": self.action,
            "from": self.from_version,
            "to": self.to_version,
            "at": _iso(self.at),
            "by": self.by,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class LineageEdge:
    child: str
    parent: str  # "name@version" for catalog versions, or an external ref (hf://…, civitai:…)
    relation: str
    recipe: dict = field(default_factory=dict)
    created_at: datetime | None = None

    def to_dict(self) -> dict:
        return {
            "child": self.child,
            "parent": self.parent,
            "relation": self.relation,
            "recipe": self.recipe,
            "created_at": _iso(self.created_at),
        }


@dataclass(frozen=True)
class AdapterSummary:
    """One row of ``loradex list``."""

    name: str
    kind: str
    base: str
    latest: str | None
    versions: int
    aliases: dict[str, str]
    size: int  # bytes of the latest version

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "base": self.base,
            "latest": self.latest,
            "versions": self.versions,
            "aliases": dict(self.aliases),
            "size": self.size,
        }
