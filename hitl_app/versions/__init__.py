"""Published model versions: manifests, the registry and the pointer to the serving version."""
