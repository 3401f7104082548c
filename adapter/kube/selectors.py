"""Kubernetes label selectors: the grammar of apimachinery ``pkg/labels/selector.go``.

The HPA sends ``spec.metrics[].external.metric.selector`` as the ``labelSelector`` query
parameter, rendered by ``labels.Requirement.String()``. This module parses every form that
grammar accepts (``=``, ``==``, ``!=``, ``in (..)``, ``notin (..)``, ``key``, ``!key`` and
the integer comparisons ``>`` / ``<``), validates keys and values exactly as Kubernetes
does, and matches label sets with Kubernetes semantics: ``!=`` and ``notin`` match when
the key is absent.

Errors are :class:`SelectorError` and name the character offset and what was expected.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = ["Operator", "Requirement", "Selector", "SelectorError", "label_selector_json"]


class SelectorError(ValueError):
    """The label selector text is not valid; the message says where and why."""


class Operator(Enum):
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


# --- validation (apimachinery pkg/util/validation) -------------------------------------

_QUALIFIED_NAME_MAX = 63
_LABEL_VALUE_MAX = 63
_DNS1123_SUBDOMAIN_MAX = 253
_QUALIFIED_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_RE = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes qualified name (``[prefix/]name``), or None if valid."""
    parts = key.split("/")
    if len(parts) > 2:
        return (
            "a qualified name must be an optional DNS subdomain prefix and '/' followed by a name "
            "(e.g. 'example.com/MyName'); it has more than one '/'"
        )
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            return "prefix part must be non-empty"
        if len(prefix) > _DNS1123_SUBDOMAIN_MAX:
            return f"prefix part must be no more than {_DNS1123_SUBDOMAIN_MAX} characters"
        if not _DNS1123_SUBDOMAIN_RE.match(prefix):
            return (
                "prefix part must be a lowercase RFC 1123 subdomain: lowercase alphanumeric "
                "characters, '-' or '.', starting and ending with an alphanumeric character"
            )
    if not name:
        return "name part must be non-empty"
    if len(name) > _QUALIFIED_NAME_MAX:
        return f"name part must be no more than {_QUALIFIED_NAME_MAX} characters"
    if not _QUALIFIED_NAME_RE.match(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a valid Kubernetes label value, or None if valid (empty is valid)."""
    if len(value) > _LABEL_VALUE_MAX:
        return f"must be no more than {_LABEL_VALUE_MAX} characters"
    if not _LABEL_VALUE_RE.match(value):
        return (
            "a valid label value must be an empty string or consist of alphanumeric characters, "
            "'-', '_' or '.', and must start and end with an alphanumeric character"
        )
    return None


# --- lexer --------------------------------------------------------------------------


class _Tok(Enum):
    IDENTIFIER = "identifier"
    END = "end of string"
    CLOSED_PAR = "')'"
    COMMA = "','"
    DOES_NOT_EXIST = "'!'"
    DOUBLE_EQUALS = "'=='"
    EQUALS = "'='"
    GREATER_THAN = "'>'"
    IN = "'in'"
    LESS_THAN = "'<'"
    NOT_EQUALS = "'!='"
    NOT_IN = "'notin'"
    OPEN_PAR = "'('"


_SYMBOLS: dict[str, _Tok] = {
    ")": _Tok.CLOSED_PAR,
    ",": _Tok.COMMA,
    "!": _Tok.DOES_NOT_EXIST,
    "==": _Tok.DOUBLE_EQUALS,
    "=": _Tok.EQUALS,
    ">": _Tok.GREATER_THAN,
    "<": _Tok.LESS_THAN,
    "!=": _Tok.NOT_EQUALS,
    "(": _Tok.OPEN_PAR,
}
_KEYWORDS = {"in": _Tok.IN, "notin": _Tok.NOT_IN}
_WHITESPACE = frozenset(" \t\r\n")
_SPECIAL = frozenset("=!(),><")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Tok
    text: str
    pos: int

    def describe(self) -> str:
        return "end of string" if self.kind is _Tok.END else _shown(self.text)


_SHOWN_MAX_CHARS = 100


def _shown(text: str) -> str:
    """``repr(text)``, cut to its first 100 characters: error messages quote what the client
    sent, and a selector may be kilobytes long."""
    if len(text) <= _SHOWN_MAX_CHARS:
        return repr(text)
    return f"{text[:_SHOWN_MAX_CHARS]!r}... ({len(text)} characters)"


def _lex(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _WHITESPACE:
            i += 1
        if i >= n:
            tokens.append(_Token(_Tok.END, "", n))
            return tokens
        start = i
        if text[i] in _SPECIAL:
            # longest symbol match, as the Go lexer's scanSpecialSymbol
            if text[i : i + 2] in _SYMBOLS:
                i += 2
            else:
                i += 1
            tokens.append(_Token(_SYMBOLS[text[start:i]], text[start:i], start))
        else:
            while i < n and text[i] not in _WHITESPACE and text[i] not in _SPECIAL:
                i += 1
            word = text[start:i]
            tokens.append(_Token(_KEYWORDS.get(word, _Tok.IDENTIFIER), word, start))


# --- requirements -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Requirement:
    """One ``key <op> values`` term; a selector is the AND of its requirements."""

    key: str
    operator: Operator
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op in (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.IN):
            return self.key in labels and labels[self.key] in self.values
        if op in (Operator.NOT_EQUALS, Operator.NOT_IN):
            return self.key not in labels or labels[self.key] not in self.values
        if op is Operator.EXISTS:
            return self.key in labels
        if op is Operator.DOES_NOT_EXIST:
            return self.key not in labels
        # GREATER_THAN / LESS_THAN: both sides must be int64
        if self.key not in labels:
            return False
        actual = _parse_int64(labels[self.key])
        if actual is None:
            return False
        (bound_text,) = self.values
        bound = _parse_int64(bound_text)
        if bound is None:  # parse() admits only int64 bounds; a hand-built one may not be
            return False
        return actual > bound if op is Operator.GREATER_THAN else actual < bound

    def __str__(self) -> str:
        values = sorted(self.values)
        match self.operator:
            case Operator.EXISTS:
                return self.key
            case Operator.DOES_NOT_EXIST:
                return f"!{self.key}"
            case Operator.IN | Operator.NOT_IN:
                return f"{self.key} {self.operator.value} ({','.join(values)})"
            case Operator.GREATER_THAN:
                return f"{self.key}>{values[0]}"
            case Operator.LESS_THAN:
                return f"{self.key}<{values[0]}"
            case _:
                return f"{self.key}{self.operator.value}{values[0]}"


_INT64_DIGITS = len(str(_INT64_MAX))


def _parse_int64(text: str) -> int | None:
    """Go ``strconv.ParseInt(text, 10, 64)``: optional sign, ASCII digits, int64 range.

    The digits are counted before ``int()`` runs: a number longer than any int64 is out of
    range whatever its value, and ``int()`` of a 4,301-digit string raises instead.
    """
    negative = text[:1] == "-"
    body = text[1:] if text[:1] in ("+", "-") else text
    if not body or not body.isascii() or not body.isdigit():
        return None
    digits = body.lstrip("0") or "0"
    if len(digits) > _INT64_DIGITS:
        return None
    value = -int(digits) if negative else int(digits)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


# --- parser -------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self._text = text
        self._tokens = _lex(text)
        self._index = 0

    def _fail(self, token: _Token, problem: str) -> SelectorError:
        return SelectorError(
            f"invalid label selector {_shown(self._text)}: at position {token.pos}: {problem}"
        )

    def _peek(self, values: bool) -> _Token:
        return self._as_context(self._tokens[self._index], values)

    def _next(self, values: bool) -> _Token:
        token = self._tokens[self._index]
        if token.kind is not _Tok.END:
            self._index += 1
        return self._as_context(token, values)

    @staticmethod
    def _as_context(token: _Token, values: bool) -> _Token:
        # In the Go parser's "Values" context the keywords in/notin are plain identifiers,
        # so a label may be called "in" and a value may be "notin".
        if values and token.kind in (_Tok.IN, _Tok.NOT_IN):
            return _Token(_Tok.IDENTIFIER, token.text, token.pos)
        return token

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            token = self._peek(values=True)
            if token.kind is _Tok.END:
                return requirements
            if token.kind not in (_Tok.IDENTIFIER, _Tok.DOES_NOT_EXIST):
                raise self._fail(
                    token, f"found {token.describe()}, expected: '!', a label key or end of string"
                )
            requirements.append(self._requirement())
            after = self._next(values=True)
            if after.kind is _Tok.END:
                return requirements
            if after.kind is not _Tok.COMMA:
                raise self._fail(after, f"found {after.describe()}, expected: ',' or end of string")
            following = self._peek(values=True)
            if following.kind not in (_Tok.IDENTIFIER, _Tok.DOES_NOT_EXIST):
                raise self._fail(
                    following, f"found {following.describe()}, expected: a label key after ','"
                )

    def _requirement(self) -> Requirement:
        token = self._next(values=True)
        negated = token.kind is _Tok.DOES_NOT_EXIST
        if negated:
            token = self._next(values=True)
        if token.kind is not _Tok.IDENTIFIER:
            raise self._fail(token, f"found {token.describe()}, expected: a label key")
        key = token.text
        problem = label_key_problem(key)
        if problem is not None:
            raise self._fail(token, f"invalid label key {_shown(key)}: {problem}")
        if self._peek(values=True).kind in (_Tok.END, _Tok.COMMA):
            op = Operator.DOES_NOT_EXIST if negated else Operator.EXISTS
            return Requirement(key, op, frozenset())
        if negated:
            # Go falls through to parseOperator here and reports the unexpected token
            extra = self._peek(values=False)
            raise self._fail(
                extra, f"found {extra.describe()}, expected: ',' or end of string after '!{key}'"
            )
        op_token = self._next(values=False)
        operator = _BINARY_OPERATORS.get(op_token.kind)
        if operator is None:
            raise self._fail(
                op_token,
                f"found {op_token.describe()} after key {_shown(key)}, expected one of: "
                "=, ==, !=, in, notin, >, <",
            )
        if operator in (Operator.IN, Operator.NOT_IN):
            values, value_tokens = self._value_set()
        else:
            values, value_tokens = self._exact_value()
        if operator in (Operator.GREATER_THAN, Operator.LESS_THAN):
            (value,) = values
            if _parse_int64(value) is None:
                raise self._fail(
                    value_tokens[0] if value_tokens else op_token,
                    f"the value after {_shown(key + op_token.text)} must be an integer, "
                    f"got {_shown(value)}",
                )
        token_of = {t.text: t for t in value_tokens}
        for value in sorted(values):
            where = token_of.get(value, op_token)
            value_problem = label_value_problem(value)
            if value_problem is not None:
                raise self._fail(
                    where, f"invalid value {_shown(value)} for key {_shown(key)}: {value_problem}"
                )
        return Requirement(key, operator, frozenset(values))

    def _exact_value(self) -> tuple[set[str], list[_Token]]:
        token = self._peek(values=True)
        if token.kind in (_Tok.END, _Tok.COMMA):
            return {""}, []
        token = self._next(values=True)
        if token.kind is _Tok.IDENTIFIER:
            return {token.text}, [token]
        raise self._fail(token, f"found {token.describe()}, expected: a value")

    def _value_set(self) -> tuple[set[str], list[_Token]]:
        opening = self._next(values=True)
        if opening.kind is not _Tok.OPEN_PAR:
            raise self._fail(opening, f"found {opening.describe()}, expected: '('")
        first = self._peek(values=True)
        if first.kind is _Tok.CLOSED_PAR:  # "()" is the set {""}, as in Go
            self._next(values=True)
            return {""}, []
        if first.kind not in (_Tok.IDENTIFIER, _Tok.COMMA):
            raise self._fail(first, f"found {first.describe()}, expected: ',', ')' or a value")
        values: set[str] = set()
        tokens: list[_Token] = []
        while True:
            token = self._next(values=True)
            if token.kind is _Tok.IDENTIFIER:
                values.add(token.text)
                tokens.append(token)
                after = self._peek(values=True)
                if after.kind is _Tok.COMMA:
                    continue
                if after.kind is _Tok.CLOSED_PAR:
                    self._next(values=True)
                    return values, tokens
                raise self._fail(after, f"found {after.describe()}, expected: ',' or ')'")
            if token.kind is _Tok.COMMA:
                # empty elements: "(,a)", "(a,,b)", "(a,)" each add the empty value
                if not values:
                    values.add("")
                after = self._peek(values=True)
                if after.kind is _Tok.CLOSED_PAR:
                    values.add("")
                    self._next(values=True)
                    return values, tokens
                if after.kind is _Tok.COMMA:
                    self._next(values=True)
                    values.add("")
                continue
            raise self._fail(token, f"found {token.describe()}, expected: ',' or a value")


_BINARY_OPERATORS: dict[_Tok, Operator] = {
    _Tok.IN: Operator.IN,
    _Tok.EQUALS: Operator.EQUALS,
    _Tok.DOUBLE_EQUALS: Operator.DOUBLE_EQUALS,
    _Tok.GREATER_THAN: Operator.GREATER_THAN,
    _Tok.LESS_THAN: Operator.LESS_THAN,
    _Tok.NOT_IN: Operator.NOT_IN,
    _Tok.NOT_EQUALS: Operator.NOT_EQUALS,
}


# --- selector -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed label selector: the AND of its requirements; empty matches everything.

    ``source`` is the text it was parsed from, kept for error messages and logs.
    """

    requirements: tuple[Requirement, ...]
    source: str

    @classmethod
    def parse(cls, text: str) -> Selector:
        """Parse ``text`` with the Kubernetes grammar; raise :class:`SelectorError` if invalid.

        An HPA sends the same selector every sync, so parses are kept in a bounded LRU
        (:data:`PARSED_SELECTORS_CACHED` texts; a selector is immutable). Errors are not kept.
        """
        return _parse_cached(text)

    @classmethod
    def everything(cls) -> Selector:
        return cls((), "")

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def is_everything(self) -> bool:
        return not self.requirements

    def __str__(self) -> str:
        """The canonical form Kubernetes would send (sorted by key, comma-joined)."""
        return ",".join(str(r) for r in self.requirements)


PARSED_SELECTORS_CACHED = 4096
"""Distinct selector texts whose parse is kept: a fleet's HPAs send a few per Deployment."""


@functools.lru_cache(maxsize=PARSED_SELECTORS_CACHED)
def _parse_cached(text: str) -> Selector:
    requirements = _Parser(text).parse()
    requirements.sort(key=lambda r: r.key)
    return Selector(tuple(requirements), text)


_EXPRESSION_OPERATORS = {
    Operator.IN: "In",
    Operator.NOT_IN: "NotIn",
    Operator.NOT_EQUALS: "NotIn",
    Operator.EXISTS: "Exists",
    Operator.DOES_NOT_EXIST: "DoesNotExist",
}


def label_selector_json(selector: Selector) -> dict[str, Any] | None:
    """``selector`` as a ``metav1.LabelSelector`` (Go's ``ParseToLabelSelector``), for echoing
    in API answers; None for the empty selector (Go writes ``null``) and for ``>``/``<``, which
    a LabelSelector cannot express. ``!=`` becomes ``NotIn`` with one value (the same set)."""
    if selector.is_everything():
        return None
    match_labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for requirement in selector.requirements:
        if requirement.operator in (Operator.EQUALS, Operator.DOUBLE_EQUALS):
            (match_labels[requirement.key],) = requirement.values
            continue
        operator = _EXPRESSION_OPERATORS.get(requirement.operator)
        if operator is None:
            return None
        expression: dict[str, Any] = {"key": requirement.key, "operator": operator}
        if requirement.values:
            expression["values"] = sorted(requirement.values)
        expressions.append(expression)
    body: dict[str, Any] = {}
    if match_labels:
        body["matchLabels"] = match_labels
    if expressions:
        body["matchExpressions"] = expressions
    return body
