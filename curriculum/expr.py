"""The guard expression language: tokenizer, recursive-descent parser, checker, evaluator.

A guard condition is a small, side-effect-free expression over live training metrics::

    mean(reward_mean, 50) > 25 and std(reward_mean, 50) < 4
    max(reward_max, 50) < 0.5 * prev(max(reward_max, 50))
    phase("soft", mean(reward_range, 50)) - mean(reward_range, 20) > 10
    not (nonfinite(reward_mean, 20) > 0) or my_custom_check(reward_range, 3)

Nothing in a spec is ever executed as Python: the text is tokenized and parsed by this module
alone (no ``eval``/``exec``/``compile``/``ast``); only the statistics below and functions
registered in :mod:`curriculum.registry` can be called.

Grammar (lowest precedence first)::

    expr       := or_expr EOF
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := sum [("<" | "<=" | ">" | ">=" | "==" | "!=") sum]     (non-associative)
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/") unary)*
    unary      := "-" unary | primary
    primary    := NUMBER | IDENT | IDENT "(" [arg ("," arg)*] ")" | "(" or_expr ")"
    arg        := STRING | or_expr

Names and meaning:

* a bare identifier is a metric: its latest value in the current phase (NaN if the latest
  value is non-finite or the metric has no value yet);
* statistics (first argument a metric name, ``N`` a positive integer literal, the window of the
  last N values reported in the current phase; fewer values early in a phase):
  ``mean(m, N)``, ``min(m, N)``, ``max(m, N)``, ``std(m, N)`` (population), ``range(m, N)``,
  ``median(m, N)``, ``quantile(m, q, N)``, ``slope(m, N)`` (least-squares, per step),
  ``nonfinite(m, N)`` (count of NaN/inf), ``ema(m, alpha)`` (over the whole window the history
  keeps) or ``ema(m, alpha, N)``, ``last(m)`` (latest *finite* value), ``count(m)`` (values held
  for m in this phase, at most the history capacity) or ``count(m, N)``.  All but
  ``nonfinite``/``count`` ignore non-finite values and give NaN when no finite value remains;
* ``prev(S)`` evaluates the statistic call (or metric) ``S`` on the final window of the previous
  phase; ``phase("name", S)`` on the most recent finished visit of phase ``name``;
* ``abs(x)``;
* any other call names a custom function from the registry: ``fn(view, *args)`` where numbers
  arrive as floats, strings as str and metric identifiers as the metric name (a str).

Evaluation is three-valued (Kleene): a comparison with a NaN/inf operand is *unknown*;
``not unknown`` is unknown; ``False and unknown`` is False, ``True or unknown`` is True, other
mixes are unknown.  An unknown top-level result counts as not satisfied and is reported
(:attr:`Evaluation.satisfied` is None).  Division by zero gives NaN, never an exception.
"""

from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Collection, Iterator, Mapping, Protocol

import numpy as np

from curriculum import limits as _limits
from curriculum import stats as _stats

MAX_LENGTH = 2000  #: longest accepted expression, in characters
MAX_DEPTH = 64  #: deepest accepted nesting (parentheses, calls, unary operators, operator chains)
MAX_WINDOW = _limits.MAX_WINDOW  #: largest accepted window literal (see curriculum/limits.py)

# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------


class ExprError(ValueError):
    """A guard expression could not be parsed or checked.

    ``str(err)`` is the message with its column on the first line, then the expression and a
    caret under the offending position.
    """

    def __init__(
        self,
        message: str,
        position: int | None = None,
        text: str | None = None,
        detail: str | None = None,
    ):
        self.message = message
        self.position = position
        self.text = text
        self.detail = detail
        super().__init__(self._render())

    def _render(self) -> str:
        head = self.message
        if self.position is not None:
            head += f" at column {self.position + 1}"
        if self.detail:
            head += f"; {self.detail}"
        if self.text is None or self.position is None:
            return head
        shown = self.text.replace("\n", " ").replace("\t", " ").replace("\r", " ")
        pos = self.position
        if len(shown) > 120:  # keep the caret line readable for long input
            start = max(0, min(pos - 60, len(shown) - 120))
            shown = shown[start : start + 120]
            pos -= start
        return f"{head}\n  {shown}\n  {' ' * pos}^"

    def with_text(self, text: str | None) -> "ExprError":
        if text is None or self.text is not None:
            return self
        return ExprError(self.message, self.position, text, self.detail)

    def __reduce__(self):  # picklable across processes
        return (ExprError, (self.message, self.position, self.text, self.detail))


# ---------------------------------------------------------------------------------------
# AST
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Node:
    """Base of every AST node.  ``pos`` is the 0-based column in the source text."""

    pos: int = field(default=0, compare=False)
    #: the full expression text; set on the root node returned by :func:`parse` only.
    source: str | None = field(default=None, compare=False, repr=False)

    @property
    def canonical(self) -> str:
        """Normalised source text, e.g. ``mean(reward_mean, 50)`` (cached)."""
        cached = self.__dict__.get("_canonical")
        if cached is None:
            cached = to_source(self)
            object.__setattr__(self, "_canonical", cached)
        return cached

    def __str__(self) -> str:
        return self.canonical


@dataclass(frozen=True)
class Num(Node):
    value: float
    integer: bool = field(default=False, compare=False)  # written without '.' / exponent


@dataclass(frozen=True)
class Str(Node):
    value: str


@dataclass(frozen=True)
class Name(Node):
    """A metric identifier."""

    name: str


@dataclass(frozen=True)
class Call(Node):
    func: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Unary(Node):
    op: str  # "-" | "not"
    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str  # "+" | "-" | "*" | "/"
    left: Node
    right: Node


@dataclass(frozen=True)
class Compare(Node):
    op: str  # "<" | "<=" | ">" | ">=" | "==" | "!="
    left: Node
    right: Node


@dataclass(frozen=True)
class BoolOp(Node):
    op: str  # "and" | "or"
    operands: tuple[Node, ...]


def children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Call):
        return node.args
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, (Binary, Compare)):
        return (node.left, node.right)
    if isinstance(node, BoolOp):
        return node.operands
    return ()


def walk(node: Node) -> Iterator[Node]:
    """All nodes, parents before children (iterative: no recursion limit issues)."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(children(n)))


_PREC = {"or": 1, "and": 2, "not": 3, "cmp": 4, "+": 5, "-": 5, "*": 6, "/": 6, "neg": 7}


def _fmt_num(node: Num) -> str:
    v = node.value
    if node.integer and abs(v) < 1e16:
        return str(int(v))
    if v == int(v) and abs(v) < 1e16:
        return f"{v:.1f}"
    return repr(v)


def _fmt_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _prec(node: Node) -> int:
    if isinstance(node, BoolOp):
        return _PREC[node.op]
    if isinstance(node, Unary):
        return _PREC["not"] if node.op == "not" else _PREC["neg"]
    if isinstance(node, Compare):
        return _PREC["cmp"]
    if isinstance(node, Binary):
        return _PREC[node.op]
    if isinstance(node, Num) and node.value < 0:
        return _PREC["neg"]
    return 99


def to_source(node: Node) -> str:
    """Canonical text of ``node`` (single spaces around operators, minimal parentheses)."""

    def wrap(child: Node, min_prec: int) -> str:
        s = to_source(child)
        return f"({s})" if _prec(child) < min_prec else s

    if isinstance(node, Num):
        return _fmt_num(node)
    if isinstance(node, Str):
        return _fmt_str(node.value)
    if isinstance(node, Name):
        return node.name
    if isinstance(node, Call):
        return f"{node.func}({', '.join(to_source(a) for a in node.args)})"
    if isinstance(node, Unary):
        if node.op == "not":
            return f"not {wrap(node.operand, _PREC['not'])}"
        return f"-{wrap(node.operand, _PREC['neg'])}"
    if isinstance(node, Binary):
        p = _PREC[node.op]
        # left-associative: right operand of equal precedence needs parentheses
        return f"{wrap(node.left, p)} {node.op} {wrap(node.right, p + 1)}"
    if isinstance(node, Compare):
        p = _PREC["cmp"] + 1
        return f"{wrap(node.left, p)} {node.op} {wrap(node.right, p)}"
    if isinstance(node, BoolOp):
        p = _PREC[node.op] + 1
        return f" {node.op} ".join(wrap(o, p) for o in node.operands)
    raise TypeError(f"not an expression node: {node!r}")


# ---------------------------------------------------------------------------------------
# tokenizer
# ---------------------------------------------------------------------------------------

_KEYWORDS = frozenset({"and", "or", "not"})
_TWO_CHAR = {"<=", ">=", "==", "!="}
_ONE_CHAR = {"<", ">", "+", "-", "*", "/", "(", ")", ","}
_HINTS = {
    "'": "single quotes are not allowed; strings use double quotes",
    "=": "did you mean '=='?",
    "!": "use 'not' for negation",
    "&": "use 'and'",
    "|": "use 'or'",
    ".": "attribute access is not allowed",
    "[": "lists and subscripts are not allowed",
    "]": "lists and subscripts are not allowed",
    "{": "braces are not allowed",
    "}": "braces are not allowed",
    ";": "only a single expression is allowed",
    ":": "only a single expression is allowed",
    "`": "backticks are not allowed",
    "%": "only + - * / are supported",
    "^": "only + - * / are supported",
    "@": "only + - * / are supported",
}


@dataclass(frozen=True)
class Token:
    kind: str  # NUM STR IDENT KW OP EOF
    text: str
    pos: int
    value: Any = None


def _describe(tok: Token) -> str:
    if tok.kind == "EOF":
        return "end of expression"
    if tok.kind == "NUM":
        return f"number {tok.text}"
    if tok.kind == "STR":
        return f"string {tok.text}"
    if tok.kind == "IDENT":
        return f"name '{tok.text}'"
    return f"'{tok.text}'"


def _is_ident_start(c: str) -> bool:
    return c == "_" or ("a" <= c <= "z") or ("A" <= c <= "Z")


def _is_ident_char(c: str) -> bool:
    return _is_ident_start(c) or ("0" <= c <= "9")


def _is_digit(c: str) -> bool:
    return "0" <= c <= "9"


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; raises :class:`ExprError` on anything unexpected."""
    if not isinstance(text, str):
        raise ExprError(f"expression must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExprError(
            f"expression is too long ({len(text)} characters, at most {MAX_LENGTH})", None
        )
    toks: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        if _is_digit(c) or (c == "." and i + 1 < n and _is_digit(text[i + 1])):
            j = i
            while j < n and _is_digit(text[j]):
                j += 1
            integer = True
            if j < n and text[j] == ".":
                integer = False
                j += 1
                while j < n and _is_digit(text[j]):
                    j += 1
            if j < n and text[j] in "eE":
                k = j + 1
                if k < n and text[k] in "+-":
                    k += 1
                if k < n and _is_digit(text[k]):
                    integer = False
                    j = k
                    while j < n and _is_digit(text[j]):
                        j += 1
                else:
                    raise ExprError("malformed number exponent", j, text)
            if j < n and (_is_ident_char(text[j]) or text[j] == "."):
                raise ExprError(f"malformed number '{text[i:j + 1]}'", i, text)
            lit = text[i:j]
            value = float(lit)
            if not math.isfinite(value):
                raise ExprError(f"number {lit} is out of range", i, text)
            toks.append(Token("NUM", lit, i, (value, integer)))
            i = j
            continue
        if _is_ident_start(c):
            j = i + 1
            while j < n and _is_ident_char(text[j]):
                j += 1
            word = text[i:j]
            toks.append(Token("KW" if word in _KEYWORDS else "IDENT", word, i))
            i = j
            continue
        if c == '"':
            j = i + 1
            buf: list[str] = []
            while True:
                if j >= n:
                    raise ExprError("unterminated string", i, text)
                ch = text[j]
                if ch == '"':
                    break
                if ch == "\\":
                    if j + 1 < n and text[j + 1] in '"\\':
                        buf.append(text[j + 1])
                        j += 2
                        continue
                    raise ExprError('only \\" and \\\\ escapes are allowed in strings', j, text)
                if ch in "\n\r":
                    raise ExprError("unterminated string", i, text)
                buf.append(ch)
                j += 1
            toks.append(Token("STR", text[i : j + 1], i, "".join(buf)))
            i = j + 1
            continue
        two = text[i : i + 2]
        if two in _TWO_CHAR:
            toks.append(Token("OP", two, i))
            i += 2
            continue
        if c in _ONE_CHAR:
            toks.append(Token("OP", c, i))
            i += 1
            continue
        shown = c if c.isprintable() else repr(c)
        hint = _HINTS.get(c)
        raise ExprError(f"unexpected character '{shown}'", i, text, hint)
    toks.append(Token("EOF", "", n))
    return toks


# ---------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------

_CMP_OPS = frozenset({"<", "<=", ">", ">=", "==", "!="})
_OPERAND = "a number, metric name, function call, '-', 'not' or '('"


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = tokenize(text)
        self.i = 0
        self.nest = 0
        self.depth: dict[int, int] = {}  # id(node) -> subtree depth

    # helpers
    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def advance(self) -> Token:
        t = self.toks[self.i]
        if t.kind != "EOF":
            self.i += 1
        return t

    def at_op(self, *ops: str) -> bool:
        t = self.tok
        return t.kind == "OP" and t.text in ops

    def at_kw(self, kw: str) -> bool:
        t = self.tok
        return t.kind == "KW" and t.text == kw

    def error(self, expected: str, tok: Token | None = None) -> ExprError:
        t = tok or self.tok
        return ExprError(f"unexpected {_describe(t)}", t.pos, self.text, f"expected {expected}")

    def enter(self, pos: int) -> None:
        self.nest += 1
        if self.nest > MAX_DEPTH:
            raise ExprError(f"expression is nested too deeply (more than {MAX_DEPTH} levels)", pos, self.text)

    def leave(self) -> None:
        self.nest -= 1

    def mk(self, node: Node, *kids: Node) -> Node:
        d = 1 + max((self.depth.get(id(k), 1) for k in kids), default=0)
        if d > MAX_DEPTH:
            raise ExprError(
                f"expression is nested too deeply (more than {MAX_DEPTH} levels)", node.pos, self.text
            )
        self.depth[id(node)] = d
        self._keep.append(node)  # keep ids unique while parsing
        return node

    # grammar
    def parse(self) -> Node:
        self._keep: list[Node] = []
        if self.tok.kind == "EOF":
            raise ExprError("empty expression", 0, self.text)
        node = self.or_expr()
        if self.tok.kind != "EOF":
            t = self.tok
            if t.kind == "OP" and t.text in _CMP_OPS:
                raise ExprError(
                    f"unexpected '{t.text}'",
                    t.pos,
                    self.text,
                    "comparisons cannot be chained; combine them with 'and'",
                )
            if t.kind == "OP" and t.text == ")":
                raise ExprError("unexpected ')'", t.pos, self.text, "it has no matching '('")
            raise self.error("an operator (and, or, comparison, + - * /) or end of expression")
        return node

    def or_expr(self) -> Node:
        first = self.and_expr()
        ops = [first]
        while self.at_kw("or"):
            self.advance()
            ops.append(self.and_expr())
        if len(ops) == 1:
            return first
        return self.mk(BoolOp("or", tuple(ops), pos=first.pos), *ops)

    def and_expr(self) -> Node:
        first = self.not_expr()
        ops = [first]
        while self.at_kw("and"):
            self.advance()
            ops.append(self.not_expr())
        if len(ops) == 1:
            return first
        return self.mk(BoolOp("and", tuple(ops), pos=first.pos), *ops)

    def not_expr(self) -> Node:
        if self.at_kw("not"):
            t = self.advance()
            self.enter(t.pos)
            operand = self.not_expr()
            self.leave()
            return self.mk(Unary("not", operand, pos=t.pos), operand)
        return self.comparison()

    def comparison(self) -> Node:
        left = self.sum()
        if self.tok.kind == "OP" and self.tok.text in _CMP_OPS:
            op = self.advance()
            right = self.sum()
            return self.mk(Compare(op.text, left, right, pos=op.pos), left, right)
        return left

    def sum(self) -> Node:
        node = self.product()
        while self.at_op("+", "-"):
            op = self.advance()
            right = self.product()
            node = self.mk(Binary(op.text, node, right, pos=op.pos), node, right)
        return node

    def product(self) -> Node:
        node = self.unary()
        while self.at_op("*", "/"):
            op = self.advance()
            right = self.unary()
            node = self.mk(Binary(op.text, node, right, pos=op.pos), node, right)
        return node

    def unary(self) -> Node:
        if self.at_op("-"):
            t = self.advance()
            self.enter(t.pos)
            operand = self.unary()
            self.leave()
            if isinstance(operand, Num):
                # fold a negative number literal so "-3" is a literal (usable as an argument)
                return self.mk(Num(-operand.value, operand.integer, pos=t.pos))
            return self.mk(Unary("-", operand, pos=t.pos), operand)
        if self.at_op("+"):
            raise self.error(_OPERAND + " (unary '+' is not supported)")
        return self.primary()

    def primary(self) -> Node:
        t = self.tok
        if t.kind == "NUM":
            self.advance()
            value, integer = t.value
            return self.mk(Num(value, integer, pos=t.pos))
        if t.kind == "IDENT":
            self.advance()
            if self.at_op("("):
                return self.call(t)
            return self.mk(Name(t.text, pos=t.pos))
        if t.kind == "OP" and t.text == "(":
            self.advance()
            self.enter(t.pos)
            inner = self.or_expr()
            self.leave()
            if not self.at_op(")"):
                raise self.error("')' to close the '(' at column %d" % (t.pos + 1))
            self.advance()
            return inner
        if t.kind == "STR":
            raise ExprError(
                f"unexpected string {t.text}",
                t.pos,
                self.text,
                "strings are only allowed as function arguments",
            )
        raise self.error(_OPERAND)

    def call(self, name: Token) -> Node:
        lp = self.advance()  # "("
        self.enter(lp.pos)
        args: list[Node] = []
        if not self.at_op(")"):
            while True:
                args.append(self.arg())
                if self.at_op(","):
                    self.advance()
                    continue
                if self.at_op(")"):
                    break
                raise self.error(f"',' or ')' in the arguments of {name.text}()")
        self.advance()  # ")"
        self.leave()
        return self.mk(Call(name.text, tuple(args), pos=name.pos), *args)

    def arg(self) -> Node:
        t = self.tok
        if t.kind == "STR":
            self.advance()
            return self.mk(Str(t.value, pos=t.pos))
        return self.or_expr()


def parse(text: str) -> Node:
    """Parse ``text`` into an AST; raises :class:`ExprError` with position and caret."""
    root = _Parser(text).parse()
    return replace(root, source=text) if root.source is None else root


# ---------------------------------------------------------------------------------------
# built-in function table and checking
# ---------------------------------------------------------------------------------------

#: statistic name -> (required argument kinds after the metric, optional trailing kinds)
#: kinds: "window" positive integer literal, "q" literal in [0, 1], "alpha" literal in (0, 1]
STAT_SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mean": (("window",), ()),
    "min": (("window",), ()),
    "max": (("window",), ()),
    "std": (("window",), ()),
    "range": (("window",), ()),
    "median": (("window",), ()),
    "slope": (("window",), ()),
    "nonfinite": (("window",), ()),
    "quantile": (("q", "window"), ()),
    "ema": (("alpha",), ("window",)),
    "last": ((), ()),
    "count": ((), ("window",)),
}
STATISTICS = frozenset(STAT_SIGNATURES)
CROSS_PHASE = frozenset({"prev", "phase"})
SCALAR_FUNCTIONS = frozenset({"abs"})
#: every name the grammar reserves; custom functions may not use these.
BUILTIN_FUNCTIONS = STATISTICS | CROSS_PHASE | SCALAR_FUNCTIONS

_USAGE = {
    "mean": "mean(metric, N)",
    "min": "min(metric, N)",
    "max": "max(metric, N)",
    "std": "std(metric, N)",
    "range": "range(metric, N)",
    "median": "median(metric, N)",
    "slope": "slope(metric, N)",
    "nonfinite": "nonfinite(metric, N)",
    "quantile": "quantile(metric, q, N)",
    "ema": "ema(metric, alpha) or ema(metric, alpha, N)",
    "last": "last(metric)",
    "count": "count(metric) or count(metric, N)",
    "prev": "prev(statistic(metric, ...)) or prev(metric)",
    "phase": 'phase("phase_name", statistic(metric, ...))',
    "abs": "abs(x)",
}

NUM, BOOL, STR, ANY = "number", "boolean", "string", "any"


def suggest(word: str, candidates: Collection[str]) -> str | None:
    """``"did you mean 'x'?"`` for the closest candidate, or None."""
    close = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def _literal_number(node: Node) -> float | None:
    return node.value if isinstance(node, Num) else None


class _Checker:
    def __init__(self, root: Node, metrics: Collection[str], functions: Collection[str]):
        self.text = root.source
        self.metrics = frozenset(metrics)
        self.function_names = frozenset(functions)
        self.callables = functions if isinstance(functions, Mapping) else None

    def err(self, msg: str, node: Node, detail: str | None = None) -> ExprError:
        return ExprError(msg, node.pos, self.text, detail)

    def metric(self, node: Name) -> None:
        if node.name not in self.metrics:
            raise self.err(f"unknown metric '{node.name}'", node, suggest(node.name, self.metrics))

    def type_of(self, node: Node) -> str:
        if isinstance(node, Num):
            return NUM
        if isinstance(node, Str):
            raise self.err("strings are only allowed as function arguments", node)
        if isinstance(node, Name):
            self.metric(node)
            return NUM
        if isinstance(node, Unary):
            t = self.type_of(node.operand)
            if node.op == "not":
                if t == NUM:
                    raise self.err("'not' needs a true/false operand (a comparison), got a number", node)
                return BOOL
            if t == BOOL:
                raise self.err("unary '-' needs a number, got a true/false value", node)
            return NUM
        if isinstance(node, Binary):
            for side in (node.left, node.right):
                if self.type_of(side) == BOOL:
                    raise self.err(
                        f"'{node.op}' needs numbers, got a true/false value", side
                    )
            return NUM
        if isinstance(node, Compare):
            for side in (node.left, node.right):
                if self.type_of(side) == BOOL:
                    raise self.err(
                        f"'{node.op}' compares numbers, got a true/false value "
                        "(use 'and'/'or'/'not' to combine conditions)",
                        side,
                    )
            return BOOL
        if isinstance(node, BoolOp):
            for o in node.operands:
                if self.type_of(o) == NUM:
                    raise self.err(
                        f"'{node.op}' needs true/false operands (comparisons), got a number", o
                    )
            return BOOL
        if isinstance(node, Call):
            return self.call(node)
        raise self.err(f"unsupported node {type(node).__name__}", node)

    def arity_error(self, node: Call) -> ExprError:
        return self.err(
            f"{node.func}() got {len(node.args)} argument{'s' if len(node.args) != 1 else ''}",
            node,
            f"usage: {_USAGE[node.func]}",
        )

    def stat(self, node: Call) -> str:
        req, opt = STAT_SIGNATURES[node.func]
        nargs = len(node.args) - 1
        if not (len(req) <= nargs <= len(req) + len(opt)):
            raise self.arity_error(node)
        first = node.args[0]
        if not isinstance(first, Name):
            raise self.err(
                f"the first argument of {node.func}() must be a metric name",
                first,
                f"usage: {_USAGE[node.func]}",
            )
        self.metric(first)
        for kind, arg in zip(req + opt, node.args[1:]):
            v = _literal_number(arg)
            if kind == "window":
                if v is None or not arg.integer or v < 1:  # type: ignore[union-attr]
                    raise self.err(
                        f"window of {node.func}() must be a positive integer literal, "
                        f"got {to_source(arg)}",
                        arg,
                    )
                if v > MAX_WINDOW:
                    raise self.err(f"window {int(v)} is too large (at most {MAX_WINDOW})", arg)
            elif kind == "q":
                if v is None or not 0.0 <= v <= 1.0:
                    raise self.err(
                        f"q of quantile() must be a number literal in [0, 1], got {to_source(arg)}",
                        arg,
                    )
            elif kind == "alpha":
                if v is None or not 0.0 < v <= 1.0:
                    raise self.err(
                        f"alpha of ema() must be a number literal in (0, 1], got {to_source(arg)}",
                        arg,
                    )
        return NUM

    def cross_phase_inner(self, node: Call, inner: Node) -> str:
        if isinstance(inner, Name):
            self.metric(inner)
            return NUM
        if isinstance(inner, Call) and inner.func in STATISTICS:
            return self.stat(inner)
        raise self.err(
            f"{node.func}() takes a statistic call or a metric name",
            inner,
            f"usage: {_USAGE[node.func]}",
        )

    def call(self, node: Call) -> str:
        f = node.func
        if f in STATISTICS:
            if not node.args:
                raise self.arity_error(node)
            return self.stat(node)
        if f == "prev":
            if len(node.args) != 1:
                raise self.arity_error(node)
            return self.cross_phase_inner(node, node.args[0])
        if f == "phase":
            if len(node.args) != 2:
                raise self.arity_error(node)
            name = node.args[0]
            if not isinstance(name, Str) or not name.value:
                raise self.err(
                    "the first argument of phase() must be a phase name in double quotes",
                    name,
                    f"usage: {_USAGE['phase']}",
                )
            return self.cross_phase_inner(node, node.args[1])
        if f == "abs":
            if len(node.args) != 1:
                raise self.arity_error(node)
            if self.type_of(node.args[0]) == BOOL:
                raise self.err("abs() needs a number", node.args[0])
            return NUM
        if f in self.function_names:
            for a in node.args:
                if isinstance(a, (Num, Str)):
                    continue
                if isinstance(a, Name):
                    self.metric(a)
                    continue
                raise self.err(
                    f"arguments of custom function {f}() must be numbers, strings or metric names",
                    a,
                )
            if self.callables is not None:
                self.custom_arity(node, self.callables[f])
            return ANY
        raise self.err(
            f"unknown function '{f}'", node, suggest(f, BUILTIN_FUNCTIONS | self.function_names)
        )

    def custom_arity(self, node: Call, fn: Any) -> None:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return
        try:
            sig.bind(None, *([None] * len(node.args)))
        except TypeError as e:
            raise self.err(f"bad arguments for custom function {node.func}(): {e}", node) from None


def check(node: Node, metrics: Collection[str], functions: Collection[str] = ()) -> None:
    """Validate ``node`` as a guard condition.

    Raises :class:`ExprError` for an unknown metric or function (with a suggestion), a wrong
    number of arguments, a bad argument (window not a positive integer literal, q outside
    [0, 1], alpha outside (0, 1], a string where none is allowed) or a top-level result that
    is not true/false.  When ``functions`` is a mapping of callables, custom calls are also
    checked against the callable's signature.
    """
    c = _Checker(node, metrics, functions)
    t = c.type_of(node)
    if t == NUM:
        raise c.err(
            "a guard condition must be true/false (a comparison such as "
            f"'{to_source(node)} > 0'), got a number",
            node,
        )


def windows_needed(node: Node) -> dict[str, int]:
    """Per metric, the largest window the expression reads (1 for latest value / last())."""
    need: dict[str, int] = {}

    def add(metric: str, n: int) -> None:
        if n > need.get(metric, 0):
            need[metric] = n

    for n in walk(node):
        if isinstance(n, Name):
            add(n.name, 1)
        elif isinstance(n, Call) and n.func in STATISTICS and n.args and isinstance(n.args[0], Name):
            req, opt = STAT_SIGNATURES[n.func]
            window = 1
            for kind, arg in zip(req + opt, n.args[1:]):
                if kind == "window" and isinstance(arg, Num):
                    window = max(1, int(arg.value))
            add(n.args[0].name, window)
    return need


def phases_referenced(node: Node) -> set[str]:
    """Phase names used in ``phase("name", ...)`` calls (for the spec loader to validate)."""
    return {
        n.args[0].value
        for n in walk(node)
        if isinstance(n, Call) and n.func == "phase" and n.args and isinstance(n.args[0], Str)
    }


def functions_referenced(node: Node) -> set[str]:
    """Names of the custom (non-built-in) functions the expression calls."""
    return {n.func for n in walk(node) if isinstance(n, Call) and n.func not in BUILTIN_FUNCTIONS}


def uses_previous_phase(node: Node) -> bool:
    return any(isinstance(n, Call) and n.func in CROSS_PHASE for n in walk(node))


# ---------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------


class View(Protocol):
    """What evaluation reads (implemented by :class:`curriculum.windows.MetricHistory`)."""

    capacity: int

    def window(self, metric: str, n: int) -> np.ndarray: ...

    def phase_window(self, metric: str, n: int, phase: str | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class Evaluation:
    """Result of :func:`evaluate`.

    ``value``: the result (bool for a condition, where unknown counts as False; float for a
    numeric expression).  ``satisfied``: True/False for a known condition, None when unknown
    (non-finite input, failing custom function) or for a numeric expression.  ``terms``: each
    statistic / metric / custom call's canonical text -> value (the evidence).
    ``nonfinite_terms``: the terms (or comparison operands) whose value was NaN/inf.
    ``errors``: custom call text -> error message for functions that raised.
    """

    value: bool | float
    satisfied: bool | None
    terms: dict[str, Any]
    nonfinite_terms: list[str]
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def unknown(self) -> bool:
        return self.satisfied is None and isinstance(self.value, bool)


def _isfinite(v: float) -> bool:
    return v == v and v not in (math.inf, -math.inf)


class _Eval:
    __slots__ = ("view", "functions", "terms", "nonfinite", "errors", "memo")

    def __init__(self, view: Any, functions: Mapping[str, Callable[..., Any]]):
        self.view = view
        self.functions = functions
        self.terms: dict[str, Any] = {}
        self.nonfinite: list[str] = []
        self.errors: dict[str, str] = {}
        self.memo: dict[tuple[Any, ...], np.ndarray] = {}  # windows read in this evaluation

    def flag(self, text: str) -> None:
        if text not in self.nonfinite:
            self.nonfinite.append(text)

    def record(self, text: str, v: Any) -> None:
        self.terms[text] = v
        if isinstance(v, float) and not _isfinite(v):
            self.flag(text)

    # windows -------------------------------------------------------------------------
    def values(self, metric: str, n: int, where: tuple[str, str | None] | None) -> np.ndarray:
        key = (metric, n, where)
        w = self.memo.get(key)
        if w is None:
            if where is None:
                w = self.view.window(metric, n)
            else:
                w = self.view.phase_window(metric, n, where[1])
            self.memo[key] = w
        return w

    def stat(self, node: Call, where: tuple[str, str | None] | None) -> float:
        f = node.func
        metric = node.args[0].name  # type: ignore[attr-defined]
        rest = [a.value for a in node.args[1:]]  # type: ignore[attr-defined]
        cap = int(getattr(self.view, "capacity", MAX_WINDOW))
        if f == "quantile":
            return _stats.quantile(self.values(metric, int(rest[1]), where), rest[0])
        if f == "ema":
            n = int(rest[1]) if len(rest) > 1 else cap
            return _stats.ema(self.values(metric, n, where), rest[0])
        if f == "last":
            return _stats.last(self.values(metric, cap, where))
        if f == "count":
            n = int(rest[0]) if rest else cap
            return _stats.count(self.values(metric, n, where))
        return _stats.SIMPLE[f](self.values(metric, int(rest[0]), where))

    def latest(self, metric: str, where: tuple[str, str | None] | None) -> float:
        w = self.values(metric, 1, where)
        return float(w[-1]) if len(w) else math.nan

    # nodes -----------------------------------------------------------------------------
    def num(self, node: Node) -> float:
        if isinstance(node, Num):
            return node.value
        if isinstance(node, Name):
            v = self.latest(node.name, None)
            self.record(node.name, v)
            return v
        if isinstance(node, Binary):
            a = self.num(node.left)
            b = self.num(node.right)
            op = node.op
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                r = a * b
                return r
            if b == 0.0:
                return math.nan
            try:
                return a / b
            except (OverflowError, ZeroDivisionError):
                return math.nan
        if isinstance(node, Unary):  # "-"
            return -self.num(node.operand)
        if isinstance(node, Call):
            return self.call_num(node)
        raise TypeError(f"not a numeric node: {to_source(node)}")

    def call_num(self, node: Call) -> float:
        f = node.func
        if f in STATISTICS:
            v = float(self.stat(node, None))
            self.record(node.canonical, v)
            return v
        if f == "prev" or f == "phase":
            where = ("prev", None) if f == "prev" else ("phase", node.args[0].value)  # type: ignore[attr-defined]
            inner = node.args[-1]
            if isinstance(inner, Name):
                v = self.latest(inner.name, where)
            else:
                v = float(self.stat(inner, where))  # type: ignore[arg-type]
            self.record(node.canonical, v)
            return v
        if f == "abs":
            return abs(self.num(node.args[0]))
        raw = self.custom(node)
        if isinstance(raw, (bool, np.bool_)):
            return 1.0 if raw else 0.0
        try:
            return float(raw)
        except (TypeError, ValueError, OverflowError):
            self.errors[node.canonical] = f"returned {type(raw).__name__}, expected a number"
            return math.nan

    def custom(self, node: Call) -> Any:
        text = node.canonical
        fn = self.functions.get(node.func)
        if fn is None:
            self.errors[text] = f"custom function '{node.func}' is not registered"
            self.terms[text] = None
            self.flag(text)
            return math.nan
        args = [a.value if isinstance(a, (Num, Str)) else a.name for a in node.args]  # type: ignore[attr-defined]
        try:
            raw = fn(self.view, *args)
        except Exception as e:  # a custom function must never crash the engine
            self.errors[text] = f"{type(e).__name__}: {e}"
            self.terms[text] = None
            self.flag(text)
            return math.nan
        if isinstance(raw, np.generic):
            raw = raw.item()
        if isinstance(raw, bool):
            self.terms[text] = raw
        elif isinstance(raw, (int, float)):
            self.record(text, float(raw))
        else:
            self.errors[text] = f"returned {type(raw).__name__}, expected bool or number"
            self.terms[text] = None
            self.flag(text)
            return math.nan
        return raw

    def cond(self, node: Node) -> bool | None:
        if isinstance(node, Compare):
            a = self.num(node.left)
            b = self.num(node.right)
            bad = False
            if not _isfinite(a):
                self.flag(node.left.canonical)
                bad = True
            if not _isfinite(b):
                self.flag(node.right.canonical)
                bad = True
            if bad:
                return None
            op = node.op
            if op == "<":
                return a < b
            if op == "<=":
                return a <= b
            if op == ">":
                return a > b
            if op == ">=":
                return a >= b
            if op == "==":
                return a == b
            return a != b
        if isinstance(node, BoolOp):
            vals = [self.cond(o) for o in node.operands]  # no short-circuit: full evidence
            if node.op == "and":
                if False in vals:
                    return False
                return None if None in vals else True
            if True in vals:
                return True
            return None if None in vals else False
        if isinstance(node, Unary) and node.op == "not":
            v = self.cond(node.operand)
            return None if v is None else not v
        if isinstance(node, Call) and node.func not in BUILTIN_FUNCTIONS:
            raw = self.custom(node)
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, (int, float)):
                return bool(raw) if _isfinite(float(raw)) else None
            return None
        raise TypeError(f"not a condition: {to_source(node)}")


def _is_condition(node: Node) -> bool:
    if isinstance(node, (Compare, BoolOp)):
        return True
    if isinstance(node, Unary):
        return node.op == "not"
    return isinstance(node, Call) and node.func not in BUILTIN_FUNCTIONS


def evaluate(
    node: Node, view: Any, functions: Mapping[str, Callable[..., Any]] | None = None
) -> Evaluation:
    """Evaluate a checked expression against ``view`` (see the module docstring).

    Never raises for data problems: NaN/inf inputs, division by zero and failing custom
    functions make the affected comparisons unknown.
    """
    ev = _Eval(view, functions or {})
    if _is_condition(node):
        v = ev.cond(node)
        return Evaluation(
            value=bool(v), satisfied=v, terms=ev.terms, nonfinite_terms=ev.nonfinite, errors=ev.errors
        )
    x = ev.num(node)
    if not _isfinite(x):
        ev.flag(node.canonical)
    return Evaluation(value=x, satisfied=None, terms=ev.terms, nonfinite_terms=ev.nonfinite, errors=ev.errors)


def compile_condition(
    text: str, metrics: Collection[str], functions: Collection[str] = ()
) -> Node:
    """parse + check in one call; the error carries the text and caret."""
    node = parse(text)
    try:
        check(node, metrics, functions)
    except ExprError as e:
        raise e.with_text(text) from None
    return node


__all__ = [
    "ExprError",
    "Node",
    "Num",
    "Str",
    "Name",
    "Call",
    "Unary",
    "Binary",
    "Compare",
    "BoolOp",
    "Evaluation",
    "View",
    "tokenize",
    "parse",
    "check",
    "evaluate",
    "windows_needed",
    "phases_referenced",
    "functions_referenced",
    "uses_previous_phase",
    "compile_condition",
    "to_source",
    "walk",
    "STATISTICS",
    "BUILTIN_FUNCTIONS",
    "MAX_LENGTH",
    "MAX_DEPTH",
]
