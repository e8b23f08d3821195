"""The service's own tables (keys, limits, feeds, watches, alerts, the outbox, ingest jobs), each behind
a small protocol (protocols.py) and opened through one ``connect`` (sqlite.py). Nothing here imports
the background work, the web side or the command line."""
