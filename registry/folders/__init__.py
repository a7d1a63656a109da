"""A1111/ComfyUI/InvokeAI folders: import, export and sync-folder. Stands on the catalog."""
