"""The small expression language of family manifests (support rules, dispatch).

Manifests are data that users write, so they are evaluated by walking a
whitelisted Python AST rather than by eval(): no attribute access, no calls but
a few integer helpers, no names but the spec fields and grid parameters.
Arithmetic is on numbers only (strings and booleans may only be compared), and
every intermediate value is bounded, so that `9**9**9` is an error, not a hang.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from functools import lru_cache

from .errors import InputError

__all__ = ["ExprError", "evaluate", "names_in"]


class ExprError(InputError, ValueError):
    """An expression that does not parse, names something unknown, or fails."""


# Every value an expression computes stays within +-2**64: geometry and sizes are
# 32-bit, and products of two of them fit, so no legitimate manifest comes near.
_LIMIT = 2**64


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _power(base: object, exponent: object) -> object:
    # Refused before it is computed: 9**9**9 would take minutes and gigabytes.
    if isinstance(exponent, int) and exponent > 64 and abs(base) > 1:  # type: ignore[arg-type]
        raise ExprError(f"{base!r} ** {exponent!r} is out of range (|value| must stay below 2**64)")
    return operator.pow(base, exponent)  # type: ignore[call-overload]


def _number(value: object, text: str) -> object:
    """`value`, checked to be a number: arithmetic on strings (repetition, concatenation) is refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExprError(f"{text!r}: arithmetic takes numbers, not {type(value).__name__} {value!r}")
    return value


def _bounded(value: object, text: str) -> object:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) >= _LIMIT:
        raise ExprError(f"{text!r} is out of range (|value| must stay below 2**64)")
    return value


_FUNCTIONS: dict[str, Callable[..., object]] = {"ceil_div": _ceil_div, "min": min, "max": max, "abs": abs}

_BINARY: dict[type, Callable[[object, object], object]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
}
_COMPARE: dict[type, Callable[[object, object], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


@lru_cache(maxsize=1024)
def _parse(text: str) -> ast.expr:
    try:
        return ast.parse(text, mode="eval").body
    except SyntaxError as e:
        raise ExprError(f"cannot parse {text!r}: {e.msg}") from None


def _eval(node: ast.expr, env: Mapping[str, object]) -> object:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        if node.id in ("True", "False"):
            return node.id == "True"
        raise ExprError(f"unknown name {node.id!r} (known: {', '.join(sorted(env))})")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        text = ast.unparse(node)
        left, right = _number(_eval(node.left, env), text), _number(_eval(node.right, env), text)
        return _bounded(_BINARY[type(node.op)](left, right), text)
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, env)
        if isinstance(node.op, ast.Not):
            return not value
        if isinstance(node.op, ast.USub):
            return -_number(value, ast.unparse(node))  # type: ignore[operator]
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, env) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            if type(op) not in _COMPARE:
                break
            right = _eval(right_node, env)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        else:
            return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body if _eval(node.test, env) else node.orelse, env)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        if node.keywords:
            raise ExprError(f"{node.func.id}() takes no keyword arguments")
        text = ast.unparse(node)
        return _bounded(_FUNCTIONS[node.func.id](*(_number(_eval(a, env), text) for a in node.args)), text)
    raise ExprError(f"{ast.unparse(node)!r} is not allowed in a manifest expression")


def _checked(text: object) -> str:
    if not isinstance(text, str):
        raise ExprError(f"an expression is an integer or a string, not {type(text).__name__} {text!r}")
    return text


def evaluate(text: str | int | bool, env: Mapping[str, object]) -> object:
    """Value of a manifest expression; a bare int or bool stands for itself."""
    if isinstance(text, (bool, int)):
        return text
    text = _checked(text)
    try:
        return _eval(_parse(text), env)
    except ExprError:
        raise
    except (ArithmeticError, TypeError, ValueError) as e:
        raise ExprError(f"{text!r}: {e}") from None


def names_in(text: str | int | bool) -> set[str]:
    """Names an expression refers to, for checking a manifest before any spec is seen."""
    if isinstance(text, (bool, int)):
        return set()
    tree = _parse(_checked(text))
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - set(_FUNCTIONS) - {"True", "False"}
