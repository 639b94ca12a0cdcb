"""Optional dependencies: which extra provides what, and a one-line error when one is missing.

``pip install eventlm`` reads (Dark Machines CSV, eventlm ROOT ntuples, Parquet), tokenizes, trains,
scores and writes. The extras add:

========== ============================================ ==========================================
extra      packages                                     for
========== ============================================ ==========================================
nanoaod    coffea                                       reading CMS NanoAOD and ATLAS PHYSLITE
plots      matplotlib, mplhep                           loss curves, confusion matrices, figures
analysis   nanoaod + plots + hist, scikit-learn, zuko   ``eventlm analyze``, ``eventlm demo``, the
                                                        coffea processor, baselines, studies
dask       dask.distributed                             ``eventlm analyze --executor dask``
onnx       onnx, onnxscript, onnxruntime                ``eventlm export``
generate   pythia8mc, fastjet                           ``eventlm generate``
all        every extra above
========== ============================================ ==========================================

::

    from eventlm.extras import require
    coffea = require("coffea", "nanoaod", "reading NanoAOD")   # or MissingExtraError in one line
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from eventlm.errors import MissingExtraError

__all__ = ["EXTRAS", "available", "missing_of", "require", "require_extra"]

#: The importable packages each extra installs (``pip install 'eventlm[<extra>]'``).
EXTRAS = {
    "nanoaod": ("coffea",),
    "plots": ("matplotlib", "mplhep"),
    "analysis": ("coffea", "matplotlib", "mplhep", "hist", "sklearn", "zuko"),
    "dask": ("distributed",),
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "generate": ("pythia8mc", "fastjet"),
}


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``; where its package is not installed, a :class:`MissingExtraError` saying
    what ``purpose`` needs and which extra to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        top = module.split(".")[0]
        if err.name is None or err.name.split(".")[0] != top:
            raise  # the package is there but something inside it is broken: not ours to hide
        raise MissingExtraError(f"{purpose} needs {top}, which is not installed: pip install 'eventlm[{extra}]'",
                                name=top) from None


def require_extra(extra: str, purpose: str) -> None:
    """Check that every package of ``extra`` is installed, before any work starts; else a
    :class:`MissingExtraError` naming the missing packages and the extra."""
    missing = missing_of(extra)
    if missing:
        raise MissingExtraError(f"{purpose} needs {', '.join(missing)}, not installed: pip install 'eventlm[{extra}]'",
                                name=missing[0])


def missing_of(extra: str) -> list[str]:
    """The packages of ``extra`` that are not installed (empty: the extra is there)."""
    return [m for m in EXTRAS[extra] if not available(m)]


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module.split(".")[0]) is not None
