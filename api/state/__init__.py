"""The service's state and background work: keys, limits, ingest jobs, feeds, watches and the data folder,
all in ``service.sqlite`` beside the index."""
