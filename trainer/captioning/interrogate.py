"""``interrogate``: CLIP-Interrogator style captions — the caption model's sentence, then the
terms a CLIP model ranks closest to the image from the term lists shipped in ``terms/``: one
medium, one style, one lighting and the ``top_flavours`` best flavours (cosine similarity of the
normalised CLIP image and text embeddings; the bare term is the text, its features computed
once per run). The caption model is a BLIP / BLIP-2 or Florence-2 folder (``--model``), the
ranker a CLIP folder (``--clip-model``); both hashes are recorded.

The result reads ``sentence, medium, style, lighting, flavour, …`` (comma-separated: a word limit
keeps whole parts, the sentence first); a term already in the sentence is not repeated."""

from __future__ import annotations

from importlib import resources

from loradex.registry.errors import UsageError

from . import Captioner, captioner_class, register_captioner
from .sources import load_failed, model_type, quiet_transformers

# (term list, how many of its best terms are kept; None: settings.top_flavours)
TERM_LISTS = (("mediums", 1), ("styles", 1), ("lighting", 1), ("flavours", None))
SENTENCE_CAPTIONERS = {"blip": "blip", "blip-2": "blip", "florence2": "florence2"}  # model_type → captioner
MAX_TERMS = 10_000


def term_list(name: str) -> list[str]:
    """The terms of ``terms/<name>.txt`` (one per line, ``#`` comments)."""
    text = resources.files(__package__).joinpath("terms", f"{name}.txt").read_text(encoding="utf-8")
    terms = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return terms[:MAX_TERMS]


def rank_terms(image_features, text_features, k: int) -> list[list[int]]:
    """For each image row, the indices of the ``k`` text rows of highest cosine similarity
    (rows need not be normalised; ties keep list order)."""
    import torch

    img = image_features.float() / image_features.float().norm(dim=-1, keepdim=True).clamp_min(1e-12)
    txt = text_features.float() / text_features.float().norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sims = img @ txt.T
    k = min(k, txt.shape[0])
    # a stable sort: equal similarities keep the order of the list
    order = torch.sort(-sims, dim=-1, stable=True).indices[:, :k]
    return order.tolist()


def _pooled(out):
    # transformers 5 returns a model output whose pooler_output holds the projected features
    return out if hasattr(out, "norm") else out.pooler_output


@register_captioner("interrogate")
class InterrogateCaptioner(Captioner):
    roles = ("caption", "clip")
    uses = ("max_new_tokens", "num_beams", "top_flavours")
    tag_style = True

    def load(self) -> None:
        from transformers import AutoProcessor, CLIPModel

        caption = self.models["caption"]
        kind = model_type(caption)
        if kind not in SENTENCE_CAPTIONERS:
            raise UsageError(f"{caption.id}: interrogate needs a BLIP, BLIP-2 or Florence-2 caption model, "
                             f"not {kind!r}")
        self.sentences = captioner_class(SENTENCE_CAPTIONERS[kind])({"caption": caption}, self.settings)
        clip = self.models["clip"]
        try:
            with quiet_transformers():
                self.clip = CLIPModel.from_pretrained(clip.folder, local_files_only=True).eval()
                self.clip_processor = AutoProcessor.from_pretrained(clip.folder, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise load_failed(clip, "CLIP model", exc) from None
        self.lists = [(name, term_list(name), k) for name, k in TERM_LISTS]
        self._text_features = {}

    def text_features(self, name: str, terms: list[str]):
        import torch

        if name not in self._text_features:
            tok = self.clip_processor.tokenizer
            chunks = []
            for start in range(0, len(terms), 64):
                batch = tok(terms[start:start + 64], padding=True, truncation=True, return_tensors="pt")
                with torch.no_grad():
                    chunks.append(_pooled(self.clip.get_text_features(input_ids=batch["input_ids"],
                                                                      attention_mask=batch["attention_mask"])))
            self._text_features[name] = torch.cat(chunks)
        return self._text_features[name]

    def image_features(self, images: list):
        import torch

        pixels = self.clip_processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            return _pooled(self.clip.get_image_features(pixel_values=pixels))

    def describe(self, images: list) -> list[str]:
        sentences = self.sentences.describe(images)
        feats = self.image_features(images)
        parts = [[s] if s else [] for s in sentences]
        for name, terms, k in self.lists:
            k = self.settings.top_flavours if k is None else k
            if k == 0:
                continue
            for row, picked in zip(parts, rank_terms(feats, self.text_features(name, terms), k)):
                sentence = row[0].casefold() if row else ""
                row += [terms[i] for i in picked if terms[i].casefold() not in sentence]
        return [", ".join(row) for row in parts]
