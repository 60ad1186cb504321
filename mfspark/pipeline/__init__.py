"""The nightly pipeline: ingest -> baseline -> train -> evaluate -> recommend into run directories."""
