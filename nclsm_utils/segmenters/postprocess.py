"""Post-processing steps as data: what a variant runs after its network, and how it is described.

A variant (``stardist+refine``) builds its steps from its params once, as a list of
:class:`Step`; :func:`run_steps` applies them in order and :func:`describe_steps` lists them,
so the methods page shows exactly what ran.

>>> import numpy as np
>>> from nclsm_utils.segmenters.base import remove_small
>>> steps = [Step("remove_small", remove_small, {"min_area": 3}, takes_image=False)]
>>> labels = np.array([[1, 1, 0], [1, 2, 0]])
>>> run_steps(labels, None, steps).tolist()
[[1, 1, 0], [1, 0, 0]]
>>> describe_steps(steps)
[{'step': 'remove_small', 'parameters': 'min_area = 3'}]
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Step:
    """One post-processing step: ``func(labels, image, **kwargs)`` (``func(labels, **kwargs)``
    when ``takes_image`` is False) returning a label image."""

    name: str
    func: Callable
    kwargs: dict
    takes_image: bool = True


def run_steps(labels: np.ndarray, image, steps) -> np.ndarray:
    """Apply ``steps`` in order to ``labels`` (``image``: the working image they may read)."""
    for step in steps:
        labels = (step.func(labels, image, **step.kwargs) if step.takes_image
                  else step.func(labels, **step.kwargs))
    return labels


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def describe_steps(steps) -> list[dict]:
    """``[{"step": name, "parameters": "a = 1, b = 2"}, ...]`` in call order."""
    return [{"step": step.name,
             "parameters": ", ".join(f"{k} = {_value(v)}" for k, v in step.kwargs.items())
             or "none"} for step in steps]
