"""Composition root: configuration, wiring, server lifecycle and metrics."""
