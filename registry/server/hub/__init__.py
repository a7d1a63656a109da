"""A Hugging Face Hub-compatible HTTP server (the protocol subset ``huggingface_hub`` uses to
create repos, commit regular and LFS files, tag, branch and download), storing repos under
``<root>/hub/``. ``create_app`` gives the FastAPI app for ``loradex serve``; ``serve_in_thread``
runs it for tests."""

from .app import TokenAuth, create_app
from .serving import serve_in_thread

__all__ = ["TokenAuth", "create_app", "serve_in_thread"]
