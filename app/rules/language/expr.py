"""Arithmetic in rule conditions: ``{field: amount, gt: {expr: "3 * attributes.avg_amount"}}``.

A tiny recursive-descent parser over numbers, dotted field paths, ``+ - * /``, unary
minus and parentheses. User text is only ever tokenised here — never handed to
``eval``/``ast`` — so an expression can read fields and do arithmetic, nothing else.

At run time ``evaluate`` returns None (and the comparison is then false, like a
comparison on a missing field) when an operand is missing or not a number, on division
by zero, or when the result is not finite.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeAlias

MAX_EXPRESSION_LENGTH = 500
_MAX_DEPTH = 50

_TOKEN_RE = re.compile(
    r"\s*(?:"
    r"(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<path>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)"
    r"|(?P<op>[-+*/()])"
    r")"
)


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Ref:
    path: str


@dataclass(frozen=True)
class Neg:
    operand: Node


@dataclass(frozen=True)
class BinOp:
    op: str
    left: Node
    right: Node


Node: TypeAlias = Num | Ref | Neg | BinOp


@dataclass(frozen=True)
class Expression:
    """A parsed expression; ``text`` is what the author wrote, ``canonical`` is the same
    meaning fully parenthesised (used for hashing and comparing rules)."""

    text: str
    tree: Node

    @property
    def canonical(self) -> str:
        return _canonical(self.tree)

    @property
    def paths(self) -> tuple[str, ...]:
        """Every field path the expression reads, in order of appearance."""
        return tuple(_paths(self.tree))


class ExpressionError(ValueError):
    """A syntax error; ``column`` is 1-based within the expression text."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message)
        self.column = column


@dataclass(frozen=True)
class _Token:
    kind: str  # "number" | "path" | "op" | "end"
    text: str
    column: int


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN_RE.match(text, position)
        if match is None or match.end() == position or match.lastgroup is None:
            column = position + len(text[position:]) - len(text[position:].lstrip()) + 1
            raise ExpressionError(
                f"unexpected character {text[column - 1]!r} — use numbers, field paths, "
                "+ - * / and parentheses",
                column,
            )
        kind = match.lastgroup
        tokens.append(_Token(kind, match.group(kind), match.start(kind) + 1))
        position = match.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.index = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def expression(self) -> Node:
        node = self.term()
        while self.peek().text in ("+", "-") and self.peek().kind == "op":
            op = self.take().text
            node = BinOp(op, node, self.term())
        return node

    def term(self) -> Node:
        node = self.factor()
        while self.peek().text in ("*", "/") and self.peek().kind == "op":
            op = self.take().text
            node = BinOp(op, node, self.factor())
        return node

    def factor(self) -> Node:
        token = self.take()
        if token.kind == "number":
            return Num(float(token.text))
        if token.kind == "path":
            return Ref(token.text)
        if token.text == "-":
            return Neg(self.nested(self.factor))
        if token.text == "(":
            inner = self.nested(self.expression)
            closing = self.take()
            if closing.text != ")":
                raise ExpressionError(
                    f"expected ')' to close the '(' at column {token.column}, "
                    f"found {_shown(closing)}",
                    closing.column,
                )
            return inner
        raise ExpressionError(
            f"expected a number, a field path or '(', found {_shown(token)}", token.column
        )

    def nested(self, parse: Callable[[], Node]) -> Node:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise ExpressionError("the expression nests too deeply — simplify it", 1)
        try:
            return parse()
        finally:
            self.depth -= 1


def _shown(token: _Token) -> str:
    return "the end of the expression" if token.kind == "end" else f"'{token.text}'"


def parse_expression(text: str) -> Expression:
    """Parse ``text``; raises ``ExpressionError`` with the 1-based column of the problem."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(
            f"the expression is longer than {MAX_EXPRESSION_LENGTH} characters", 1
        )
    parser = _Parser(text)
    tree = parser.expression()
    extra = parser.peek()
    if extra.kind != "end":
        raise ExpressionError(f"unexpected {_shown(extra)} — join terms with + - * /", extra.column)
    return Expression(text.strip(), tree)


def _canonical(node: Node) -> str:
    if isinstance(node, Num):
        return repr(node.value)
    if isinstance(node, Ref):
        return node.path
    if isinstance(node, Neg):
        return f"(-{_canonical(node.operand)})"
    return f"({_canonical(node.left)} {node.op} {_canonical(node.right)})"


def _paths(node: Node) -> Iterator[str]:
    if isinstance(node, Ref):
        yield node.path
    elif isinstance(node, Neg):
        yield from _paths(node.operand)
    elif isinstance(node, BinOp):
        yield from _paths(node.left)
        yield from _paths(node.right)


def evaluate(node: Node, value_of: Callable[[str], float | None]) -> float | None:
    """The value of ``node``; ``value_of(path)`` gives a field's number or None.

    None when an operand is missing, on division by zero, or on a non-finite result.
    """
    result = _evaluate(node, value_of)
    return result if result is not None and math.isfinite(result) else None


def _evaluate(  # noqa: PLR0911 - one return per node kind and operator
    node: Node, value_of: Callable[[str], float | None]
) -> float | None:
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Ref):
        return value_of(node.path)
    if isinstance(node, Neg):
        inner = _evaluate(node.operand, value_of)
        return None if inner is None else -inner
    left = _evaluate(node.left, value_of)
    right = _evaluate(node.right, value_of)
    if left is None or right is None:
        return None
    if node.op == "+":
        return left + right
    if node.op == "-":
        return left - right
    if node.op == "*":
        return left * right
    if right == 0:
        return None
    return left / right
