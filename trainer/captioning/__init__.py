"""Captioners: image → caption text, registered by name (``@register_captioner("blip")``).

``loradex dataset caption`` picks one by name and gives it a model from a local folder or the HF
cache (``sources.resolve_model``: nothing is downloaded, a missing model is a one-line error).
Each captioner module registers itself when imported; ``captioner_class(name)`` imports them:

- ``blip``        BLIP / BLIP-2 image captioning (transformers ``BlipForConditionalGeneration`` /
                  ``Blip2ForConditionalGeneration``), beam search, no sampling;
- ``florence2``   Florence-2 (transformers ``Florence2ForConditionalGeneration``, native since
                  transformers 4.56) with a task prompt such as ``<MORE_DETAILED_CAPTION>``;
- ``interrogate`` CLIP-Interrogator style: the caption model's sentence, then the terms of the
                  packaged term lists (medium, style, flavour, lighting) that a CLIP model ranks
                  closest to the image;
- ``tags``        a booru-style multi-label tagger (a transformers image classifier with a
                  sigmoid head: WD14-style), the tags at or above a threshold, most confident first.

Every caption is recorded with ``Captioner.record()``: captioner, model id, the sha256 of the
model's weight files and the settings that shaped the text, so a caption run is reproducible
and its provenance is visible in the dataset manifest (``caption_source``).
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass

from loradex.registry.errors import UsageError

CAPTIONERS: dict[str, type] = {}
CAPTIONER_MODULES = ("blip", "florence2", "interrogate", "tags")


def register_captioner(name: str):
    def deco(cls):
        cls.name = name
        CAPTIONERS[name] = cls
        return cls

    return deco


def _load_modules() -> None:
    for module in CAPTIONER_MODULES:
        importlib.import_module(f"{__name__}.{module}")


def captioner_names() -> list[str]:
    _load_modules()
    return sorted(CAPTIONERS)


def captioner_class(name: str) -> type:
    _load_modules()
    if name not in CAPTIONERS:
        raise UsageError(f"unknown captioner {name!r}", hint="use one of " + ", ".join(sorted(CAPTIONERS)))
    return CAPTIONERS[name]


@dataclass(frozen=True)
class CaptionSettings:
    """What shapes a caption. ``prefix`` and ``max_words`` apply to every captioner; the others
    only to the captioners that name them in ``Captioner.uses`` (and only those are recorded)."""

    prefix: str = ""
    max_words: int | None = None
    threshold: float = 0.35        # tags: the WD14 taggers' usual general-tag threshold
    max_new_tokens: int = 40       # sentence captioners
    num_beams: int = 3
    task: str = "<MORE_DETAILED_CAPTION>"  # florence2's task prompt
    top_flavours: int = 3          # interrogate: flavour terms appended (medium/style/lighting: 1 each)
    batch_size: int = 8

    def __post_init__(self):
        if self.max_words is not None and self.max_words < 1:
            raise UsageError(f"--max-words must be at least 1, got {self.max_words}")
        if not 0.0 < self.threshold < 1.0:
            raise UsageError(f"--threshold must be between 0 and 1, got {self.threshold}")
        if self.max_new_tokens < 1 or self.num_beams < 1 or self.batch_size < 1 or self.top_flavours < 0:
            raise UsageError("max new tokens, beams and batch size must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self)


class Captioner:
    """Base class. A subclass sets ``roles`` (the models it needs: ``("caption",)`` or more),
    ``uses`` (the settings it reads besides prefix/max_words), ``tag_style`` (its text is
    comma-separated tags: ``--max-words`` keeps whole tags) and implements ``load`` and ``describe``."""

    name = ""
    roles: tuple[str, ...] = ("caption",)
    uses: tuple[str, ...] = ()
    tag_style = False

    def __init__(self, models: dict, settings: CaptionSettings):
        missing = [r for r in self.roles if r not in models]
        if missing:
            raise UsageError(f"captioner {self.name!r} needs a {missing[0]} model",
                             hint="--clip-model PATH_OR_ID" if missing[0] == "clip" else "--model PATH_OR_ID")
        self.models = models      # role → sources.ModelSource
        self.settings = settings
        self.load()

    def load(self) -> None:
        raise NotImplementedError

    def describe(self, images: list) -> list[str]:
        """The raw text for each PIL image (before prefix and word limit)."""
        raise NotImplementedError

    def caption(self, images: list) -> list[str]:
        """Final captions: the raw text limited to ``max_words`` and prefixed."""
        from loradex.registry.catalog.dataset_captions import limit_words, normal_caption, with_prefix

        s = self.settings
        return [with_prefix(limit_words(normal_caption(printable(text)), s.max_words, tags=self.tag_style), s.prefix)
                for text in self.describe([img.convert("RGB") for img in images])]

    def record(self) -> dict:
        """The ``caption_source`` each caption of this run carries."""
        from loradex.trainer.generate import library_versions

        caption = self.models[self.roles[0]]
        settings = {"prefix": self.settings.prefix, "max_words": self.settings.max_words}
        settings.update({k: getattr(self.settings, k) for k in self.uses})
        out = {"kind": "captioner", "captioner": self.name, "model": caption.id,
               "model_sha256": caption.sha256, "settings": settings,
               "libraries": library_versions(("transformers", "torch"))}
        others = {role: {"model": m.id, "model_sha256": m.sha256} for role, m in self.models.items()
                  if role != self.roles[0]}
        if others:
            out["models"] = others
        return out


def printable(text: str) -> str:
    """``text`` without control and unassigned characters (a byte-level tokenizer can decode any
    byte, ESC included; a caption is text a person reads and a trainer tokenizes)."""
    import unicodedata

    return "".join(" " if ch in "\t\n\r" else ch for ch in text
                   if ch in "\t\n\r" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn"))


def load_captioner(name: str, model: str, *, clip_model: str | None = None,
                   settings: CaptionSettings | None = None) -> Captioner:
    """Captioner ``name`` with its models resolved locally (see ``sources.resolve_model``)."""
    from .sources import resolve_model

    cls = captioner_class(name)
    models = {cls.roles[0]: resolve_model(model, f"{name} model")}
    if clip_model is not None:
        if "clip" not in cls.roles:
            raise UsageError(f"captioner {name!r} takes no --clip-model")
        models["clip"] = resolve_model(clip_model, "CLIP model")
    return cls(models, settings or CaptionSettings())
