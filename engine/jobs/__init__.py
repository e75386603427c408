"""Jobs: the registry and options, the pipeline, recogniser provisioning, batch search."""
