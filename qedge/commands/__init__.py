"""qedge.commands."""
