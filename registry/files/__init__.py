"""Bytes on disk: the blob store, atomic writes, hashing, safetensors header and writer, sniffing and
the pickle scan. Imports nothing of loradex above it."""
