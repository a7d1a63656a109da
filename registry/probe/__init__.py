"""Tell what an adapter file is from its header: a registry of probers, one per format family.

Public API: :func:`probe_path`, :func:`explain_path`, :func:`probe_view`, :func:`state_dict_view`,
:func:`register_prober`, :class:`ProbeResult` (``to_dict()`` keys documented in
:mod:`loradex.registry.probe.probing`), :class:`Verdict`, :class:`ProbeFacts`, :class:`HeaderView`.
Importing this package registers the built-in probers; it does not import torch.
"""

from __future__ import annotations

# Registration order breaks ties between equally good verdicts: adapters first, checkpoints last.
from . import lora_formats  # noqa: F401, I001
from . import lycoris_format  # noqa: F401
from . import embedding_formats  # noqa: F401
from . import checkpoint_format  # noqa: F401
from .facts import PROBERS, HeaderView, Module, ProbeFacts, TensorMeta, Verdict, register_prober
from .probing import (
    ProbeResult,
    explain_path,
    explain_view,
    probe_path,
    probe_view,
    safetensors_view,
    state_dict_view,
    view_for_path,
)

__all__ = [
    "PROBERS", "HeaderView", "Module", "ProbeFacts", "ProbeResult", "TensorMeta", "Verdict", "explain_path",
    "explain_view", "probe_path", "probe_view", "register_prober", "safetensors_view", "state_dict_view",
    "view_for_path",
]
