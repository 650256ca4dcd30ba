"""Argument checks shared by the public functions: numbers given as Python numbers, numpy
scalars or 0-d tensors are accepted; anything else, or a value out of range, is a ``ValueError``
that names the argument, the value and what would be valid."""

from __future__ import annotations

import math
import numbers
from typing import Any


def _scalar(value: Any) -> Any:
    """A numpy scalar or 0-d tensor as a Python number (others unchanged)."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return value


def as_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int (not a bool, not a float), within ``[minimum, maximum]``."""
    v = _scalar(value)
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(v)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        lo = "-∞" if minimum is None else minimum
        hi = "∞" if maximum is None else maximum
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {v}")
    return v


def as_float(name: str, value: Any, lo: float = -math.inf, hi: float = math.inf) -> float:
    """``value`` as a finite float (not a bool) within ``[lo, hi]``."""
    v = _scalar(value)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ValueError(f"{name} must be {_bounds(lo, hi)} (a number), got {value!r}")
    v = float(v)
    if not math.isfinite(v) or not lo <= v <= hi:
        raise ValueError(f"{name} must be {_bounds(lo, hi)}, got {value!r}")
    return v


def _bounds(lo: float, hi: float) -> str:
    return "a finite number" if (lo, hi) == (-math.inf, math.inf) else f"in [{lo:g}, {hi:g}]"


#: optional pieces: what they are for and the command that installs them
OPTIONAL = {
    "pyarrow": ("parquet tables", "pip install 'attribution_nb[parquet]'"),
    "gguf": ("GGUF model files", "pip install 'attribution_nb[gguf]'"),
    "jupyterlab": ("JupyterLab", "pip install 'attribution_nb[notebook]'"),
    "huggingface_hub": ("fetching from the Hugging Face hub", "pip install huggingface_hub"),
}


def require(module: str) -> None:
    """Import ``module`` or raise an ``ImportError`` that names what needs it and how to install it."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        what, command = OPTIONAL[module]
        raise ImportError(
            f"{what} need the optional package {module!r}, which is not installed: {command}"
        ) from None
