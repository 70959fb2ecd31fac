"""The user's cache directory: what is in it, and pruning what nothing uses any more."""
