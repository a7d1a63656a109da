"""loradex.registry: everything that needs no torch, in wings that each stand only on the ones
before them: files/ ← probe/ ← catalog/ ← remotes/ ← folders/ ← server/ (see the README's Layout).
errors, paths, crashpoints and untrusted sit at the root: every wing uses them.

Must import without torch: tensor work imports torch inside the functions that need it.
"""
