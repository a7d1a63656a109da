"""ModelSpec (``modelspec.*``) keys for the files loradex writes: converted, merged, resized.

Every such file carries ``modelspec.architecture`` (``<base architecture>/<adapter type>``, the
names of kohya sd-scripts' ``sai_model_spec``), ``modelspec.title``, ``modelspec.trigger_phrase``
(when the adapter has triggers) and ``modelspec.hash_sha256``. The hash is "0x" + sha256 of the
tensor data section (the AutoV3 / kohya "addnet" hash): it does not depend on the metadata, so
``save_safetensors(..., hash_key=HASH_KEY)`` computes it before writing the header.
"""

from __future__ import annotations

from collections.abc import Sequence

from loradex.families import all_families
from loradex.families.vocabulary import modelspec_architecture, normalise

HASH_KEY = "modelspec.hash_sha256"
SPEC_VERSION = "1.0.0"
# Adapter type suffixes of ``modelspec.architecture`` (sai_model_spec's ADAPTER_* names).
LORA = "lora"
TEXTUAL_INVERSION = "textual-inversion"
CHECKPOINT = ""  # a whole model: the bare base architecture, as kohya writes for checkpoints
_KIND_OF_SUFFIX = {LORA: "lora", TEXTUAL_INVERSION: "embedding", CHECKPOINT: "checkpoint"}
# ModelSpec architecture per base family (kohya sd-scripts' sai_model_spec names), from the
# families' vocabulary (``loradex.families.vocabulary.modelspec_architecture``).
MODELSPEC_ARCH = {f.name: arch for f in all_families()
                  if (arch := modelspec_architecture(f.name, "checkpoint")) is not None}


def _same_family(arch: str, base: str) -> bool:
    """Whether an existing architecture string names ``base``'s family: keeps e.g.
    "stable-diffusion-v2-768-v/lora" or "flux-1-schnell/lora", more precise than the family's own."""
    found = normalise(arch, "modelspec")
    return found is not None and found[0] == base


def architecture(base: str | None, adapter: str = LORA, existing: str = "") -> str | None:
    """``modelspec.architecture`` for ``base``; None for an unknown family. An ``existing`` value
    of the same family and adapter type is kept."""
    arch = modelspec_architecture(base, _KIND_OF_SUFFIX.get(adapter, "lora"))
    if arch is None:
        return None
    if adapter != CHECKPOINT and existing.endswith(f"/{adapter}") and _same_family(existing, base):
        return existing
    return arch


def modelspec_metadata(source: dict[str, str], *, base: str | None, title: str,
                       triggers: Sequence[str] = (), adapter: str = LORA) -> dict[str, str]:
    """The ModelSpec keys of a written file (``modelspec.hash_sha256`` is added by the writer:
    pass ``hash_key=HASH_KEY``). ``source``: the metadata of the file it came from, whose
    architecture is kept when it is of the same family and adapter type."""
    meta = {"modelspec.sai_model_spec": SPEC_VERSION}
    if title:
        meta["modelspec.title"] = title
    arch = architecture(base, adapter, source.get("modelspec.architecture", ""))
    if arch:
        meta["modelspec.architecture"] = arch
    if triggers:
        meta["modelspec.trigger_phrase"] = ", ".join(triggers)
    return meta


def source_title(metadata: dict[str, str], fallback: str) -> str:
    """The title a converted file keeps: the source's ModelSpec title, kohya output name, else ``fallback``."""
    return metadata.get("modelspec.title") or metadata.get("ss_output_name") or fallback


def source_triggers(metadata: dict[str, str], tokens: Sequence[str] = ()) -> list[str]:
    """Trigger words the probe would find in the source metadata (and embedding tokens)."""
    from loradex.registry.probe.training_facts import trigger_words

    return trigger_words(metadata, list(tokens))
