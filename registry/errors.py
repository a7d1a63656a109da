"""Every error loradex raises on purpose.

Each class subclasses the built-in it resembles, so callers can catch either. The CLI maps any
``LoradexError`` to one line on stderr and exit code 1 (see ``loradex.cli.main``); anything else
is a bug and shows a traceback only with ``LORADEX_DEBUG=1``.
Messages say what happened and what to do.
"""

from __future__ import annotations


class LoradexError(Exception):
    """Base class: a problem the user can act on."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


# --- looking things up -------------------------------------------------------------------
class NotFound(LoradexError, LookupError):
    """A ref, adapter, version, alias, record or file that does not exist."""


class AmbiguousRef(LoradexError, LookupError):
    """A ref (hash prefix, name) that matches more than one thing."""


class InvalidRef(LoradexError, ValueError):
    """A ref string that cannot be parsed."""


# --- files ---------------------------------------------------------------------------------
class InvalidFile(LoradexError, ValueError):
    """A file that is not what it claims to be (truncated, not safetensors, bad header...)."""

    def __init__(self, path, message: str, *, hint: str | None = None):
        super().__init__(f"{path}: {message}", hint=hint)
        self.path = str(path)


class UnsupportedFormat(InvalidFile):
    """A valid file of a kind loradex does not (yet) handle in this operation."""


class UnsafePickle(InvalidFile):
    """A pickle that is refused: not opted in, or imports globals outside the allow-list."""


class CoverageError(LoradexError, ValueError):
    """A conversion or load that would silently drop tensors."""

    def __init__(self, message: str, dropped: list[str], *, hint: str | None = None):
        shown = ", ".join(dropped[:5]) + (f" … (+{len(dropped) - 5} more)" if len(dropped) > 5 else "")
        super().__init__(f"{message}: {len(dropped)} key(s) would be dropped: {shown}", hint=hint)
        self.dropped = list(dropped)


class IncompatibleAdapters(LoradexError, ValueError):
    """Adapters that cannot be combined (base family, shapes)."""


class NonFiniteValues(LoradexError, ValueError):
    """NaN or ±Inf in a merge / resize input or result, not allowed by ``--allow-nonfinite``."""


class DecompositionFailed(LoradexError, ArithmeticError):
    """A module's SVD / eigendecomposition did not converge (typically NaN/Inf kept by --allow-nonfinite)."""


# --- catalog -------------------------------------------------------------------------------
class CatalogError(LoradexError):
    """Catalog-level problems."""


class AlreadyExists(CatalogError, ValueError):
    """A version number or blob that is already registered."""


class Conflict(CatalogError, RuntimeError):
    """An operation refused because of the current state (alias points at a version...)."""


class InvalidName(CatalogError, ValueError):
    """An adapter or alias name that does not match the allowed pattern."""


class InvalidVersion(CatalogError, ValueError):
    """A version string that is not semver."""


class DatabaseError(CatalogError, RuntimeError):
    """The database failed, or stayed locked/conflicting after every retry."""


class IntegrityError(CatalogError):
    """verify found a blob or row that is broken."""


class HomeError(CatalogError, OSError):
    """The loradex home itself is unusable (not a folder, cannot be created or read)."""


class FolderError(LoradexError):
    """A webui folder loradex cannot write into (permissions, read-only, full): exit 1."""


# --- input ----------------------------------------------------------------------------------
class UsageError(LoradexError, ValueError):
    """Bad arguments or configuration (exit code 2)."""

    exit_code = 2


class PromptSyntaxError(LoradexError, ValueError):
    """A malformed ``<lora:…>`` tag; carries the column (1-based)."""

    def __init__(self, prompt: str, column: int, message: str):
        super().__init__(f"prompt column {column}: {message}")
        self.prompt = prompt
        self.column = column


class SchemaError(LoradexError, ValueError):
    """A record or card that does not validate against its JSON Schema."""


# --- remotes -------------------------------------------------------------------------------
class RemoteError(LoradexError):
    """A remote (Hub, Civitai, mirror) answered with an error."""


class AuthError(RemoteError, PermissionError):
    """401/403 from a remote."""


class TransferError(RemoteError, IOError):
    """A download or upload that failed or delivered the wrong bytes."""


class UntrustedData(RemoteError, ValueError):
    """Data from outside that does not have the declared shape (exit 1)."""

    def __init__(self, source: str, message: str, *, hint: str | None = None):
        super().__init__(f"{source}: {message}", hint=hint)
        self.source = source
