"""Everything `loradex serve` runs: the app, tokens, the guard, the Civitai v1 API, the mirror router
and hub/ (the Hugging Face protocol). Only cli/ imports it."""
