"""Rule expressions: operator text → numpy closures, without `eval`.

The text is parsed with `ast.parse(mode="eval")` — parsing builds a tree and runs
nothing — and only a whitelist of node types is compiled into functions over numpy
columns. Anything else (attribute access, subscripts, lambdas, most calls) is refused
with the position and the reason.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from sensord.decode import FieldSpec
from sensord.rules._spec import parse_duration

# Columns are float64, comparisons give bool; both flow through the same closures.
Array = npt.NDArray[Any]
Env = Mapping[str, npt.NDArray[np.float64]]
Fn = Callable[[Env], Array]

_CMP: dict[type[ast.cmpop], Callable[[Array, Array], Array]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_BIN: dict[type[ast.operator], Callable[[Array, Array], Array]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_FUNCS: dict[str, Callable[..., Array]] = {"abs": np.abs, "min": np.minimum, "max": np.maximum}
# Per-device functions over a trailing event-time window (t - w, t] of one field, and
# `unchanged_for(field)`: seconds since the field last changed value (a step counter that
# stopped, a tank level that no longer moves).
WINDOW_FUNCS = ("avg_over", "min_over", "max_over", "sum_over", "count_over", "delta", "rate")
UNCHANGED = "unchanged_for"
# `local_hour()`: the reading's local time of day in hours (8.5 is 08:30), in the zone of
# alerts.timezone: a rule that holds only by day ("no steps for 3 h between 08:00 and
# 20:00"). The engine supplies the column under this name.
LOCAL_HOUR = "local_hour()"
# Bounds on what an operator may write: deeper nesting would exhaust the parser (and is
# never needed), a longer window would keep and re-sort days of readings every batch.
MAX_DEPTH = 32
MAX_EXPR_CHARS = 4000
MAX_WINDOW_S = 86400.0
# A bare duration such as 1m or 30s inside an expression is written as text for ast.
_DURATION_LITERAL = re.compile(r"(?<![\w.\"'])((?:\d+(?:\.\d+)?[dhms])+)\b")


@dataclass(frozen=True, order=True)
class WindowSpec:
    """One windowed value a rule reads, e.g. avg_over(spo2, 1m)."""

    func: str
    field: str
    seconds: float

    @property
    def column(self) -> str:
        return f"{self.func}({self.field},{self.seconds:g}s)"


class ExprError(ValueError):
    """An expression that cannot be compiled; `col` is the 1-based column in the text."""

    def __init__(self, message: str, col: int = 0) -> None:
        self.col = col
        super().__init__(f"{message}" + (f" (at column {col})" if col else ""))


@dataclass
class Compiled:
    """A compiled expression and the names it reads."""

    fn: Fn
    fields: set[str] = field(default_factory=set)
    params: set[str] = field(default_factory=set)
    windows: set[WindowSpec] = field(default_factory=set)


class _Compiler:
    def __init__(self, fields: Mapping[str, FieldSpec], params: Mapping[str, float]) -> None:
        self._fields = fields
        self._params = params
        self.used_fields: set[str] = set()
        self.used_params: set[str] = set()
        self.used_windows: set[WindowSpec] = set()

    def fail(self, node: ast.AST, message: str) -> ExprError:
        return ExprError(message, getattr(node, "col_offset", -1) + 1)

    def compile(self, node: ast.AST) -> Fn:  # noqa: PLR0911 - one branch per node type
        if isinstance(node, ast.BoolOp):
            return self._boolop(node)
        if isinstance(node, ast.UnaryOp):
            return self._unary(node)
        if isinstance(node, ast.Compare):
            return self._compare(node)
        if isinstance(node, ast.BinOp):
            return self._binop(node)
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return _const(float(node.value))
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            raise self.fail(node, 'text is only allowed compared with a text field, e.g. state == "stopped"')
        raise self.fail(node, f"{type(node).__name__} is not allowed in a rule expression")

    def _boolop(self, node: ast.BoolOp) -> Fn:
        parts = [self.compile(v) for v in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or

        def fn(env: Env) -> Array:
            out = _truth(parts[0](env))
            for p in parts[1:]:
                out = combine(out, _truth(p(env)))
            return out

        return fn

    def _unary(self, node: ast.UnaryOp) -> Fn:
        inner = self.compile(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda env: np.logical_not(_truth(inner(env)))
        if isinstance(node.op, ast.USub):
            return lambda env: np.negative(inner(env))
        if isinstance(node.op, ast.UAdd):
            return inner
        raise self.fail(node, "only 'not' and '-' are allowed before a value")

    def _compare(self, node: ast.Compare) -> Fn:
        left_node = node.left
        steps: list[tuple[Callable[[Array, Array], Array], Fn, Fn]] = []
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, (ast.In, ast.NotIn)):
                steps.append(self._membership(op, left_node, right_node))
            else:
                cmp = _CMP.get(type(op))
                if cmp is None:
                    raise self.fail(node, f"comparison {type(op).__name__} is not allowed")
                lf, rf = self._operands(left_node, right_node)
                steps.append((cmp, lf, rf))
            left_node = right_node

        def fn(env: Env) -> Array:
            out: Array | None = None
            with np.errstate(invalid="ignore"):
                for cmp, lf, rf in steps:
                    res = cmp(lf(env), rf(env))
                    out = res if out is None else np.logical_and(out, res)
            assert out is not None
            return out

        return fn

    def _operands(self, left: ast.expr, right: ast.expr) -> tuple[Fn, Fn]:
        """Compile both sides; a text constant beside an enum field becomes its code."""
        for a, b in ((left, right), (right, left)):
            if isinstance(b, ast.Constant) and isinstance(b.value, str):
                fa, fb = self.compile(a), _const(self._enum_code(a, b))
                return (fa, fb) if a is left else (fb, fa)
        return self.compile(left), self.compile(right)

    def _enum_code(self, name_node: ast.expr, text: ast.Constant) -> float:
        spec = self._fields.get(name_node.id) if isinstance(name_node, ast.Name) else None
        if spec is None or spec.kind != "enum":
            raise self.fail(text, "text can only be compared with a text field such as state or status")
        if text.value not in spec.choices:
            raise self.fail(text, f"{spec.name} is never {text.value!r}; it is one of {list(spec.choices)}")
        return spec.code(text.value)

    def _membership(
        self, op: ast.cmpop, left: ast.expr, right: ast.expr
    ) -> tuple[Callable[[Array, Array], Array], Fn, Fn]:
        if not isinstance(right, (ast.Tuple, ast.List)) or not right.elts:
            raise self.fail(right, """'in' needs a list of values, e.g. state in ("idle", "stopped")""")
        values: list[float] = []
        for elt in right.elts:
            if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                values.append(self._enum_code(left, elt))
            elif isinstance(elt, ast.Constant) and isinstance(elt.value, (int, float)):
                values.append(float(elt.value))
            else:
                raise self.fail(elt, "'in' lists hold constants only")
        arr = np.asarray(values)
        negate = isinstance(op, ast.NotIn)
        lf = self.compile(left)

        def member(a: Array, _b: Array) -> Array:
            res = np.isin(a, arr)
            return np.logical_not(res) if negate else res

        return member, lf, _const_array(arr)

    def _binop(self, node: ast.BinOp) -> Fn:
        op = _BIN.get(type(node.op))
        if op is None:
            raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")
        lf, rf = self.compile(node.left), self.compile(node.right)

        def fn(env: Env) -> Array:
            with np.errstate(divide="ignore", invalid="ignore"):
                return op(lf(env), rf(env))

        return fn

    def _name(self, node: ast.Name) -> Fn:
        name = node.id
        if name in self._fields:
            self.used_fields.add(name)
        elif name in self._params:
            self.used_params.add(name)
        else:
            raise self.fail(
                node,
                f"unknown name {name!r}: not a field of this family ({', '.join(sorted(self._fields))}) "
                f"nor a parameter ({', '.join(sorted(self._params)) or 'none defined'})",
            )
        return lambda env: env[name]

    def _window(self, node: ast.Call, fname: str) -> Fn:
        usage = f"{fname}(field, duration), e.g. {fname}(temp_c, 1m)"
        if len(node.args) != 2 or node.keywords:
            raise self.fail(node, f"use {usage}")
        target, span = node.args
        if not isinstance(target, ast.Name) or target.id not in self._fields:
            raise self.fail(target, f"the first argument of {fname} is a field of this family; use {usage}")
        if not isinstance(span, ast.Constant):
            raise self.fail(span, f"the second argument of {fname} is a duration; use {usage}")
        try:
            seconds = parse_duration(span.value)
        except ValueError as exc:
            raise self.fail(span, str(exc)) from None
        if seconds <= 0:
            raise self.fail(span, f"the window of {fname} must be longer than 0s")
        if seconds > MAX_WINDOW_S:
            raise self.fail(span, f"the window of {fname} is {seconds:g} s; the longest is 24h")
        spec = WindowSpec(fname, target.id, seconds)
        self.used_windows.add(spec)
        col = spec.column
        return lambda env: env[col]

    def _column_call(self, node: ast.Call, fname: str) -> Fn:
        """`local_hour()` and `unchanged_for(field)`: columns the engine works out."""
        if fname == "local_hour":
            if node.args or node.keywords:
                raise self.fail(node, "local_hour() takes no arguments, e.g. local_hour() >= 8")
            return lambda env: env[LOCAL_HOUR]
        target = node.args[0] if len(node.args) == 1 and not node.keywords else None
        if not isinstance(target, ast.Name) or target.id not in self._fields:
            raise self.fail(node, "use unchanged_for(field), e.g. unchanged_for(steps) >= 12h")
        spec = WindowSpec(UNCHANGED, target.id, 0.0)
        self.used_windows.add(spec)
        col = spec.column
        return lambda env: env[col]

    def _call(self, node: ast.Call) -> Fn:
        fname = node.func.id if isinstance(node.func, ast.Name) else ""
        if fname in WINDOW_FUNCS:
            return self._window(node, fname)
        if fname in ("local_hour", UNCHANGED):
            return self._column_call(node, fname)
        func = _FUNCS.get(fname)
        if func is None or node.keywords or not node.args:
            names = ", ".join(sorted([*_FUNCS, *WINDOW_FUNCS, UNCHANGED, "local_hour"]))
            raise self.fail(node, f"only {names} may be called")
        if fname == "abs" and len(node.args) != 1:
            raise self.fail(node, "abs takes one value")
        args = [self.compile(a) for a in node.args]
        if fname == "abs":
            return lambda env: func(args[0](env))

        def fn(env: Env) -> Array:
            out = args[0](env)
            for a in args[1:]:
                out = func(out, a(env))
            return out

        return fn


def _const(value: float) -> Fn:
    def fn(_env: Env) -> Array:
        return np.asarray(value)

    return fn


def _const_array(arr: Array) -> Fn:
    def fn(_env: Env) -> Array:
        return arr

    return fn


def _truth(a: Array) -> Array:
    """Bool fields arrive as 0/1 floats; anything non-zero is true, an unknown (NaN) value
    is not: a flag never reported does not raise an alert."""
    if a.dtype == np.bool_:
        return a
    with np.errstate(invalid="ignore"):
        return np.asarray((a != 0) & ~np.isnan(a))


def _check_nesting(text: str) -> None:
    """Refuse deep bracket nesting before the parser sees it (it recurses per level)."""
    depth = deepest = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    if deepest > MAX_DEPTH:
        raise ExprError(f"the expression nests {deepest} brackets deep; the limit is {MAX_DEPTH}")


def _check_depth(tree: ast.AST) -> None:
    """Refuse a tree deeper than MAX_DEPTH (a long chain like `a+a+a+…` nests without
    brackets); walked with a stack, so the check itself cannot recurse too deep."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH * 2:  # a level of brackets is about two tree levels
            raise ExprError(f"the expression nests too deeply (limit {MAX_DEPTH} levels)")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def compile_expr(text: str, fields: Mapping[str, FieldSpec], params: Mapping[str, float]) -> Compiled:
    """Compile `text`; the result returns a bool array over the rows of `env`."""
    if len(text) > MAX_EXPR_CHARS:
        raise ExprError(f"the expression is {len(text)} characters; the limit is {MAX_EXPR_CHARS}")
    _check_nesting(text)
    try:
        tree = ast.parse(_DURATION_LITERAL.sub(r'"\1"', text.strip()), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"cannot parse expression: {exc.msg}", exc.offset or 0) from None
    except (RecursionError, MemoryError):
        raise ExprError(f"the expression nests too deeply (limit {MAX_DEPTH} levels)") from None
    _check_depth(tree)
    c = _Compiler(fields, params)
    body = c.compile(tree.body)

    def fn(env: Env) -> Array:
        return _truth(np.asarray(body(env)))

    return Compiled(fn, c.used_fields, c.used_params, c.used_windows)
