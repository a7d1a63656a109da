"""loradex.registry: catalog, blob store, formats, probing, hashing, remotes, server.

Must import without torch: tensor work imports torch inside the functions that need it.
"""
