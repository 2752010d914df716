"""qedge.spectral."""
