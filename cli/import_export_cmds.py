"""``import``, ``export``, ``convert`` and ``sync-folder``: moving adapters between loradex and
webui model folders (A1111, ComfyUI, InvokeAI)."""

from __future__ import annotations


def register(app) -> None:
    """Commands are added below as their library functions land."""
