"""qedge.data."""
