"""SD 2.x's pipeline aspect: the same diffusers pipeline as SD 1.x, told apart by its 1024-wide
OpenCLIP ViT-H text encoder. No tiny pipeline (the SD1 one covers the same code paths)."""

from __future__ import annotations

from ..sd1 import pipeline as _sd1

PIPELINE_CLASS = _sd1.PIPELINE_CLASS
PIPELINE_CLASSES = _sd1.PIPELINE_CLASSES
DENOISER = "unet"
OBJECTIVE = "epsilon"  # 768-v checkpoints say v_prediction in their scheduler config
GUIDANCE = "classifier-free"
NEGATIVE_PROMPT = True
DEFAULTS = dict(_sd1.DEFAULTS)
PROMPT_FIELDS: dict = {}
SCHEDULER_FIELDS: tuple = ()
# a key prefix of the original single-file (ldm / sgm) layout that only this family has
SINGLE_FILE_MARKERS = ("cond_stage_model.model.",)


def matches(pipe) -> bool:
    return not _sd1.matches(pipe)
