"""``tags``: a booru-style tagger — a multi-label image classifier with a sigmoid head (the WD14
family; transformers ports such as ``p1atdev/wd-swinv2-tagger-v3-hf``) loaded with
``AutoModelForImageClassification``. Each label's probability is ``sigmoid(logit)``; the tags at
or above ``--threshold`` are written most confident first, comma-separated, with ``_`` read as
a space (``long_hair`` → ``long hair``; short emoticon tags such as ``^_^`` are kept).

Labels come from the model's ``config.json`` ``id2label``, or from a WD14 ``selected_tags.csv``
beside it (``tag_id,name,category,count``, one row per output) when present; rating tags
(category 9: general, sensitive, …) are then left out. ONNX taggers are not read: onnxruntime is
not a loradex dependency (convert the tagger to a transformers folder, or use a port)."""

from __future__ import annotations

import csv
import io

from loradex.registry.errors import InvalidFile

from . import Captioner, register_captioner
from .sources import load_failed, quiet_transformers

RATING_CATEGORY = "9"
MAX_TAGS_CSV_BYTES = 8 << 20
MAX_TAG_CHARS = 200


def tag_text(label: str) -> str:
    return label.replace("_", " ") if len(label) > 3 else label


def read_selected_tags(path, num_labels: int) -> tuple[list[str], set[int]]:
    """(label per output, indices of rating tags) from a WD14 ``selected_tags.csv``."""
    data = path.read_bytes()
    if len(data) > MAX_TAGS_CSV_BYTES:
        raise InvalidFile(path, f"is larger than {MAX_TAGS_CSV_BYTES} bytes")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8", errors="replace"))))
    if not rows or "name" not in rows[0]:
        raise InvalidFile(path, "has no 'name' column (expected WD14's tag_id,name,category,count)")
    if len(rows) != num_labels:
        raise InvalidFile(path, f"lists {len(rows)} tags; the model has {num_labels} outputs")
    names = [(r.get("name") or "")[:MAX_TAG_CHARS] for r in rows]
    ratings = {i for i, r in enumerate(rows) if (r.get("category") or "").strip() == RATING_CATEGORY}
    return names, ratings


@register_captioner("tags")
class TagCaptioner(Captioner):
    uses = ("threshold",)
    tag_style = True

    def load(self) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        source = self.models["caption"]
        try:
            with quiet_transformers():
                self.model = AutoModelForImageClassification.from_pretrained(source.folder, local_files_only=True).eval()
                self.processor = AutoImageProcessor.from_pretrained(source.folder, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise load_failed(source, "tagger (image classifier)", exc) from None
        n = int(self.model.config.num_labels)
        csv_path = source.folder / "selected_tags.csv"
        if csv_path.is_file():
            self.labels, self.skip = read_selected_tags(csv_path, n)
        else:
            id2label = self.model.config.id2label or {}
            self.labels = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}")))[:MAX_TAG_CHARS] for i in range(n)]
            self.skip = set()

    def scores(self, images: list):
        """sigmoid probabilities, one row per image (float32)."""
        import torch

        inputs = self.processor(images=images, return_tensors="pt")
        with torch.no_grad():
            logits = self.model(**inputs).logits
        return torch.sigmoid(logits.float())

    def describe(self, images: list) -> list[str]:
        probs = self.scores(images)
        out = []
        for row in probs.tolist():
            ranked = sorted(((p, i) for i, p in enumerate(row) if p >= self.settings.threshold and i not in self.skip),
                            key=lambda t: (-t[0], t[1]))
            out.append(", ".join(tag_text(self.labels[i]) for _, i in ranked))
        return out
