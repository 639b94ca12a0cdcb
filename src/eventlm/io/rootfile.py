"""Which reader a ``.root`` file goes to: eventlm ntuple, CMS NanoAOD or ATLAS PHYSLITE.

:func:`iter_root` opens the file, finds the first tree of :data:`TREE_NAMES` (TTree or RNTuple) and
hands it to the reader of what it holds:

- ``Events`` with ``Particle_pt`` (or an RNTuple field ``Particle``): an eventlm ntuple
  (:mod:`eventlm.io.root`);
- ``Events`` with NanoAOD collections (``Jet_pt``, ``Muon_pt``, ``MET_pt`` ...): CMS NanoAOD
  (:mod:`eventlm.io.nanoaod`);
- ``CollectionTree`` (or the RNTuple ``EventData``): ATLAS PHYSLITE (:mod:`eventlm.io.physlite`).

The readers never import this module or each other: the arrows go from here to them.
"""

from __future__ import annotations

from collections.abc import Iterator

import awkward as ak

from eventlm.errors import EventFormatError
from eventlm.io.root import TREE, is_rntuple_ntuple, iter_ntuple
from eventlm.io.uproot_patch import tree_keys

__all__ = ["AUTO_STEP", "TREE_NAMES", "iter_root", "open_tree"]

#: Trees (TTree or RNTuple) a reader looks for, in order: eventlm ntuples and NanoAOD, then ATLAS
#: PHYSLITE (a TTree ``CollectionTree``, or the RNTuple ``EventData`` of newer files).
TREE_NAMES = (TREE, "CollectionTree", "EventData")
_TREE_CLASSES = ("TTree", "ROOT::RNTuple", "ROOT::Experimental::RNTuple")


def open_tree(path):
    """``(file, name, tree)``: the first of :data:`TREE_NAMES` the file holds (TTree or RNTuple)."""
    import uproot

    try:
        # a local file is memory-mapped (uproot's default source reads it through fsspec, slower)
        f = uproot.open(path, handler=uproot.source.file.MemmapSource)
    except Exception as err:  # noqa: BLE001 - uproot raises many types for a bad file
        raise EventFormatError(path, f"not a readable ROOT file ({type(err).__name__}: {err})") from None
    classes = f.classnames()
    for name in TREE_NAMES:
        if any(k.split(";")[0] == name and c in _TREE_CLASSES for k, c in classes.items()):
            return f, name, f[name]
    f.close()
    found = ", ".join(sorted({k.split(";")[0] for k in classes})) or "nothing"
    other = sorted({c for k, c in classes.items() if k.split(";")[0] == TREE and c not in _TREE_CLASSES})
    if other:  # e.g. a histogram called Events
        raise EventFormatError(path, f"{TREE!r} is a {other[0]}, not a TTree (eventlm reads the TTree {TREE!r})")
    raise EventFormatError(path, f"no TTree {TREE!r} (nor an RNTuple {TREE!r}, nor PHYSLITE's "
                                 f"'CollectionTree'; the file holds: {found})")


#: The chunk size of :func:`iter_root` when none is given: uproot's estimate from the branch sizes.
AUTO_STEP = "128 MB"


def iter_root(
    path, *, step_size: int | str = AUTO_STEP, on_error: str = "raise", report=None,
    nanoaod=None, physlite=None, **options,
) -> Iterator[ak.Array]:
    """Yield events of an eventlm ntuple, a NanoAOD or a PHYSLITE file (TTree or RNTuple) in chunks
    of ``step_size`` entries (or of about that much memory, for a string such as ``"128 MB"``).

    ``nanoaod`` (:class:`eventlm.io.nanoaod.NanoAODOptions`) and ``physlite``
    (:class:`eventlm.io.physlite.PHYSLITEOptions`) apply to files of that kind and are ignored for the
    others; the keywords ``process=``, ``btag_branch=``, ``btag_wp=``, ``btag_era=``, ``met=`` update
    them (``process=`` both) and are refused for an eventlm ntuple.
    """
    f, name, tree = open_tree(path)
    with f:
        keys = tree_keys(tree)
        if name != TREE:
            from eventlm.io.physlite import iter_physlite, options_from

            yield from iter_physlite(path, tree, step_size=step_size, options=options_from(physlite, options),
                                     on_error=on_error, report=report)
            return
        from eventlm.io.nanoaod import is_nanoaod

        if is_nanoaod(keys) and not is_rntuple_ntuple(keys):
            from eventlm.io.nanoaod import iter_nanoaod, options_from

            yield from iter_nanoaod(path, tree, step_size=step_size, options=options_from(nanoaod, options),
                                    on_error=on_error, report=report)
            return
        if options:
            raise TypeError(f"options {sorted(options)} only apply to NanoAOD or PHYSLITE input, not to {path}")
        yield from iter_ntuple(path, f, tree, keys, step_size=step_size, on_error=on_error, report=report)
