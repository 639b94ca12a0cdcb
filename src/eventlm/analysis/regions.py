"""Named event selections (regions) written in the analysis config, not in code.

A region is either a selection string in a small, safe expression language, or per-variable bounds::

    [regions.CR]
    selection = "4 <= n_jets <= 5"

    [regions.SR]
    selection = "n_jets >= 6 and n_bjets >= 2"

    [regions.boosted]
    min = { lead_jet_pt = 200, met = 100 }   # inclusive lower bounds
    max = { n_leptons = 0 }                  # inclusive upper bounds

The language: event variables by name (see ``eventlm.analysis.features.VARIABLES``) and the NanoAOD
trigger and MET-filter bits by branch name (``HLT_IsoMu24``, ``Flag_goodVertices``: read from the
files, true or false), numbers, the
comparisons ``< <= > >= == !=`` (chained too: ``4 <= n_jets <= 5``), arithmetic ``+ - * /``,
``and``, ``or``, ``not`` and parentheses. Anything else (calls, attributes, subscripts, strings) is
rejected when the config is read, with the offending text. It is parsed with Python's ``ast`` and
evaluated on numpy arrays; nothing is ever passed to ``eval``.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

_COMPARE = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne,
}
_ARITH = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


class SelectionError(ValueError):
    """A selection string outside the language, or one that names an unknown variable."""


def _check(node: ast.AST, text: str, variables: set[str] | None) -> None:
    allowed = (
        ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
        ast.Compare, ast.BinOp, ast.Name, ast.Load, ast.Constant, *_COMPARE, *_ARITH,
    )
    for sub in ast.walk(node):
        if not isinstance(sub, allowed):
            snippet = ast.get_source_segment(text, sub) or type(sub).__name__
            raise SelectionError(f"selection {text!r}: {snippet!r} is not allowed")
        if isinstance(sub, ast.Constant) and (
            isinstance(sub.value, bool) or not isinstance(sub.value, (int, float))
        ):
            raise SelectionError(f"selection {text!r}: only numbers are allowed, not {sub.value!r}")
        if isinstance(sub, ast.Name) and variables is not None and sub.id not in variables:
            raise SelectionError(
                f"selection {text!r}: unknown variable {sub.id!r} (known: {', '.join(sorted(variables))})"
            )


def _eval(node: ast.AST, values: Mapping[str, np.ndarray]):
    if isinstance(node, ast.Expression):
        return _eval(node.body, values)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return np.asarray(values[node.id])
    if isinstance(node, ast.BoolOp):
        parts = [np.asarray(_eval(v, values), dtype=bool) for v in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        out = parts[0]
        for p in parts[1:]:
            out = combine(out, p)
        return out
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, values)
        if isinstance(node.op, ast.Not):
            return np.logical_not(operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        return _ARITH[type(node.op)](_eval(node.left, values), _eval(node.right, values))
    if isinstance(node, ast.Compare):
        left = _eval(node.left, values)
        out = None
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, values)
            part = _COMPARE[type(op)](left, right)
            out = part if out is None else np.logical_and(out, part)
            left = right
        return out
    raise SelectionError(f"cannot evaluate {type(node).__name__}")  # pragma: no cover (checked)


@dataclass(frozen=True)
class Region:
    """A named selection: a parsed expression and/or inclusive per-variable bounds."""

    name: str
    selection: str = ""
    minimum: Mapping[str, float] = field(default_factory=dict)
    maximum: Mapping[str, float] = field(default_factory=dict)

    def validate(self, variables: set[str] | None = None) -> None:
        """Raise :class:`SelectionError` for a string outside the language or an unknown variable."""
        if self.selection:
            try:
                tree = ast.parse(self.selection, mode="eval")
            except SyntaxError as err:
                raise SelectionError(f"region {self.name!r}: cannot parse {self.selection!r}: {err.msg}") from None
            _check(tree, self.selection, variables)
        for bounds in (self.minimum, self.maximum):
            for var, value in bounds.items():
                if variables is not None and var not in variables:
                    raise SelectionError(f"region {self.name!r}: unknown variable {var!r} in bounds")
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise SelectionError(f"region {self.name!r}: bound on {var!r} must be a number")

    def mask(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """Boolean mask of the events in this region, from per-event variable arrays."""
        n = len(next(iter(values.values()))) if values else 0
        out = np.ones(n, dtype=bool)
        if self.selection:
            with np.errstate(divide="ignore", invalid="ignore"):  # met / ht with ht = 0 -> inf, fine
                result = _eval(ast.parse(self.selection, mode="eval"), values)
            out &= np.broadcast_to(np.asarray(result, dtype=bool), (n,))
        for var, lo in self.minimum.items():
            out &= np.asarray(values[var]) >= lo
        for var, hi in self.maximum.items():
            out &= np.asarray(values[var]) <= hi
        return out

    @property
    def flags(self) -> tuple[str, ...]:
        """The trigger and filter bits (``HLT_*``, ``Flag_*``) the selection uses."""
        return flags_in(self.selection, *self.minimum, *self.maximum)

    def describe(self) -> str:
        parts = [self.selection] if self.selection else []
        parts += [f"{v} >= {x:g}" for v, x in self.minimum.items()]
        parts += [f"{v} <= {x:g}" for v, x in self.maximum.items()]
        return " and ".join(parts) if parts else "all events"


#: Name prefixes of the NanoAOD trigger and MET-filter bits a selection may use (read from the file).
FLAG_PREFIXES = ("HLT_", "Flag_")


def flags_in(selection: str, *names: str) -> tuple[str, ...]:
    """The ``HLT_*``/``Flag_*`` names in a selection string (and among ``names``), in order."""
    found = [n for n in names if n.startswith(FLAG_PREFIXES)]
    if selection:
        try:
            tree = ast.parse(selection, mode="eval")
        except SyntaxError:
            return tuple(dict.fromkeys(found))
        found += [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id.startswith(FLAG_PREFIXES)]
    return tuple(dict.fromkeys(found))


def region_from_config(name: str, table: Mapping) -> Region:
    """Build a region from its TOML table (``selection``, ``min``, ``max``)."""
    unknown = set(table) - {"selection", "min", "max"}
    if unknown:
        raise SelectionError(f"region {name!r}: unknown keys {sorted(unknown)} (use selection, min, max)")
    selection = table.get("selection", "")
    if not isinstance(selection, str):
        raise SelectionError(f"region {name!r}: selection must be a string")
    return Region(name, selection, dict(table.get("min", {})), dict(table.get("max", {})))
