"""Parsing references to catalog versions.

``NAME`` (= ``NAME@latest``), ``NAME@1.2.0``, ``NAME@production``, and hash refs
``sha256:<≥8 hex>``, ``autov2:<hex>``, ``autov3:<hex>``. Remote refs (``hf://``, ``civitai:``,
``mirror://``) are parsed by the remotes, not here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import semver

from ..errors import InvalidName, InvalidRef, InvalidVersion

NAME_RE = re.compile(r"\A[a-z0-9][a-z0-9._-]*\Z")  # \Z, not $: "$" also matches before a final newline
ALIAS_RE = re.compile(r"\A[a-z][a-z0-9._-]*\Z")
HASH_KINDS = {"sha256": 8, "autov2": 8, "autov3": 8, "autov1": 8}
LATEST = "latest"


@dataclass(frozen=True)
class Ref:
    name: str | None = None
    selector: str = LATEST  # a version string, an alias name or "latest"
    hash_kind: str | None = None
    hash_prefix: str | None = None

    @property
    def is_hash(self) -> bool:
        return self.hash_kind is not None

    @property
    def is_version(self) -> bool:
        return not self.is_hash and is_semver(self.selector)

    def __str__(self) -> str:
        if self.is_hash:
            return f"{self.hash_kind}:{self.hash_prefix}"
        return f"{self.name}@{self.selector}"


def is_semver(text: str) -> bool:
    return semver.Version.is_valid(text)


def check_name(name: str) -> str:
    if not NAME_RE.match(name or "") or len(name) > 200:
        raise InvalidName(
            f"invalid adapter name {name!r}",
            hint="use lower-case letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def check_alias(alias: str) -> str:
    if alias == LATEST:
        raise InvalidName("'latest' is reserved: it always means the highest version")
    if not ALIAS_RE.match(alias or "") or len(alias) > 100 or is_semver(alias):
        raise InvalidName(
            f"invalid alias {alias!r}",
            hint="use lower-case letters, digits, '.', '_' or '-', starting with a letter",
        )
    return alias


def parse_version(text: str) -> semver.Version:
    try:
        return semver.Version.parse(text)
    except (ValueError, TypeError):
        raise InvalidVersion(f"{text!r} is not a semantic version", hint="use X.Y.Z, e.g. 1.2.0") from None


def sort_key(version: str) -> str:
    """A string whose lexicographic order is semver precedence (so SQL can take MAX)."""
    v = parse_version(version)
    key = f"{v.major:010d}.{v.minor:010d}.{v.patch:010d}."
    if not v.prerelease:
        return key + "~"  # a release sorts after every pre-release of it
    parts = []
    for ident in v.prerelease.split("."):
        # numeric identifiers sort numerically and before alphanumeric ones
        parts.append(f"0{int(ident):010d}" if ident.isdigit() else f"1{ident}")
    return key + "!".join(parts)


def parse_ref(text: str) -> Ref:
    text = (text or "").strip()
    if not text:
        raise InvalidRef("empty ref", hint="use NAME, NAME@VERSION, NAME@ALIAS or sha256:<hex>")
    head, sep, rest = text.partition(":")
    if sep and head.lower() in HASH_KINDS and "@" not in text:
        prefix = rest.lower()
        if not re.fullmatch(r"[0-9a-f]+", prefix or ""):
            raise InvalidRef(f"{text!r}: a hash ref needs hex digits after '{head}:'")
        if len(prefix) < HASH_KINDS[head.lower()]:
            raise InvalidRef(f"{text!r}: give at least 8 hex digits of the hash")
        return Ref(hash_kind=head.lower(), hash_prefix=prefix)
    name, at, selector = text.partition("@")
    if at and not selector:
        raise InvalidRef(f"{text!r}: nothing after '@'", hint="use NAME@VERSION or NAME@ALIAS")
    if not NAME_RE.match(name):
        raise InvalidRef(f"{text!r} is not a valid ref",
                         hint="use NAME, NAME@VERSION, NAME@ALIAS or sha256:<hex>")
    selector = selector or LATEST
    if not is_semver(selector) and not ALIAS_RE.match(selector):
        raise InvalidRef(f"{text!r}: {selector!r} is neither a version (X.Y.Z) nor an alias name")
    return Ref(name=name, selector=selector)
