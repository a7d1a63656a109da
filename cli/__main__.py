"""``python -m loradex.cli …`` — the console script's entry point, e.g. for
``accelerate launch -m loradex.cli train lora …``."""

from loradex.cli.main import main

main()
