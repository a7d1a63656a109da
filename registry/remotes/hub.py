"""Hugging Face Hub (and ``loradex serve`` mirrors) as remotes: push a version as one tagged
commit, pull a tag / branch / commit back into the catalog.

Refs:
* ``hf://OWNER/REPO[@REV]`` — the Hub (``--endpoint``, else ``$HF_ENDPOINT``, else
  https://huggingface.co); through a recorded ``hf`` remote, ``NAME:OWNER/REPO[@REV]`` or
  ``NAME:REPO[@REV]`` (owner = the first segment of the remote URL's path).
* ``mirror://REMOTE/NAME[@REF]`` — a recorded remote (a ``loradex serve``); the repo is
  ``<namespace>/<NAME>``, namespace from the remote URL's path (``http://host:8470/team``) or
  the server's whoami. ``REMOTE:NAME[@REF]`` means the same.

REV/REF: a version tag ``v1.2.0`` (``1.2.0`` is read as ``v1.2.0``), a branch (``main``, or an
alias: aliases are mirrored as branches of the same name), or a commit sha. ``@v*`` (or
``all_versions=True``) pulls every ``v*`` tag.

Transfers go through registry.hub_client (the real huggingface_hub client; no hand-written
HTTP). Tokens: ``LORADEX_TOKEN_<REMOTE>``, and for ``hf`` remotes huggingface_hub's own
(``HF_TOKEN`` / ``hf auth login``) — never for mirrors. They are passed to the client only and
appear in no file, row, message or result.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from sqlalchemy import select

from . import hub_manifest as M
from ..errors import Conflict, InvalidRef, LoradexError, NotFound, RemoteError, TransferError, UntrustedData
from ..catalog.refs import is_semver, sort_key
from ..untrusted import read_json_file
from . import RemoteRecord, discard_download, get_remote, register_remote

HF_ENDPOINT = "https://huggingface.co"
Progress = Callable[[int, int, str], None]
SHA_RE = re.compile(r"[0-9a-f]{40}")
NAMESPACE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


# --- endpoints, repo ids, tokens ---------------------------------------------------------------
@dataclass(frozen=True)
class HubTarget:
    endpoint: str
    repo_id: str
    revision: str
    remote: RemoteRecord | None = None


def split_remote_url(url: str) -> tuple[str, str | None]:
    """``http://host:8470/team`` → (``http://host:8470``, ``team``)."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    return f"{parts.scheme}://{parts.netloc}", (segments[0] if segments else None)


def _default_endpoint(endpoint: str | None) -> str:
    return (endpoint or os.environ.get("HF_ENDPOINT") or HF_ENDPOINT).rstrip("/")


def token_for(remote: RemoteRecord | None, endpoint: str) -> str | None:
    from .hub_client import resolve_token, uses_xet

    if remote is not None:
        return resolve_token(remote.name, hf_fallback=remote.kind == "hf")
    # No recorded remote: the user's Hugging Face token goes to the Hub, or to the endpoint
    # they pointed huggingface_hub itself at — nowhere else.
    hf_ok = uses_xet(endpoint) or endpoint == (os.environ.get("HF_ENDPOINT") or "").rstrip("/")
    return resolve_token(None, hf_fallback=hf_ok)


def _namespace(endpoint: str, remote: RemoteRecord | None, token: str | None) -> str:
    if remote is not None:
        ns = split_remote_url(remote.url)[1]
        if ns:
            return ns
    from huggingface_hub import HfApi

    from .hub_client import _remote_errors, _retrying

    what = f"namespace: whoami on {endpoint}"
    with _remote_errors(endpoint, "(whoami)", bool(token), "namespace"):
        info = _retrying(lambda: HfApi(endpoint=endpoint, token=token or False).whoami(), what=what)
    name = info.get("name") if isinstance(info, dict) else None
    if not isinstance(name, str) or not NAMESPACE_RE.fullmatch(name):  # it becomes part of repo ids
        raise UntrustedData(what, f"the account name {str(name)[:60]!r} is not a namespace")
    return name


def parse_hub_ref(catalog, ref: str, *, endpoint: str | None = None, remote: RemoteRecord | None = None,
                  token: str | None = None) -> tuple[HubTarget, str | None]:
    """(target, token). ``hf://…`` or ``mirror://…`` (see the module docstring)."""
    scheme, sep, body = ref.partition("://")
    if not sep or scheme not in ("hf", "mirror") or not body:
        raise InvalidRef(f"{ref!r} is not an hf:// or mirror:// ref")
    if scheme == "mirror" and remote is None:
        name, _, body = body.partition("/")
        remote = get_remote(catalog, name)
        if not body:
            raise InvalidRef(f"{ref!r}: give mirror://{name}/ADAPTER[@REF]")
    path, _, revision = body.partition("@")
    revision = revision or "main"
    if is_semver(revision):
        revision = M.version_tag(revision)
    if remote is not None:
        endpoint = split_remote_url(remote.url)[0]
    else:
        endpoint = _default_endpoint(endpoint)
    token = token if token is not None else token_for(remote, endpoint)
    segments = [s for s in path.split("/") if s]
    if len(segments) == 1 and (remote is not None or scheme == "mirror"):
        repo_id = f"{_namespace(endpoint, remote, token)}/{segments[0]}"
    elif len(segments) == 2:
        repo_id = "/".join(segments)
    else:
        raise InvalidRef(f"{ref!r}: the repo must be OWNER/NAME" + (" or NAME" if remote else ""))
    return HubTarget(endpoint, repo_id, revision, remote), token


def _hub_external(target: HubTarget, commit: str) -> str:
    from .hub_client import uses_xet

    if uses_xet(target.endpoint):
        return f"hf://{target.repo_id}@{commit}"
    return f"{target.endpoint}/{target.repo_id}@{commit}"


# --- sync state --------------------------------------------------------------------------------
def record_sync(catalog, remote: RemoteRecord | None, version_id: int, direction: str, remote_ref: str,
                oid: str) -> None:
    if remote is None:
        return
    from ..catalog.db_schema import SyncStateRow

    def run(s):
        row = s.scalar(select(SyncStateRow).where(SyncStateRow.remote_id == remote.id,
                                                  SyncStateRow.version_id == version_id,
                                                  SyncStateRow.direction == direction))
        if row is None:
            row = SyncStateRow(remote_id=remote.id, version_id=version_id, direction=direction,
                               remote_ref="", remote_oid="", at=datetime.now(timezone.utc))
            s.add(row)
        row.remote_ref, row.remote_oid, row.at = remote_ref, oid, datetime.now(timezone.utc)

    catalog.transact(run)


def sync_state(catalog, remote_name: str) -> list[dict]:
    """What was pushed to / pulled from a remote: [{ref, direction, remote_ref, remote_oid, at}]."""
    from ..catalog.db_schema import AdapterRow, RemoteRow, SyncStateRow, VersionRow

    def run(s):
        rows = s.execute(select(SyncStateRow, VersionRow.version, AdapterRow.name)
                         .join(RemoteRow, RemoteRow.id == SyncStateRow.remote_id)
                         .join(VersionRow, VersionRow.id == SyncStateRow.version_id)
                         .join(AdapterRow, AdapterRow.id == VersionRow.adapter_id)
                         .where(RemoteRow.name == remote_name).order_by(SyncStateRow.id)).all()
        return [{"ref": f"{n}@{v}", "direction": r.direction, "remote_ref": r.remote_ref,
                 "remote_oid": r.remote_oid, "at": r.at.isoformat()} for r, v, n in rows]

    return catalog.read(run)


# --- push --------------------------------------------------------------------------------------
@dataclass
class HubPushResult:
    ref: str
    remote: str
    endpoint: str
    repo_id: str
    tag: str
    commit: str
    uploaded: list[str]
    already_there: bool
    branches_set: list[str]
    url: str
    note: str = ""

    def to_dict(self) -> dict:
        return {"ref": self.ref, "remote": self.remote, "endpoint": self.endpoint, "repo_id": self.repo_id,
                "tag": self.tag, "commit": self.commit, "uploaded": self.uploaded,
                "already_there": self.already_there, "sent_nothing": not self.uploaded,
                "branches_set": self.branches_set, "url": self.url, "note": self.note}

    def __str__(self) -> str:
        if self.already_there:
            return f"{self.ref} is already on {self.remote} as {self.repo_id}@{self.tag} ({self.commit[:12]}); sent nothing"
        return f"pushed {self.ref} to {self.repo_id}@{self.tag} ({self.commit[:12]}, {len(self.uploaded)} files)"


def _remote_refs(api, repo_id: str) -> tuple[dict, dict] | None:
    """(tags, branches) of the repo, or None when it does not exist yet."""
    from huggingface_hub.errors import RepositoryNotFoundError

    from .hub_client import repo_refs

    try:
        return repo_refs(api.endpoint, repo_id, api.token or None)
    except RepositoryNotFoundError:
        return None


def _remote_adapter_mismatch(api, repo_id: str, commit: str, staged: M.StagedVersion) -> list[str]:
    """Weight files of ``staged`` that the remote commit lacks or holds with other bytes."""
    from huggingface_hub.hf_api import RepoFile

    from .hub_client import LocalFile, _retrying

    remote = {f.path: f for f in _retrying(lambda: list(api.list_repo_tree(repo_id, recursive=True,
                                                                         revision=commit)))
              if isinstance(f, RepoFile)}
    required = {staged.adapter_paths[0]} | {f["path"] for f in staged.manifest.get("version_files") or []}
    bad = []
    for path in staged.adapter_paths:
        if path not in remote:
            if path in required:  # the file as stored; every file of a multi-file version
                bad.append(path)
            continue  # a format added to the remote's settings later: the version stays as pushed
        if not LocalFile.read(staged.files[path]).matches(remote[path]):
            bad.append(path)
    return bad


def _alias_branches(catalog, adapter: str, version: str, tags: dict) -> dict[str, str | None]:
    """Catalog aliases → branch targets: None (the pushed commit) for this version's, the tag
    of the version an alias points at when that version is on the remote; others are left out."""
    out: dict[str, str | None] = {}
    for alias in catalog.aliases(adapter):
        if alias.version == version:
            out[alias.name] = None
        elif M.version_tag(alias.version) in tags:
            out[alias.name] = M.version_tag(alias.version)
    return out


def push_hub(catalog, ref: str, remote: RemoteRecord, *, progress: Progress | None = None, repo: str | None = None,
             token: str | None = None, converter=None, formats: tuple[str, ...] | None = None,
             aliases: bool = True, private: bool = True, **_ignored) -> HubPushResult:
    """Push catalog version REF to REMOTE (kind hf or mirror) as one commit tagged ``vX.Y.Z``.

    ``repo``: ``NAME`` or ``OWNER/NAME`` (default: the adapter's name under the remote URL's
    namespace, else whoami). ``formats``: default ``remote.settings["formats"]`` or
    ("kohya",); "diffusers" adds ``pytorch_lora_weights.safetensors`` made by ``converter``.
    A version whose tag exists with the same weights sends nothing (records, cards or aliases
    added since do not change a published version); other weights under that tag: Conflict."""
    from huggingface_hub import HfApi

    from .hub_client import _lfs_only_unless_hub, _remote_errors, _set_branches, push_files

    version = catalog.resolve(ref)
    endpoint, _ = split_remote_url(remote.url)
    token = token if token is not None else token_for(remote, endpoint)
    if repo and "/" in repo:
        repo_id = repo
    else:
        repo_id = f"{_namespace(endpoint, remote, token)}/{repo or version.adapter}"
    tag = M.version_tag(version.version)
    formats = tuple(formats or (remote.settings or {}).get("formats") or ("kohya",))
    api = HfApi(endpoint=endpoint, token=token or False)
    work = catalog.home / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hub-push-", dir=work) as stage_dir:
        staged = M.stage_version(catalog, version.ref, stage_dir, formats=formats, converter=converter)
        with _lfs_only_unless_hub(endpoint), _remote_errors(endpoint, repo_id, bool(token), "push"):
            state = _remote_refs(api, repo_id)
            tags, heads = state or ({}, {})
            branch_aliases = _alias_branches(catalog, version.adapter, version.version,
                                             {**tags, tag: "pending"}) if aliases else {}
            if tag in tags:
                bad = _remote_adapter_mismatch(api, repo_id, tags[tag], staged)
                if bad:
                    raise Conflict(f"{repo_id} on {endpoint} already has {tag} with other weights "
                                   f"({', '.join(bad)}); a published version never changes",
                                   hint="bump the version (e.g. `loradex add … --bump patch`) and push that")
                commit = tags[tag]
                branches = _set_branches(api, repo_id, branch_aliases, commit, tags, heads) if branch_aliases else []
                if progress:
                    total = sum(p.stat().st_size for p in staged.files.values())
                    progress(total, total, "already on remote")
                result = HubPushResult(version.ref, remote.name, endpoint, repo_id, tag, commit, [], True, branches,
                                       f"{endpoint}/{repo_id}/tree/{tag}", "version already there; sent nothing")
            else:
                pushed = push_files(endpoint, repo_id, {p: str(f) for p, f in staged.files.items()},
                                    f"{version.ref}: {version.message or 'published by loradex'}", token,
                                    tag=tag, branch_aliases=branch_aliases or None, private=private,
                                    progress=progress)
                result = HubPushResult(version.ref, remote.name, endpoint, repo_id, tag, pushed.commit,
                                       list(pushed.uploaded), pushed.sent_nothing, list(pushed.branches_set),
                                       f"{endpoint}/{repo_id}/tree/{tag}",
                                       "main already held these files; tagged it" if pushed.sent_nothing else "")
    if staged.notes:  # e.g. no diffusers copy for an embedding: the formats that did not apply
        result.note = "; ".join(filter(None, [result.note, *staged.notes]))
    record_sync(catalog, remote, version.id, "push", f"{repo_id}@{tag}", result.commit)
    return result


# --- pull --------------------------------------------------------------------------------------
@dataclass
class HubPullResult:
    version: object  # entities.Version
    repo_id: str
    endpoint: str
    revision: str
    commit: str
    downloaded_bytes: int = 0
    resumed_from: int = 0
    already_present: bool = False
    had_manifest: bool = True
    records: int = 0
    cards: int = 0
    aliases_set: list[str] = field(default_factory=list)
    aliases_skipped: list[str] = field(default_factory=list)
    note: str = ""
    others: list["HubPullResult"] = field(default_factory=list)  # --all-versions: the earlier tags

    def to_dict(self) -> dict:
        out = {"version": self.version.to_dict(), "ref": self.version.ref, "sha256": self.version.sha256,
               "repo_id": self.repo_id, "endpoint": self.endpoint, "revision": self.revision, "commit": self.commit,
               "downloaded_bytes": self.downloaded_bytes, "resumed_from": self.resumed_from,
               "already_present": self.already_present, "had_manifest": self.had_manifest,
               "records": self.records, "cards": self.cards, "aliases_set": self.aliases_set,
               "aliases_skipped": self.aliases_skipped, "note": self.note}
        if self.others:
            out["all_versions"] = [o.to_dict() for o in [*self.others, self]]
        return out


def _download_dir(catalog, target: HubTarget) -> Path:
    # Stable per endpoint + repo, so a pull killed mid-file finds its .part next time.
    key = hashlib.sha256(f"{target.endpoint}\n{target.repo_id}".encode()).hexdigest()[:16]
    return catalog.home / "downloads" / f"hub-{key}"


def _partial_bytes(dest: Path) -> int:
    from .hub_client import PARTIAL_DIR

    part_dir = dest / PARTIAL_DIR
    return sum(p.stat().st_size for p in part_dir.glob("*.part")) if part_dir.is_dir() else 0


def _live_version(catalog, sha256: str):
    from ..catalog.db_schema import AdapterRow, VersionRow

    def run(s):
        row = s.scalar(select(VersionRow).where(VersionRow.sha256 == sha256, VersionRow.deleted_at.is_(None))
                       .order_by(VersionRow.id).limit(1))
        return row.to_entity(s.get(AdapterRow, row.adapter_id).name) if row is not None else None

    return catalog.read(run)


def _version_free(catalog, name: str, version: str) -> bool:
    try:
        catalog.resolve(f"{name}@{version}")
    except NotFound:
        return True
    return False


def _adapter_name(name: str | None, manifest: dict | None, repo_id: str) -> str:
    from ..catalog.adding import default_name
    from ..catalog.refs import check_name

    if name:
        check_name(name)
        return name
    if manifest and manifest.get("name"):
        return manifest["name"]
    return default_name(Path(repo_id.split("/")[-1]))


def pull_hub(catalog, ref: str, *, endpoint: str | None = None, progress: Progress | None = None,
             remote: RemoteRecord | None = None, token: str | None = None, name: str | None = None,
             alias: str | None = None, file: str | None = None, all_versions: bool = False,
             aliases: bool = True, **_ignored) -> HubPullResult:
    """Pull one revision (or every ``v*`` tag) of a Hub repo into the catalog."""
    target, token = parse_hub_ref(catalog, ref, endpoint=endpoint, remote=remote, token=token)
    if all_versions or target.revision == "v*":
        return _pull_all(catalog, target, token, progress=progress, name=name, file=file, aliases=aliases)
    return _pull_one(catalog, target, token, progress=progress, name=name, alias=alias, file=file,
                     aliases=aliases)


def _pull_all(catalog, target: HubTarget, token, **opts) -> HubPullResult:
    from huggingface_hub import HfApi

    from .hub_client import _remote_errors

    api = HfApi(endpoint=target.endpoint, token=token or False)
    with _remote_errors(target.endpoint, target.repo_id, bool(token), "pull"):
        state = _remote_refs(api, target.repo_id)
    if state is None:
        raise NotFound(f"pull: repository {target.repo_id} not found on {target.endpoint}")
    tags = sorted((t for t in state[0] if t.startswith("v") and is_semver(t[1:])), key=lambda t: sort_key(t[1:]))
    if not tags:
        raise NotFound(f"pull: {target.repo_id} on {target.endpoint} has no v* version tags")
    results = [_pull_one(catalog, HubTarget(target.endpoint, target.repo_id, t, target.remote), token,
                         alias=None, **opts) for t in tags]
    last = results[-1]
    last.others = results[:-1]
    return last


def _pull_one(catalog, target: HubTarget, token, *, progress=None, name=None, alias=None, file=None,
              aliases=True) -> HubPullResult:
    """Everything the remote sends (manifest, model card, weights, records, card, refs) is fetched
    and checked before the version is registered: a pull that fails leaves no catalog row, and
    only an interrupted transfer leaves its partial files (to resume) under ``downloads/``."""
    dest = _download_dir(catalog, target)
    keep_partial = False
    try:
        return _pull_one_into(catalog, target, token, dest, progress=progress, name=name, alias=alias,
                              file=file, aliases=aliases)
    except BaseException as exc:  # an interrupted transfer (or Ctrl-C) keeps its partial files to resume
        keep_partial = (isinstance(exc, KeyboardInterrupt) or getattr(exc, "resumable", False)
                        or getattr(exc, "partial_kept", False))
        raise
    finally:
        if not keep_partial:
            discard_download(dest, catalog.home)


def _pull_one_into(catalog, target: HubTarget, token, dest: Path, *, progress, name, alias, file,
                   aliases) -> HubPullResult:
    from ..catalog.adding import add_file
    from ..files.hashing import hash_file
    from .hub_client import pull_revision

    # The manifest first: a version already in the catalog costs no weight download.
    commit, got = pull_revision(target.endpoint, target.repo_id, target.revision, dest, token,
                                allow_patterns=[M.MANIFEST_NAME, M.README_NAME])
    manifest = M.read_manifest(got.get(M.MANIFEST_NAME))
    front, body = M.read_model_card(got.get(M.README_NAME))
    existing = None
    if manifest is not None:
        existing = _live_version(catalog, manifest["file"]["hashes"]["sha256"])
    if existing is not None:
        evidence = _load_evidence(catalog, target, commit, manifest, dest, token, got, existing.sha256)
        heads = _branch_heads(target, token) if aliases else {}
        result = HubPullResult(existing, target.repo_id, target.endpoint, target.revision, commit,
                               already_present=True, note=f"already in the catalog as {existing.ref}")
        _store_evidence(catalog, evidence, manifest, existing, result)
        _apply_aliases(catalog, target, heads, commit, existing, result)
        return result

    resumed = _partial_bytes(dest)
    try:
        commit2, got = pull_revision(target.endpoint, target.repo_id, commit, dest, token, progress=progress)
    except RemoteError as exc:
        # a broken connection: the partial files stay for the next pull to resume
        exc.partial_kept = type(exc) is RemoteError
        raise
    if commit2 != commit:
        raise TransferError(f"pull: {target.repo_id}@{target.revision} moved during the pull", hint="pull again")
    paths = sorted(got)
    named = None
    if file is None and manifest is not None:
        named = M.manifest_version_files(manifest)
    elif file is None and M.plain_repo_adapter(paths) is None:  # a plain repo's recognised pair
        named = [(role, path, None) for role, path in M.plain_repo_pair(paths) or []] or None
    if named is not None:  # a multi-file version (a Wan 2.2 high/low-noise pair)
        return _pull_files(catalog, target, token, dest, commit, got, manifest, front, body, named,
                           name=name, alias=alias, aliases=aliases, resumed=resumed)
    if manifest is not None:
        adapter_path = file or manifest["file"]["path"]
    else:
        adapter_path = file or M.plain_repo_adapter(paths)
    if adapter_path is None or adapter_path not in got:
        raise NotFound(f"pull: cannot tell which file of {target.repo_id}@{target.revision} is the adapter "
                       f"(files: {', '.join(paths[:10])})", hint="pass --file PATH")
    local = got[adapter_path]
    hashes = hash_file(local)
    if manifest is not None:
        want = M.manifest_file_sha256(manifest, adapter_path)
        if hashes.sha256 != want:  # never keep bytes that contradict the manifest
            raise TransferError(f"pull: {adapter_path} from {target.repo_id}@{commit[:12]} has sha256 "
                                f"{hashes.sha256[:16]}…, its loradex.json says {want[:16]}…")
    facts = M.version_facts(manifest, front, body, local)
    adapter_name = _adapter_name(name, manifest, target.repo_id)
    version = None
    if manifest is not None and _version_free(catalog, adapter_name, manifest["version"]):
        version = manifest["version"]
    elif manifest is None and target.revision.startswith("v") and is_semver(target.revision[1:]) \
            and _version_free(catalog, adapter_name, target.revision[1:]):
        version = target.revision[1:]
    evidence = _load_evidence(catalog, target, commit, manifest, dest, token, got, hashes.sha256) \
        if manifest is not None else _Evidence()
    heads = _branch_heads(target, token) if aliases else {}
    hub_extra = {"endpoint": target.endpoint, "repo_id": target.repo_id, "revision": target.revision,
                 "commit": commit, "path": adapter_path, "base_model": facts["base_model"],
                 "remote": target.remote.name if target.remote else None}
    recipe = {"endpoint": target.endpoint, "repo_id": target.repo_id, "revision": target.revision,
              "commit": commit, "path": adapter_path, "sha256": hashes.sha256}
    added = add_file(catalog, local, name=adapter_name, version=version, kind=facts["kind"],
                     base=facts["base"], triggers=facts["triggers"], description=facts["description"],
                     message=f"pulled from {target.repo_id}@{target.revision} ({commit[:12]})",
                     extra={"hub": hub_extra}, link=True, alias=alias,
                     lineage=[{"relation": "pulled_from", "external_parent": _hub_external(target, commit),
                               "recipe": recipe}],
                     progress=None)
    # From here on nothing the remote sent can fail: it was all checked above.
    return _finish_pull(catalog, target, added, commit, got, resumed, manifest, evidence, heads)


def _pull_files(catalog, target: HubTarget, token, dest: Path, commit: str, got: dict, manifest, front, body,
                named: list, *, name, alias, aliases, resumed: int) -> HubPullResult:
    """``_pull_one_into`` for a multi-file version: every named file present and (with a
    manifest) holding the bytes it promises, then ONE version holding them all."""
    from ..catalog.adding import add_files
    from ..catalog.version_files import tidy_file_name
    from ..files.hashing import hash_file

    locals_, shas = [], []
    for role, path, want in named:
        if path not in got:
            raise NotFound(f"pull: {target.repo_id}@{target.revision} lacks {path}, its {role} file")
        sha = hash_file(got[path]).sha256
        if want is not None and sha != want:
            raise TransferError(f"pull: {path} from {target.repo_id}@{commit[:12]} has sha256 {sha[:16]}…, "
                                f"its loradex.json says {want[:16]}…")
        locals_.append(got[path])
        shas.append(sha)
    primary = named[0][1]
    facts = M.version_facts(manifest, front, body, got[primary])
    adapter_name = _adapter_name(name, manifest, target.repo_id)
    version = None
    if manifest is not None and _version_free(catalog, adapter_name, manifest["version"]):
        version = manifest["version"]
    elif manifest is None and target.revision.startswith("v") and is_semver(target.revision[1:]) \
            and _version_free(catalog, adapter_name, target.revision[1:]):
        version = target.revision[1:]
    evidence = _load_evidence(catalog, target, commit, manifest, dest, token, got, shas[0]) \
        if manifest is not None else _Evidence()
    heads = _branch_heads(target, token) if aliases else {}
    paths = [path for _, path, _ in named]
    hub_extra = {"endpoint": target.endpoint, "repo_id": target.repo_id, "revision": target.revision,
                 "commit": commit, "path": primary, "paths": paths, "base_model": facts["base_model"],
                 "remote": target.remote.name if target.remote else None}
    recipe = {"endpoint": target.endpoint, "repo_id": target.repo_id, "revision": target.revision,
              "commit": commit, "path": primary, "sha256": shas[0], "files": dict(zip(paths, shas))}
    added = add_files(catalog, locals_, roles=[role for role, _, _ in named],
                      file_names=[tidy_file_name(p) for p in paths], name=adapter_name, version=version,
                      kind=facts["kind"], base=facts["base"], triggers=facts["triggers"],
                      description=facts["description"],
                      message=f"pulled from {target.repo_id}@{target.revision} ({commit[:12]})",
                      extra={"hub": hub_extra}, link=True, alias=alias,
                      lineage=[{"relation": "pulled_from", "external_parent": _hub_external(target, commit),
                                "recipe": recipe}])
    return _finish_pull(catalog, target, added, commit, got, resumed, manifest, evidence, heads)


def _finish_pull(catalog, target: HubTarget, added, commit: str, got: dict, resumed, manifest, evidence,
                 heads) -> "HubPullResult":
    """After the version is added (one file or several): the result, the evidence that came along,
    the aliases the repo's branches name, and the sync record."""
    result = HubPullResult(catalog.resolve(added.version.ref), target.repo_id, target.endpoint,
                           target.revision, commit, downloaded_bytes=sum(p.stat().st_size for p in got.values()),
                           resumed_from=resumed, had_manifest=manifest is not None, note=added.note)
    _store_evidence(catalog, evidence, manifest, result.version, result)
    _apply_aliases(catalog, target, heads, commit, result.version, result)
    record_sync(catalog, target.remote, result.version.id, "pull", f"{target.repo_id}@{target.revision}", commit)
    return result


MAX_RECORD_IMAGE_BYTES = 64 << 20  # a record's sample image pulled along


@dataclass
class _Evidence:
    """Prompt records (with their images) and the evaluation card a manifest names, read and
    checked before anything is registered."""
    records: list[tuple[dict, bytes | None]] = field(default_factory=list)
    card: dict | None = None


def _checked(path: Path, schema_name: str, where: str) -> dict:
    """A pulled record or card: parsed with caps, valid against loradex's own schema, with an
    ISO ``created_at`` (what storing it reads)."""
    from loradex.schemas import validate

    data = read_json_file(path)
    if not isinstance(data, dict):
        raise UntrustedData(where, "not a JSON object")
    try:
        validate(schema_name, data)
        datetime.fromisoformat(data["created_at"])
    except (LoradexError, ValueError, TypeError) as exc:
        raise UntrustedData(where, " ".join(str(exc).split())[:200]) from None
    return data


def _load_evidence(catalog, target, commit, manifest, dest, token, got, sha256: str) -> _Evidence:
    """The records the catalog lacks and the card, downloaded if not yet and checked. A card for
    other bytes than ``sha256`` (the pulled file) is not this version's and is left out."""
    from ..catalog import records as R
    from .hub_client import pull_revision

    def have_record(record_id: str) -> bool:
        try:
            R.get_record(catalog, record_id)
            return True
        except NotFound:
            return False

    missing = [e for e in manifest.get("records") or [] if not have_record(e["id"])]
    card_path = (manifest.get("card") or {}).get("path")
    wanted = [e["json"] for e in missing] + [e["image"] for e in missing if e.get("image")] + \
             ([card_path] if card_path else [])
    need = [p for p in wanted if p not in got]
    if need:  # MANIFEST_JSON_SCHEMA allows no glob characters: each pattern names one path
        _, more = pull_revision(target.endpoint, target.repo_id, commit, dest, token, allow_patterns=need)
        got = {**got, **more}
    evidence = _Evidence()
    for entry in missing:  # records are immutable and their ids global: one already here is kept
        if entry["json"] not in got:
            continue
        record = _checked(got[entry["json"]], "prompt-record", entry["json"])
        if record["id"] != entry["id"]:
            raise UntrustedData(entry["json"], f"holds record {record['id']}, the manifest says {entry['id']}")
        png = None
        if entry.get("image") in got:
            image = got[entry["image"]]
            if image.stat().st_size > MAX_RECORD_IMAGE_BYTES:
                raise UntrustedData(entry["image"], f"an image over {MAX_RECORD_IMAGE_BYTES:,} bytes")
            png = image.read_bytes()
        evidence.records.append((record, png))
    if card_path in got:
        card = _checked(got[card_path], "eval-card", card_path)
        if card["version"]["sha256"] == sha256:
            evidence.card = card
    return evidence


def _store_evidence(catalog, evidence: _Evidence, manifest, version, result) -> None:
    """Store checked records and card under the pulled version's ref (which may differ from the
    pushed one when renamed or bumped)."""
    from ..catalog import records as R

    pushed_ref = f"{manifest['name']}@{manifest['version']}" if manifest else None
    sha = manifest["file"]["hashes"]["sha256"] if manifest else None
    for record, png in evidence.records:
        for item in record.get("stack") or []:
            if item.get("ref") == pushed_ref and item.get("sha256") == sha:
                item["ref"] = version.ref
        try:
            R.store_record(catalog, record, png)
        except Conflict:  # stored meanwhile by another pull
            continue
        result.records += 1
    if evidence.card is not None:
        card = {**evidence.card, "version": {**evidence.card["version"], "ref": version.ref}}
        try:
            have = R.latest_card(catalog, version.ref).card
        except NotFound:
            have = None
        if have != card:
            R.store_card(catalog, card)
            result.cards += 1


def _branch_heads(target, token) -> dict[str, str]:
    """The repo's branches {name: commit} (fetched before registering: see ``_apply_aliases``)."""
    from huggingface_hub import HfApi

    from .hub_client import _remote_errors

    api = HfApi(endpoint=target.endpoint, token=token or False)
    with _remote_errors(target.endpoint, target.repo_id, bool(token), "pull"):
        state = _remote_refs(api, target.repo_id)
    return (state or ({}, {}))[1]


def _apply_aliases(catalog, target, heads: dict[str, str], commit, version, result) -> None:
    """Branches (other than main) whose head is the pulled commit become aliases of the version.
    An alias the promotion gate refuses (or a branch name that is no alias name) is reported,
    not forced."""
    from ..catalog.operations import MoveAlias

    current = {a.name: a.version for a in catalog.aliases(version.adapter)}
    for branch, head in sorted(heads.items()):
        if head != commit or branch == "main" or current.get(branch) == version.version:
            continue
        try:
            catalog.apply([MoveAlias(version.ref, branch, reason=f"pulled from {target.repo_id} branch {branch}")])
            result.aliases_set.append(branch)
        except LoradexError as exc:
            result.aliases_skipped.append(f"{branch}: {exc}")


register_remote("hf://", puller=pull_hub, pusher=push_hub, kind="hf", hosts=("huggingface.co", "hf.co"))
register_remote("mirror://", puller=pull_hub, pusher=push_hub, kind="mirror")
