"""qedge.models."""
