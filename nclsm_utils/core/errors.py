"""The package's one error base: every error nclsm raises on purpose is an :class:`NclsmError`.

Each subclass keeps its meaning, its message and its built-in base (a bad input file is a
``ValueError``, a method that cannot run a ``RuntimeError``), so ``except ValueError`` code
keeps working while ``except NclsmError`` catches everything the package raises on purpose:

>>> from nclsm_utils.core.errors import NclsmError
>>> from nclsm_utils.core.io import DataError
>>> issubclass(DataError, NclsmError), issubclass(DataError, ValueError)
(True, True)
"""
from __future__ import annotations


class NclsmError(Exception):
    """Base of the package's errors; messages name the file or setting and the fix."""


def one_line(error: BaseException) -> str:
    """An error as one line: the message of the package's own errors (they name the file and
    the fix), ``Type: message`` for any other.

    >>> one_line(NclsmError("a.tiff:  bad   mask")), one_line(KeyError("x"))
    ('a.tiff: bad mask', "KeyError: 'x'")
    """
    text = " ".join(str(error).split())
    if isinstance(error, NclsmError):
        return text
    return f"{type(error).__name__}: {text}"
