"""The nightly pipeline: ingest -> baseline -> train -> train_lists -> evaluate -> recommend into run directories."""
