"""Wan 2.1 / 2.2 spellings, one vocabulary per width (1.3B, 5B, 14B).

A spelling that names Wan without a size (musubi-tuner's ``wan2.1`` architecture, Civitai's bare
"Wan Video") names no family here: the probe tells the width from the tensors.
"""

from ..vocabulary import Variant, Vocabulary

VOCABULARIES = (
    Vocabulary(
        family="wan-1.3b", civitai=("Wan Video 1.3B t2v",), air="wanvideo1_3b_t2v",
        modelspec=("wan2.1-t2v-1.3b",),
        hub=("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "Wan-AI/Wan2.1-T2V-1.3B"),
        hints=(r"wan.{0,30}(?<![0-9.])1[._]3b",),
        variants=(Variant("2.1-t2v", "Wan 2.1 T2V 1.3B", civitai=("Wan Video 1.3B t2v",),
                          hints=(r"t2v",)),),
    ),
    Vocabulary(
        family="wan-5b", civitai=("Wan Video 2.2 TI2V-5B",), air="wanvideo-22-ti2v-5b",
        modelspec=("wan2.2-ti2v-5b",),
        hub=("Wan-AI/Wan2.2-TI2V-5B-Diffusers", "Wan-AI/Wan2.2-TI2V-5B"),
        hints=(r"wan.{0,30}(?<![0-9.])5b", r"ti2v[-_ ]?5b"),
        variants=(Variant("2.2-ti2v", "Wan 2.2 TI2V 5B", civitai=("Wan Video 2.2 TI2V-5B",), hints=(r"ti2v",)),),
    ),
    Vocabulary(
        family="wan-14b", civitai=("Wan Video 14B t2v",), air="wanvideo14b_t2v",
        modelspec=("wan2.1-t2v-14b",),
        hub=("Wan-AI/Wan2.1-T2V-14B-Diffusers", "Wan-AI/Wan2.1-T2V-14B"),
        hints=(r"wan.{0,30}(?<![0-9.])a?14b",),
        variants=(
            Variant("2.1-t2v", "Wan 2.1 T2V 14B", civitai=("Wan Video 14B t2v",), air="wanvideo14b_t2v",
                    hub=("Wan-AI/Wan2.1-T2V-14B-Diffusers",), hints=(r"2[._]?1.{0,20}t2v",)),
            Variant("2.1-i2v-480p", "Wan 2.1 I2V 14B 480p", civitai=("Wan Video 14B i2v 480p",),
                    air="wanvideo14b_i2v_480p", hub=("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",),
                    hints=(r"i2v.{0,30}480",)),
            Variant("2.1-i2v-720p", "Wan 2.1 I2V 14B 720p", civitai=("Wan Video 14B i2v 720p",),
                    air="wanvideo14b_i2v_720p", hub=("Wan-AI/Wan2.1-I2V-14B-720P-Diffusers",),
                    hints=(r"i2v.{0,30}720",)),
            Variant("2.2-t2v", "Wan 2.2 T2V A14B", civitai=("Wan Video 2.2 T2V-A14B",), air="wanvideo-22-t2v-a14b",
                    hub=("Wan-AI/Wan2.2-T2V-A14B-Diffusers", "Wan-AI/Wan2.2-T2V-A14B"),
                    hints=(r"2[._]?2.{0,20}t2v", r"t2v[-_ ]?a14b")),
            Variant("2.2-i2v", "Wan 2.2 I2V A14B", civitai=("Wan Video 2.2 I2V-A14B",), air="wanvideo-22-i2v-a14b",
                    hub=("Wan-AI/Wan2.2-I2V-A14B-Diffusers", "Wan-AI/Wan2.2-I2V-A14B"),
                    hints=(r"2[._]?2.{0,20}i2v", r"i2v[-_ ]?a14b")),
        ),
    ),
)
