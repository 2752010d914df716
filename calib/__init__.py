"""qedge.calib: torch-free INT8 calibration (representative-set selection, ORT calibration readers)."""
