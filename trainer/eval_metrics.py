"""Evaluation metrics over image/text embeddings, and the embedding models that produce them.

Embedders are registered by name (``EMBEDDERS``) and built from a spec string:
``tiny-clip`` (a random CLIP built in-process: for tests, numbers without meaning), ``clip`` /
``clip:PATH_OR_HUB_ID`` (a transformers CLIP from a local folder or the HF cache, never
downloaded; default ``openai/clip-vit-base-patch32``). Every embedder returns L2-normalised rows,
so a dot product is a cosine similarity.

The metric functions are pure math on those tensors; ``METRIC_DEFINITIONS`` states each one the
way the evaluation card prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

METRIC_DEFINITIONS = {
    "clip_t": "mean cosine(image, text) of samples rendered WITH the adapter and their prompt (tags removed)",
    "clip_t_base": "mean cosine(image, text) of the same prompts and seeds rendered WITHOUT the adapter",
    "style_consistency": "mean pairwise cosine between the image embeddings of all samples with the adapter",
    "style_reference_similarity": "mean cosine between each sample and the normalised centroid of the "
                                  "--references images",
    "subject_consistency": "mean over samples of the highest cosine to any --references image",
    "generalization_variance": "variance across prompts of the per-prompt mean clip_t (details: across "
                               "seeds, and of reference similarity); lower is more stable",
    "memorization": "mean over samples of the highest cosine to any --train-dir image, each image taken both "
                    "as it is and as the base's own VAE reproduces it, decode(encode(x).latent_dist.mean) "
                    "(the closest copy the pipeline can output; for a real VAE ≈ the image itself) (details: "
                    "per-sample maxima, near-duplicates at the threshold, the raw-only and round-trip-only means)",
    "memorization_base": "memorization of the samples rendered without the adapter (what the base alone "
                         "scores against the same training images)",
    "diversity": "mean over prompts of the mean pairwise cosine distance (1 - cos) between its seeds",
    "memorization_pixels": "memorization with pixels instead of an embedding model: mean over samples of the "
                           "highest Pearson correlation of their RGB pixels (all images resized to "
                           "32×32, each centred on its own mean) with any --train-dir image, raw or "
                           "as the base's VAE reproduces it (details as for memorization)",
    "memorization_pixels_base": "memorization_pixels of the samples rendered without the adapter",
}
PIXEL_SIZE = 32
PIXEL_MODEL = f"pixels ({PIXEL_SIZE}x{PIXEL_SIZE} RGB, mean-centred: cosine = Pearson correlation)"


# --- embedders ---------------------------------------------------------------------------------

@dataclass
class Embedder:
    """Wraps a CLIP-like model: ``images(list[PIL]) -> [n, d]``, ``texts(list[str]) -> [n, d]``."""

    name: str
    model_id: str
    model: object
    tokenizer: object
    image_size: int

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    def describe(self) -> dict:
        return {"name": self.name, "model": self.model_id, "dim": self.dim}

    def pixel_values(self, images):
        """CLIP preprocessing: shortest side to ``image_size`` (bicubic), centre crop, normalise."""
        import numpy as np
        import torch
        from PIL import Image

        out = []
        for img in images:
            img = img.convert("RGB")
            scale = self.image_size / min(img.size)
            w, h = max(self.image_size, round(img.width * scale)), max(self.image_size, round(img.height * scale))
            img = img.resize((w, h), Image.Resampling.BICUBIC)
            left, top = (w - self.image_size) // 2, (h - self.image_size) // 2
            img = img.crop((left, top, left + self.image_size, top + self.image_size))
            arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
            mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
            std = torch.tensor(CLIP_STD).view(3, 1, 1)
            out.append((arr - mean) / std)
        return torch.stack(out)

    def images(self, images):
        import torch

        with torch.no_grad():
            feats = self.model.get_image_features(pixel_values=self.pixel_values(images))
        return _normalise(_features(feats))

    def texts(self, texts: list[str]):
        import torch

        batch = self.tokenizer(list(texts), padding="max_length", truncation=True,
                               max_length=self.tokenizer.model_max_length, return_tensors="pt")
        with torch.no_grad():
            feats = self.model.get_text_features(input_ids=batch["input_ids"],
                                                 attention_mask=batch["attention_mask"])
        return _normalise(_features(feats))


def pixel_vectors(images, size: int = PIXEL_SIZE):
    """Each image resized to ``size``² (bicubic), flattened, centred on its own mean and
    L2-normalised: a dot product of two rows is their pixel Pearson correlation."""
    import numpy as np
    import torch
    from PIL import Image

    rows = [np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32).ravel()
            for img in images]
    x = torch.from_numpy(np.stack(rows))
    return _normalise(x - x.mean(dim=1, keepdim=True))


def _features(out):
    # transformers 5 returns a model output whose pooler_output is the projected features
    return out if hasattr(out, "norm") else out.pooler_output


def _normalise(x):
    return x.float() / x.float().norm(dim=-1, keepdim=True).clamp_min(1e-12)


EMBEDDERS: dict[str, Callable[[str | None], Embedder]] = {}


def register_embedder(name: str):
    def deco(fn):
        EMBEDDERS[name] = fn
        return fn

    return deco


def get_embedder(spec: str = "clip") -> Embedder:
    """``NAME`` or ``NAME:ARG`` (e.g. ``clip:/models/clip-vit-b32``, ``tiny-clip:3`` for a seed)."""
    from loradex.registry.errors import UsageError

    name, _, arg = spec.partition(":")
    if name not in EMBEDDERS:
        raise UsageError(f"unknown embedder {name!r}; known: {', '.join(sorted(EMBEDDERS))}")
    return EMBEDDERS[name](arg or None)


@register_embedder("tiny-clip")
def tiny_clip(arg: str | None = None) -> Embedder:
    """A random CLIP (32-wide, 32-px images) with the tiny pipeline's tokenizer; seeded."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from loradex.trainer.tiny_pipeline import build_tiny_tokenizer

    seed = int(arg or 0)
    tok = build_tiny_tokenizer()
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_attention_heads=4,
                num_hidden_layers=2, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                  image_size=32, patch_size=4)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    return Embedder("tiny-clip", f"tiny-clip:{seed} (random, for tests)", model, tok, 32)


@register_embedder("clip")
def transformers_clip(arg: str | None = None) -> Embedder:
    """A transformers CLIP from a local folder or a hub id already in the HF cache."""
    from transformers import CLIPModel, CLIPTokenizer

    from loradex.registry.errors import NotFound

    source = arg or DEFAULT_CLIP
    try:
        model = CLIPModel.from_pretrained(source, local_files_only=True).eval()
        tok = CLIPTokenizer.from_pretrained(source, local_files_only=True)
    except OSError as exc:
        raise NotFound(f"CLIP model {source!r} is not a local folder or in the HF cache: {exc}",
                       hint="pass --embedder clip:/path/to/clip (nothing is downloaded)") from None
    return Embedder("clip", source, model, tok, int(model.config.vision_config.image_size))


# --- metrics (pure functions on normalised embeddings) ---------------------------------------------

def rowwise_cosine(a, b):
    return (a * b).sum(dim=-1)


def mean_pairwise_cosine(emb) -> float:
    """Mean cosine over distinct pairs (i < j); needs ≥ 2 rows."""
    n = emb.shape[0]
    if n < 2:
        raise ValueError("need at least two embeddings for a pairwise mean")
    sims = emb @ emb.T
    return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))


def centroid_similarity(emb, refs):
    """Cosine of each row of ``emb`` to the normalised mean of ``refs``."""
    centre = _normalise(refs.mean(dim=0, keepdim=True))
    return (emb @ centre.T).squeeze(-1)


def max_similarity(emb, refs):
    """For each row of ``emb``, the highest cosine to any row of ``refs``."""
    return (emb @ refs.T).max(dim=-1).values


def population_variance(values) -> float:
    import torch

    t = torch.as_tensor(values, dtype=torch.float64)
    return float(((t - t.mean()) ** 2).mean()) if t.numel() else 0.0


def group_means(values, groups: list[int]) -> dict[int, float]:
    out: dict[int, list[float]] = {}
    for v, g in zip([float(x) for x in values], groups):
        out.setdefault(g, []).append(v)
    return {g: sum(vs) / len(vs) for g, vs in out.items()}


def within_group_variance(values, groups: list[int]) -> float:
    """Mean over groups of the variance inside each group (seed-to-seed spread of one prompt)."""
    by: dict[int, list[float]] = {}
    for v, g in zip([float(x) for x in values], groups):
        by.setdefault(g, []).append(v)
    return sum(population_variance(vs) for vs in by.values()) / len(by)


def diversity(emb, groups: list[int]) -> float:
    """Mean over groups (prompts) with ≥ 2 members of their mean pairwise cosine distance."""
    import torch

    dists = []
    for g in sorted(set(groups)):
        idx = torch.tensor([i for i, x in enumerate(groups) if x == g])
        if len(idx) >= 2:
            dists.append(1.0 - mean_pairwise_cosine(emb[idx]))
    if not dists:
        raise ValueError("diversity needs at least two seeds per prompt")
    return sum(dists) / len(dists)


def image_artifacts(image, *, flat_std: float = 2.0 / 255, clipped_fraction: float = 0.5) -> list[str]:
    """Pixel-level failures: a (near-)flat image, or most pixels clipped at 0 or 255."""
    import numpy as np

    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    problems = []
    if float(arr.std()) < flat_std:
        problems.append(f"flat image (pixel std {arr.std():.4f})")
    clipped = float(((arr <= 0.0) | (arr >= 1.0)).all(axis=-1).mean())
    if clipped > clipped_fraction:
        problems.append(f"{clipped:.0%} of pixels clipped to black/white")
    return problems
