"""nclsm: benchmark skeletal-muscle fibre segmentation against the NCL-SM ground truth."""
__version__ = "0.1.0"
