"""Segmentation methods behind one interface (see :mod:`.base`).

>>> from nclsm_utils.segmenters import get_segmenter, known_methods
>>> known_methods()  # doctest: +SKIP
['cellpose', 'external', 'mitocyto', 'stardist', 'stardist+refine', 'unet', 'unet2', 'external:<folder>']
"""
from .base import (BENCHMARK_METHODS, REGISTRY, PretrainedUnavailable, Segmenter,  # noqa: F401
                   SegmenterError, get_segmenter, known_methods, predict_tiled, register)

_MODULES = ("mitocyto_seg", "cellpose_seg", "stardist_seg", "unet", "external")


def _import_all():
    import importlib

    for module in _MODULES:
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as error:  # a module not written yet / optional dependency
            if error.name and error.name.endswith(module):
                continue
            raise


_import_all()
_load_all = True
