"""loradex.merge: math/ (pure tensor functions) ← conventions/ (key conventions, conversions) ←
the catalog operations at this root (merge, extract, bake, recipes, model_weights)."""
