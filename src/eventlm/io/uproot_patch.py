"""The one place eventlm reaches into uproot's internals: RNTuple field names in linear time.

uproot 5.7 finds the sub-fields of each RNTuple field by scanning all field records, quadratic in their
number: building the form of a NanoAOD RNTuple (2300 fields) took 9 s of the 9.5 s of reading 40
events, and 0.2 s with :func:`index_rntuple_fields`. It sets the private ``_fields`` attribute of
uproot's field objects to what uproot's own ``fields`` property would compute, and does nothing where
uproot's internals differ (another version).

When it can go: once uproot builds the sub-field lists in one pass itself (check by timing
``tree_keys`` on ``tests/data/nano_dy_rntuple.root`` with this patch removed; the readers' tests of
RNTuple input then pass unchanged). Delete :func:`index_rntuple_fields` and its call in
:func:`tree_keys`, nothing else.
"""

from __future__ import annotations

__all__ = ["index_rntuple_fields", "is_rntuple", "tree_keys"]


def is_rntuple(tree) -> bool:
    import uproot

    return isinstance(tree, uproot.behaviors.RNTuple.RNTuple)


def tree_keys(tree) -> list[str]:
    """The branch (TTree) or top-level field (RNTuple) names; an RNTuple's recursive ``keys()`` takes
    seconds for a NanoAOD, its top-level names (which include NanoAOD's ``Jet_pt`` ...) do not."""
    if is_rntuple(tree):
        index_rntuple_fields(tree)
        return list(tree.keys(recursive=False))
    return list(tree.keys())


def index_rntuple_fields(tree) -> None:
    """Give every field of an RNTuple its list of sub-fields in one pass over the field records
    (see the module docstring)."""
    try:
        records = tree.field_records
        fields = tree.all_fields
        children: dict[int, list[int]] = {}
        for i, record in enumerate(records):
            if record.parent_field_id != i:
                children.setdefault(record.parent_field_id, []).append(i)

        def sub_fields(i: int) -> list:
            out = []
            for j in children.get(i, []):
                out.extend(sub_fields(j) if fields[j].is_anonymous else [fields[j]])
            return out

        for i, fld in enumerate(fields):
            if getattr(fld, "_fields", None) is None:
                fld._fields = sub_fields(i)
    except (AttributeError, IndexError, TypeError):
        return
