"""``blip``: BLIP and BLIP-2 image captioning through transformers (beam search, no sampling,
so the same model and settings give the same sentence)."""

from __future__ import annotations

from loradex.registry.errors import UsageError

from . import Captioner, register_captioner
from .sources import load_failed, model_type, quiet_transformers

# config.json model_type → (model class, processor class) in transformers
BLIP_CLASSES = {
    "blip": ("BlipForConditionalGeneration", "BlipProcessor"),
    "blip-2": ("Blip2ForConditionalGeneration", "Blip2Processor"),
}


def load_blip(source):
    """(model, processor) of a BLIP / BLIP-2 folder, read locally, in eval mode."""
    import transformers

    kind = model_type(source)
    if kind not in BLIP_CLASSES:
        raise UsageError(f"{source.id}: a {kind!r} model, not BLIP (model_type blip or blip-2)",
                         hint="use the captioner that fits the model (--captioner florence2, tags, …)")
    model_cls, processor_cls = (getattr(transformers, n) for n in BLIP_CLASSES[kind])
    try:
        with quiet_transformers():
            model = model_cls.from_pretrained(source.folder, local_files_only=True).eval()
            processor = processor_cls.from_pretrained(source.folder, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise load_failed(source, "BLIP captioning model", exc) from None
    return model, processor


def blip_sentences(model, processor, images: list, *, max_new_tokens: int, num_beams: int) -> list[str]:
    import torch

    inputs = processor(images=images, return_tensors="pt")
    with torch.no_grad(), quiet_transformers():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
    return [text.strip() for text in processor.batch_decode(out, skip_special_tokens=True)]


@register_captioner("blip")
class BlipCaptioner(Captioner):
    uses = ("max_new_tokens", "num_beams")

    def load(self) -> None:
        self.model, self.processor = load_blip(self.models["caption"])

    def describe(self, images: list) -> list[str]:
        s = self.settings
        return blip_sentences(self.model, self.processor, images, max_new_tokens=s.max_new_tokens,
                              num_beams=s.num_beams)
