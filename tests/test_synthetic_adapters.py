"""The synthetic adapters used by the demo and tests match the tiny SD1 pipeline exactly."""

from __future__ import annotations

from loradex.merge.synthetic_adapters import TINY_SD1_MODULES


def test_tiny_sd1_module_table_matches_the_pipeline():
    from loradex.trainer.tiny_pipeline import build_tiny_sd1_pipeline, kohya_module_shapes

    real = {name: tuple(shape) for name, shape in kohya_module_shapes(build_tiny_sd1_pipeline()).items()}
    assert {k: tuple(v) for k, v in TINY_SD1_MODULES.items()} == real
