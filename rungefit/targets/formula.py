"""Formulas in x: parsed by a whitelist over Python's `ast`, evaluated by a small tree walker.

Never eval/exec: a formula is stored in config.json and read back from runs that people share.
`ast.parse` only builds a syntax tree, and every node of it must be a number, x, pi, e, one of
+ - * / ** (or a unary sign), or a call of a FUNCTIONS name with positional arguments; anything
else (names, attributes, subscripts, lambdas, strings, keywords, comparisons) is refused before
anything is evaluated. The work is bounded: at most MAX_FORMULA_CHARS characters (checked before
parsing), MAX_FORMULA_NODES nodes and MAX_FORMULA_DEPTH levels (checked before the tree is walked),
and every number is a float64, so a power such as 9**9**9**9 is three float operations that
overflow to inf (and the formula is then refused for being inf on the domain), never a huge integer.

The same tree evaluates NumPy arrays (checks, baselines) and torch tensors (training targets in the
run's dtype; f' by autograd in float64). torch is imported only inside the functions that use it,
so the CLI can check a --target while parsing without it.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
import warnings
from dataclasses import dataclass

import numpy as np

from rungefit.config import (
    FORMULA_FUNCTIONS,
    MAX_FORMULA_CHARS,
    MAX_FORMULA_DEPTH,
    MAX_FORMULA_NODES,
)
from rungefit.errors import UsageError, suggest
from rungefit.rules import NUMBER_RULE, parse_number

CONSTANTS = {"pi": math.pi, "e": math.e}
# name → number of arguments.
FUNCTIONS = {name: 2 if name in ("min", "max") else 1 for name in FORMULA_FUNCTIONS}
# Functions whose argument's sign changes are where f may not be differentiable (for min and max,
# the difference of their two arguments).
KINKED = ("abs", "sign", "step", "min", "max")
BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "**": operator.pow}
# A point closer than this share of the domain's width to a kink counts as the kink itself.
KINK_TOLERANCE = 1e-9
LANGUAGE = (
    f"a formula may use numbers, x, pi, e, + - * / ** and parentheses, and the functions {', '.join(FUNCTIONS)}"
)


def short(text: str, limit: int = 40) -> str:
    """A formula or a name for an error message: its start, quoted."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


# ---------------------------------------------------------------- formulas


@dataclass(frozen=True)
class Node:
    """One node of a parsed formula: "x", "const", an OPERATORS symbol, "neg", or a FUNCTIONS name."""

    op: str
    args: tuple[Node, ...] = ()
    value: float = 0.0


def parse_formula(text: str) -> Formula:
    """Parse a formula in x; a UsageError saying what is wrong (and where) for anything else."""
    if not isinstance(text, str):
        raise UsageError(f"--target must be a preset name or a formula, got {type(text).__name__}")
    if len(text) > MAX_FORMULA_CHARS:
        raise UsageError(f"--target is {len(text)} characters long; a formula may have at most {MAX_FORMULA_CHARS}")
    if not text.strip():
        raise UsageError("--target is empty; give a preset name or a formula in x")
    digit = next((c for c in text if c.isdigit() and not c.isascii()), None)
    if digit is not None:  # Python's parser would stop at it with "invalid character"
        raise UsageError(f"--target {short(text)}: {digit!r} is not a digit a formula reads ({NUMBER_RULE})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Python's own (`1if`: SyntaxWarning) are syntax errors here, not a stray line
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        where = f" at character {error.offset}" if error.offset else ""
        raise UsageError(f"--target {short(text)}: syntax error{where}: {error.msg}") from None
    except (ValueError, RecursionError, MemoryError, OverflowError) as error:
        raise UsageError(f"--target {short(text)} cannot be parsed ({type(error).__name__})") from None
    _check_size(tree, text)
    _check_spelling(tree, text.strip())
    return Formula(text, _fold(_convert(tree.body, text)))


def _check_spelling(tree: ast.AST, source: str) -> None:
    """Names and numbers as typed. Python's parser reads 'ｘ', '𝐱' and '𝐞' as x and e (it
    NFKC-normalises names) and 1_0 as 10; a formula is held to its source text: a name is known
    only as spelled, and a number follows the one rule for numbers (rules.NUMBER_RULE)."""
    for node in ast.walk(tree):
        spelled = ast.get_source_segment(source, node) if isinstance(node, (ast.Name, ast.Constant)) else None
        if spelled is None:  # not a name or a number, or inside what _convert refuses (an f-string)
            continue
        if isinstance(node, ast.Name) and spelled != node.id:
            raise UsageError(f"--target {short(source)}: unknown name {spelled!r}; {LANGUAGE}")
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            try:
                parse_number(spelled)
            except ValueError:
                raise UsageError(f"--target {short(source)}: {spelled[:40]!r} is not a number ({NUMBER_RULE})") from None


def _check_size(tree: ast.AST, text: str) -> None:
    """Count the nodes and measure the depth without recursion, before anything walks the tree."""
    nodes, deepest, pending = 0, 0, [(tree, 1)]
    while pending:
        node, depth = pending.pop()
        nodes, deepest = nodes + 1, max(deepest, depth)
        if nodes > MAX_FORMULA_NODES or deepest > MAX_FORMULA_DEPTH:
            raise UsageError(
                f"--target {short(text)} is too large: a formula may have at most {MAX_FORMULA_NODES} "
                f"terms and operations, nested at most {MAX_FORMULA_DEPTH} deep"
            )
        pending.extend((child, depth + 1) for child in ast.iter_child_nodes(node) if not isinstance(child, ast.expr_context))


# What a refused node is, in a user's words.
REFUSED = {
    ast.Attribute: "attribute access", ast.Subscript: "a subscript", ast.Lambda: "a lambda",
    ast.ListComp: "a comprehension", ast.SetComp: "a comprehension", ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension", ast.Compare: "a comparison (use step(x - a))",
    ast.BoolOp: "and/or", ast.IfExp: "if/else (use step)", ast.JoinedStr: "a string", ast.List: "a list",
    ast.Tuple: "a tuple (a comma)", ast.Dict: "a dict", ast.Set: "a set", ast.NamedExpr: "an assignment",
    ast.Starred: "*arguments", ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
}


def _convert(node: ast.AST, text: str) -> Node:
    """The whitelist: ast node → Node, or a UsageError naming what is not allowed."""
    if isinstance(node, ast.Constant):
        return Node("const", value=_number(node.value, text))
    if isinstance(node, ast.Name):
        if node.id == "x":
            return Node("x")
        if node.id in CONSTANTS:
            return Node("const", value=CONSTANTS[node.id])
        if node.id in FUNCTIONS:
            raise UsageError(f"--target {short(text)}: {node.id} is a function; write {node.id}(…)")
        raise UsageError(suggest(f"--target {short(text)}: unknown name {node.id!r}; {LANGUAGE}", node.id, ("x", *CONSTANTS)))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _convert(node.operand, text)
        return Node("neg", (operand,)) if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        return Node(BINARY[type(node.op)], (_convert(node.left, text), _convert(node.right, text)))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise UsageError(f"--target {short(text)}: ^ is not a power here; write x**2")
    if isinstance(node, ast.Call):
        return _call(node, text)
    what = REFUSED.get(type(node), type(node).__name__)
    raise UsageError(f"--target {short(text)}: {what} is not allowed in a formula; {LANGUAGE}")


def _number(value: object, text: str) -> float:
    if type(value) not in (int, float):  # bool is an int, but True is no number here
        what = "a string" if isinstance(value, (str, bytes)) else repr(value)
        raise UsageError(f"--target {short(text)}: {what} is not allowed in a formula; {LANGUAGE}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise UsageError(f"--target {short(text)}: a number in it is too large for a float64")
    return number


def _call(node: ast.Call, text: str) -> Node:
    name = node.func.id if isinstance(node.func, ast.Name) else None
    if name is None:
        what = REFUSED.get(type(node.func), "a call of an expression")
        raise UsageError(f"--target {short(text)}: {what} is not allowed in a formula; {LANGUAGE}")
    if name not in FUNCTIONS:
        raise UsageError(suggest(f"--target {short(text)}: unknown function {name!r}; {LANGUAGE}", name, FUNCTIONS))
    if node.keywords:
        raise UsageError(f"--target {short(text)}: {name}() takes no keyword arguments")
    count = FUNCTIONS[name]
    if len(node.args) != count:
        raise UsageError(f"--target {short(text)}: {name}() takes {count} argument{'s' if count > 1 else ''}, got {len(node.args)}")
    return Node(name, tuple(_convert(arg, text) for arg in node.args))


def _fold(node: Node) -> Node:
    """Parts without x become one float64 constant, computed in NumPy: an overflow is inf, not an error."""
    args = tuple(_fold(arg) for arg in node.args)
    node = Node(node.op, args, node.value)
    if args and all(arg.op == "const" for arg in args):
        with np.errstate(all="ignore"):
            value = _apply(node.op, [np.float64(arg.value) for arg in args], NUMPY_FUNCTIONS)
        return Node("const", value=float(value))
    return node


def _step_numpy(v):
    return np.where(np.isnan(v), v, np.where(v >= 0, 1.0, 0.0))  # NaN stays NaN, to be found


NUMPY_FUNCTIONS = {
    "abs": np.abs, "sqrt": np.sqrt, "exp": np.exp, "log": np.log, "sin": np.sin, "cos": np.cos, "tan": np.tan,
    "tanh": np.tanh, "arctan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "sign": np.sign, "step": _step_numpy,
    "min": np.minimum, "max": np.maximum,
}


@functools.cache
def _torch_functions() -> dict:
    import torch

    def tensors(a, b):
        """torch.minimum and torch.maximum take tensors only; a folded constant is a float."""
        like = a if isinstance(a, torch.Tensor) else b
        return tuple(v if isinstance(v, torch.Tensor) else torch.full_like(like, v) for v in (a, b))

    return {
        "abs": torch.abs, "sqrt": torch.sqrt, "exp": torch.exp, "log": torch.log, "sin": torch.sin, "cos": torch.cos,
        "tan": torch.tan, "tanh": torch.tanh, "arctan": torch.arctan, "sinh": torch.sinh, "cosh": torch.cosh,
        "sign": torch.sign, "step": lambda v: torch.where(torch.isnan(v), v, (v >= 0).to(v.dtype)),
        "min": lambda a, b: torch.minimum(*tensors(a, b)), "max": lambda a, b: torch.maximum(*tensors(a, b)),
    }


def _apply(op: str, values: list, functions: dict):
    if op in OPERATORS:
        return OPERATORS[op](*values)
    if op == "neg":
        return -values[0]
    return functions[op](*values)


def _evaluate(node: Node, x, functions: dict):
    """The node at x: a float for a constant, else an array or tensor like x."""
    if node.op == "x":
        return x
    if node.op == "const":
        return node.value
    return _apply(node.op, [_evaluate(arg, x, functions) for arg in node.args], functions)


@dataclass(frozen=True)
class Formula:
    """A parsed formula in x, evaluated elementwise on a NumPy array or a torch tensor."""

    text: str
    root: Node

    def __call__(self, x):
        """f(x), of x's type, shape and dtype; NumPy warnings (overflow, log 0) are silenced: the
        caller looks for NaN and inf."""
        return self.evaluate(self.root, x)

    @staticmethod
    def evaluate(node: Node, x):
        if isinstance(x, np.ndarray):
            with np.errstate(all="ignore"):
                value = _evaluate(node, x, NUMPY_FUNCTIONS)
            return np.full_like(x, value) if isinstance(value, float) else np.asarray(value, dtype=x.dtype)
        value = _evaluate(node, x, _torch_functions())
        return value if not isinstance(value, float) else x.new_full(x.shape, value)

    def kink_arguments(self) -> list[Node]:
        """Where f may not be differentiable is where one of these changes sign."""
        found, pending = [], [self.root]
        while pending:
            node = pending.pop()
            pending.extend(node.args)
            if node.op in ("min", "max"):
                found.append(Node("-", node.args))
            elif node.op in KINKED:
                found.append(node.args[0])
        return found
