"""qedge.calib: torch-free INT8 calibration (representative-set selection, ORT calibration readers)."""

from qedge.calib.quantize import quantize_int8
from qedge.calib.reader import FeatureReader, features_array
from qedge.calib.select import held_out, select_calibration, split_dataset, stratified

__all__ = ["quantize_int8", "FeatureReader", "features_array", "held_out", "select_calibration",
           "split_dataset", "stratified"]
