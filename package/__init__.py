"""loradex: a versioned registry and hub manager for Stable Diffusion adapters."""

__version__ = "0.1.0"
