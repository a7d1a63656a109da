"""HunyuanVideo spellings (musubi-tuner: ``hunyuan-video`` architecture; Civitai group HyV1)."""

from ..vocabulary import Vocabulary

VOCABULARIES = (Vocabulary(
    family="hunyuan-video", civitai=("Hunyuan Video",), air="hyv1",
    modelspec=("hunyuan-video",), hub=("hunyuanvideo-community/HunyuanVideo", "tencent/HunyuanVideo"),
    hints=(r"hunyuan[-_ ]?video",),
),)
