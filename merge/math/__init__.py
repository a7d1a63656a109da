"""Pure functions over tensors (merge methods, low-rank SVD, resize, LyCORIS math). Imports no other
loradex module but registry.errors."""
