"""Properties of the label-selector parser (hypothesis): round trips, matching against a
reference, and no exception but SelectorError whatever the text.

``make fuzz`` runs these at 100,000 cases each (``HYPOTHESIS_PROFILE=fuzz``).
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from adapter.kube.selectors import Operator, Requirement, Selector, SelectorError

pytestmark = pytest.mark.fuzz

_INT64_MAX = 2**63 - 1

_NAME = st.from_regex(r"\A[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?\Z")
_DNS_LABEL = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?\Z")
_PREFIX = st.lists(_DNS_LABEL, min_size=1, max_size=3).map(".".join)
KEYS = st.one_of(_NAME, st.tuples(_PREFIX, _NAME).map("/".join))
VALUES = st.one_of(st.just(""), _NAME)
INT_VALUES = st.integers(min_value=0, max_value=_INT64_MAX).map(str)


@st.composite
def requirements(draw: st.DrawFn) -> Requirement:
    """A valid requirement of any operator, with values Kubernetes accepts for it."""
    key = draw(KEYS)
    operator = draw(st.sampled_from(Operator))
    if operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
        values: frozenset[str] = frozenset()
    elif operator in (Operator.IN, Operator.NOT_IN):
        values = frozenset(draw(st.lists(VALUES, min_size=1, max_size=4)))
    elif operator in (Operator.GREATER_THAN, Operator.LESS_THAN):
        values = frozenset({draw(INT_VALUES)})
    else:
        values = frozenset({draw(VALUES)})
    return Requirement(key, operator, values)


_SPACE = st.text(alphabet=" \t\n", max_size=2)


@st.composite
def rendered(draw: st.DrawFn, requirement: Requirement) -> str:
    """``requirement`` as a client could write it: any whitespace between tokens, any
    value order (``str(requirement)`` is the canonical form)."""

    def gap() -> str:
        return draw(_SPACE)

    key, op = requirement.key, requirement.operator
    values = draw(st.permutations(sorted(requirement.values)))
    if op is Operator.EXISTS:
        return key
    if op is Operator.DOES_NOT_EXIST:
        return f"!{gap()}{key}"
    if op in (Operator.IN, Operator.NOT_IN):
        # the set {""} is written "()": Go's parser reads an empty set as one empty value
        inner = ",".join(f"{gap()}{v}{gap()}" for v in values) if values != [""] else ""
        return f"{key} {gap()}{op.value} {gap()}({inner})"
    symbol = {Operator.GREATER_THAN: ">", Operator.LESS_THAN: "<"}.get(op, op.value)
    return f"{key}{gap()}{symbol}{gap()}{values[0]}"


@st.composite
def selectors(draw: st.DrawFn) -> tuple[list[Requirement], str]:
    parts = draw(st.lists(requirements(), max_size=5))
    text = ",".join(f"{draw(_SPACE)}{draw(rendered(r))}{draw(_SPACE)}" for r in parts)
    return parts, text


def _key(requirement: Requirement) -> tuple[str, str, tuple[str, ...]]:
    return requirement.key, requirement.operator.value, tuple(sorted(requirement.values))


@given(selectors())
def test_valid_selectors_parse_to_what_was_written(case: tuple[list[Requirement], str]) -> None:
    written, text = case
    parsed = Selector.parse(text)
    assert sorted(map(_key, parsed.requirements)) == sorted(map(_key, written))
    assert parsed.source == text


@given(selectors())
def test_canonical_form_round_trips(case: tuple[list[Requirement], str]) -> None:
    parsed = Selector.parse(case[1])
    again = Selector.parse(str(parsed))
    assert again.requirements == parsed.requirements
    assert str(again) == str(parsed)


def _reference_match(requirement: Requirement, labels: Mapping[str, str]) -> bool:
    """Kubernetes' matching rules, written out independently of the implementation."""
    present = requirement.key in labels
    value = labels.get(requirement.key)
    match requirement.operator:
        case Operator.EQUALS | Operator.DOUBLE_EQUALS | Operator.IN:
            return present and value in requirement.values
        case Operator.NOT_EQUALS | Operator.NOT_IN:
            return not present or value not in requirement.values
        case Operator.EXISTS:
            return present
        case Operator.DOES_NOT_EXIST:
            return not present
    if value is None or not value.lstrip("-").isdigit() or not value.isascii():
        return False
    (bound,) = requirement.values
    number = int(value)
    if not -(2**63) <= number <= _INT64_MAX:
        return False
    return (
        number > int(bound)
        if requirement.operator is Operator.GREATER_THAN
        else number < int(bound)
    )


LABEL_SETS = st.dictionaries(
    st.one_of(KEYS, st.sampled_from(["a", "model", "replicas"])),
    st.one_of(VALUES, INT_VALUES, st.sampled_from(["-3", "9" * 25, "x"])),
    max_size=4,
)


@given(selectors(), LABEL_SETS)
def test_matching_is_the_and_of_kubernetes_rules(
    case: tuple[list[Requirement], str], labels: dict[str, str]
) -> None:
    written, text = case
    expected = all(_reference_match(r, labels) for r in written)
    assert Selector.parse(text).matches(labels) is expected


# Characters the grammar gives meaning to, so random text reaches deep into the parser.
_GRAMMAR = st.lists(
    st.sampled_from([*"=!(),<>  \t-_./aZ09+", "in", "notin", "9" * 30]), max_size=40
).map("".join)


@given(st.one_of(st.text(max_size=60), _GRAMMAR))
@example("a>" + "9" * 4301)  # int() refuses 4,301 digits: it must be a SelectorError
@example("a<+" + "0" * 5000 + "1")
@example("a in (" + "b," * 2000 + ")")
def test_any_text_parses_or_raises_selector_error(text: str) -> None:
    try:
        parsed = Selector.parse(text)
    except SelectorError as error:
        assert len(str(error)) < 1000  # quotes the input, cut short
        return
    assert Selector.parse(str(parsed)).requirements == parsed.requirements
