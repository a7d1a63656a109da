"""The JSON shapes the ``huggingface_hub`` client parses (ModelInfo, RepoFile/RepoFolder,
GitRefs, GitCommitInfo), built from the server's commits and refs. Field names follow the Hub's
camelCase; see ``huggingface_hub/hf_api.py`` (``ModelInfo.__init__``, ``RepoFile.__init__``,
``list_repo_refs``, ``list_repo_commits``) for the reading side."""

from __future__ import annotations

import hashlib

from ... import untrusted
from .object_store import ObjectStore
from .repo_store import Commit, Refs, TreeEntry

CARD_MAX_BYTES = 1 << 20


def file_json(path: str, entry: TreeEntry) -> dict:
    out = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": path}
    if entry.lfs:
        out["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
    return out


def last_commit_json(commit: Commit) -> dict:
    """The Hub's ``lastCommit`` of an expanded tree or paths-info entry."""
    return {"id": commit.oid, "title": commit.title, "date": commit.date}


def folder_json(commit: Commit, path: str) -> dict:
    return {"type": "directory", "oid": commit.folder_oid(path), "size": 0, "path": path}


def tree_json(commit: Commit, prefix: str, recursive: bool) -> list[dict] | None:
    """Entries under folder ``prefix`` ('' = root); None when ``prefix`` is not a folder."""
    folders = commit.folders()
    if prefix and prefix not in folders:
        return None
    start = prefix + "/" if prefix else ""
    depth = start.count("/")

    def wanted(path: str) -> bool:
        return path.startswith(start) and (recursive or path.count("/") == depth)

    out = [folder_json(commit, f) for f in sorted(folders) if wanted(f)]
    out += [file_json(p, e) for p, e in sorted(commit.tree.items()) if wanted(p)]
    return out


def paths_info_json(commit: Commit, paths: list[str]) -> list[dict]:
    folders = commit.folders()
    out = []
    for path in paths:
        path = path.strip("/")
        if path in commit.tree:
            out.append(file_json(path, commit.tree[path]))
        elif path in folders:
            out.append(folder_json(commit, path))
    return out  # unknown paths are left out, as on the Hub


def card_data(objects: ObjectStore, commit: Commit) -> dict | None:
    """YAML front matter of README.md, or None."""
    entry = commit.tree.get("README.md")
    if entry is None or entry.size > CARD_MAX_BYTES:
        return None
    with objects.open(entry.sha256) as fh:
        text = fh.read().decode("utf-8", "replace")
    try:
        data = parse_front_matter(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def parse_front_matter(text: str):
    """The YAML between a leading ``---`` line and the next ``---`` line (None if absent),
    through ``untrusted.parse_yaml`` (no anchors or aliases, caps on size, depth and nodes);
    ``untrusted.UntrustedData`` (a ValueError) when it is not acceptable YAML."""
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise ValueError("front matter starts with '---' but never ends") from None
    return untrusted.parse_yaml("\n".join(lines[1:end]), "README.md front matter")


def model_info_json(repo_id: str, meta: dict, commit: Commit, objects: ObjectStore, *, blobs: bool) -> dict:
    card = card_data(objects, commit) or {}
    siblings = []
    for path, entry in sorted(commit.tree.items()):
        sibling = {"rfilename": path}
        if blobs:
            sibling.update(size=entry.size, blobId=entry.blob_id)
            if entry.lfs:
                sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": entry.pointer_size}
        siblings.append(sibling)
    tags = card.get("tags") if isinstance(card.get("tags"), list) else []
    return {
        "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
        "id": repo_id,
        "modelId": repo_id,
        "author": repo_id.split("/")[0],
        "sha": commit.oid,
        "lastModified": commit.date,
        "createdAt": meta.get("createdAt"),
        "private": bool(meta.get("private")),
        "disabled": False,
        "gated": False,
        "downloads": 0,
        "likes": 0,
        "tags": [str(t) for t in tags],
        "library_name": card.get("library_name"),
        "pipeline_tag": card.get("pipeline_tag"),
        "cardData": card or None,
        "siblings": siblings,
    }


def refs_json(refs: Refs) -> dict:
    return {
        "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": oid}
                     for n, oid in sorted(refs.branches.items())],
        "converts": [],
        "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": t["target"]}
                 for n, t in sorted(refs.tags.items())],
        "pullRequests": [],
    }


def commit_json(commit: Commit) -> dict:
    return {"id": commit.oid, "title": commit.title, "message": commit.message,
            "authors": [{"user": commit.author}], "date": commit.date}
