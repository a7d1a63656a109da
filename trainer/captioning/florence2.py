"""``florence2``: Florence-2 captioning (transformers' native ``Florence2ForConditionalGeneration``,
the ``florence-community/Florence-2-*`` checkpoints) with a task prompt — ``<CAPTION>``,
``<DETAILED_CAPTION>`` or ``<MORE_DETAILED_CAPTION>`` (the default, the one trainers use for
natural-language captions); beam search, no sampling."""

from __future__ import annotations

from loradex.registry.errors import UsageError

from . import Captioner, register_captioner
from .sources import load_failed, model_type, quiet_transformers

CAPTION_TASKS = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>")


def load_florence2(source):
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    kind = model_type(source)
    if kind != "florence2":
        raise UsageError(f"{source.id}: a {kind!r} model, not Florence-2 (model_type florence2)",
                         hint="a checkpoint converted for transformers' Florence2ForConditionalGeneration "
                              "(florence-community/Florence-2-base or -large)")
    try:
        with quiet_transformers():
            model = Florence2ForConditionalGeneration.from_pretrained(source.folder, local_files_only=True).eval()
            processor = AutoProcessor.from_pretrained(source.folder, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise load_failed(source, "Florence-2 model", exc) from None
    return model, processor


@register_captioner("florence2")
class Florence2Captioner(Captioner):
    uses = ("task", "max_new_tokens", "num_beams")

    def load(self) -> None:
        if self.settings.task not in CAPTION_TASKS:
            raise UsageError(f"florence2 task {self.settings.task!r} is not a caption task",
                             hint="use one of " + ", ".join(CAPTION_TASKS))
        self.model, self.processor = load_florence2(self.models["caption"])

    def describe(self, images: list) -> list[str]:
        import torch

        s = self.settings
        inputs = self.processor(text=[s.task] * len(images), images=images, return_tensors="pt")
        with torch.no_grad(), quiet_transformers():
            out = self.model.generate(**inputs, max_new_tokens=s.max_new_tokens, num_beams=s.num_beams,
                                      do_sample=False)
        # the caption tasks answer plain text (post_process_generation's "pure_text": the text
        # without <s>/</s>); decoding without special tokens also drops a batch's padding
        return [text.strip() for text in self.processor.batch_decode(out, skip_special_tokens=True)]
