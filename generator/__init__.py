"""Simulated sensor fleet, real-data replay, fault injection and producers."""
