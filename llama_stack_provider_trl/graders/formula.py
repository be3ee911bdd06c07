"""A multi grader's ``calculate_output``: arithmetic over its sub-graders' names, parsed with ``ast`` and
evaluated node by node (never ``eval``). Numbers, names, ``+ - * /``, ``**`` or ``^`` for powers, unary ``-``,
parentheses, and the functions OpenAI documents: min, max, abs, floor, ceil, exp, sqrt, log."""

import ast
import math
from collections.abc import Callable, Mapping

from llama_stack_provider_trl.engine.errors import RequestError

FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "floor": math.floor,
    "ceil": math.ceil,
    "exp": math.exp,
    "sqrt": math.sqrt,
    "log": math.log,
}
_OPERATORS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}
MAX_FORMULA_CHARS = 2000


class FormulaError(Exception):
    """The formula could not be computed for this sample (a division by zero, a log of 0, an overflow)."""


class Formula:
    def __init__(self, text: str, tree: ast.expr) -> None:
        self.text = text
        self.tree = tree

    def __call__(self, values: Mapping[str, float]) -> float:
        try:
            result = float(_evaluate(self.tree, values))
        except (ArithmeticError, ValueError, TypeError) as exc:
            raise FormulaError(f"{self.text}: {type(exc).__name__}: {exc}") from exc
        if not math.isfinite(result):
            raise FormulaError(f"{self.text} gave {result}")
        return result


def parse_formula(text: object, names: set[str], field: str) -> Formula:
    """``text`` checked: RequestError naming ``field`` for a syntax error, an unknown name or function, or any
    construct besides arithmetic."""
    if not isinstance(text, str) or not text.strip():
        raise RequestError(field, "must be a formula over the graders' names, e.g. 0.5 * accuracy + 0.5 * style")
    if len(text) > MAX_FORMULA_CHARS:
        raise RequestError(field, f"is longer than {MAX_FORMULA_CHARS} characters")
    try:
        tree = ast.parse(text.strip().replace("^", "**"), mode="eval").body  # ^ binds as a power does
    except SyntaxError as exc:
        raise RequestError(field, f"is not a formula: {exc.msg} at character {exc.offset}") from exc
    for node in ast.walk(tree):
        _check(node, names, field)
    return Formula(text, tree)


def _check(node: ast.AST, names: set[str], field: str) -> None:
    if isinstance(node, ast.Name):
        if node.id not in names and node.id not in FUNCTIONS:
            raise RequestError(field, f"'{node.id}' is not a grader name; the graders: {', '.join(sorted(names))}")
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords or not node.args:
            raise RequestError(field, f"calls only {', '.join(FUNCTIONS)} with arguments")
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, int | float) or isinstance(node.value, bool):
            raise RequestError(field, f"{node.value!r} is not a number")
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _OPERATORS:
            raise RequestError(field, "uses an operator other than + - * / ** ^")
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.USub | ast.UAdd):
            raise RequestError(field, "uses a unary operator other than -")
    elif not isinstance(node, ast.Load | ast.operator | ast.unaryop):
        raise RequestError(field, f"may hold only numbers, grader names, arithmetic and {', '.join(FUNCTIONS)}")


def _evaluate(node: ast.expr, values: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, values), _evaluate(node.right, values)
        if isinstance(node.op, ast.Pow) and abs(right) > 1000:
            raise ValueError("exponent too large")
        return _OPERATORS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, values)
        return -value if isinstance(node.op, ast.USub) else value
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    return FUNCTIONS[node.func.id](*(_evaluate(arg, values) for arg in node.args))
