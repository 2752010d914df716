"""qedge.compress."""
