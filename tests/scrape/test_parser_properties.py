"""Property-based tests of the exposition parser (``make fuzz``: 100,000 cases each).

Any text either parses or raises :class:`ExpositionError`; an exposition rendered from
known samples parses back to exactly those samples of the kept families, and a series
given twice or more series than the cap is refused, never summed or truncated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.exposition import (
    DCGM_FAMILIES,
    MAX_REMEMBERED_HEADS,
    TRITON_FAMILIES,
    DuplicateSeriesError,
    ExpositionError,
    ExpositionParser,
    Families,
    TooManySeriesError,
    has_family_with_prefix,
)

pytestmark = pytest.mark.fuzz

KEPT = TRITON_FAMILIES + DCGM_FAMILIES
PARSER = ExpositionParser(KEPT)
# Names the parser must skip, some sharing a kept name's prefix.
OTHER = (
    "nv_cpu_utilization",
    "nv_inference_count_total",
    "nv_inference_queue_duration_us_bucket",
    "DCGM_FI_DEV_GPU_UTILX",
    "go_goroutines",
    "process_cpu_seconds_total",
)

label_names = st.sampled_from(("model", "version", "gpu_uuid", "reason", "le", "a_b", "_x"))
label_values = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8
)  # any text: quotes, backslashes and newlines are escaped when rendered
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20).map(float),
)


@dataclass(frozen=True)
class Line:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    timestamp: int | None
    spacing: str  # between labels and value
    trailing_comma: bool


@st.composite
def sample_lines(draw: st.DrawFn) -> Line:
    name = draw(st.sampled_from(KEPT + OTHER))
    labels = draw(st.dictionaries(label_names, label_values, max_size=3))
    return Line(
        name,
        tuple(labels.items()),
        draw(values),
        draw(st.none() | st.integers(min_value=-(10**13), max_value=10**13)),
        draw(st.sampled_from((" ", "\t", "  ", " \t"))),
        draw(st.booleans()),
    )


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def render(line: Line) -> str:
    text = line.name
    if line.labels or line.trailing_comma:
        inner = ",".join(f'{k}="{escape(v)}"' for k, v in line.labels)
        text += "{" + inner + ("," if line.trailing_comma and line.labels else "") + "}"
    text += line.spacing + render_value(line.value)
    if line.timestamp is not None:
        text += f" {line.timestamp}"
    return text


noise = st.sampled_from(
    ("", "# HELP nv_inference_count help text", "# TYPE nv_gpu_utilization gauge", "#", "  ")
)


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@given(
    lines=st.lists(st.tuples(sample_lines(), noise), max_size=15),
    crlf=st.booleans(),
    cap=st.none() | st.integers(min_value=0, max_value=20),
)
def test_rendered_exposition_parses_back_exactly(
    lines: list[tuple[Line, str]], crlf: bool, cap: int | None
) -> None:
    newline = "\r\n" if crlf else "\n"
    text = newline.join(f"{comment}{newline}{render(line)}" for line, comment in lines)

    expected: Families = {}
    seen: set[tuple[str, frozenset[tuple[str, str]]]] = set()
    failure: type[ExpositionError] | None = None
    for line, _comment in lines:
        if line.name not in KEPT:
            continue
        key = (line.name, frozenset(line.labels))
        if key in seen:
            failure = DuplicateSeriesError
            break
        seen.add(key)
        if cap is not None and len(seen) > cap:
            failure = TooManySeriesError
            break
        expected.setdefault(line.name, []).append((dict(line.labels), line.value))

    if failure is not None:
        with pytest.raises(failure):
            PARSER.parse(text, cap)
        return
    parsed = PARSER.parse(text, cap)
    assert set(parsed) == set(expected)
    for name, samples in parsed.items():
        want = expected[name]
        assert [s.labels for s in samples] == [labels for labels, _ in want]
        assert all(same(s.value, v) for s, (_, v) in zip(samples, want, strict=True))


@given(st.text(max_size=400))
def test_any_text_parses_or_is_refused_with_a_line_number(text: str) -> None:
    check_total(text)


@given(
    lines=st.lists(sample_lines(), min_size=1, max_size=8),
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.sampled_from(("delete", "insert", "replace"))),
        min_size=1,
        max_size=6,
    ),
    alphabet=st.text(alphabet='{}",=\\ \t\n#abnNIf+-.0123456789e_', min_size=1, max_size=3),
)
def test_mutated_expositions_parse_or_are_refused(
    lines: list[Line], edits: list[tuple[int, str]], alphabet: str
) -> None:
    """Near-valid input (a valid exposition with a few characters changed) reaches the
    parser's deeper paths that arbitrary text rarely does."""
    text = "\n".join(render(line) for line in lines)
    for position, edit in edits:
        where = position % (len(text) + 1)
        if edit == "delete":
            text = text[:where] + text[where + 1 :]
        elif edit == "insert":
            text = text[:where] + alphabet + text[where:]
        else:
            text = text[:where] + alphabet + text[where + len(alphabet) :]
    check_total(text)


def outcome(parser: ExpositionParser, text: str) -> tuple[str, object]:
    """What ``parser`` makes of ``text``: the samples (values as repr, so NaN compares), or
    the error's type and message."""
    try:
        parsed = parser.parse(text, 50)
    except ExpositionError as err:
        return type(err).__name__, str(err)
    return "parsed", {
        name: [(dict(s.labels), repr(s.value)) for s in samples] for name, samples in parsed.items()
    }


@given(
    lines=st.lists(sample_lines(), min_size=1, max_size=8),
    tails=st.lists(
        st.text(alphabet=" \t\r\u2003\x0b\x1c{}1e.5nNaIf+-_x", max_size=4), min_size=1, max_size=8
    ),
)
def test_remembered_heads_change_no_result(lines: list[Line], tails: list[str]) -> None:
    """A parser that has seen a line's head (name and labels) before parses the line with
    any other text after the last space, valid or not, exactly as a fresh parser does."""
    text = "\n".join(render(line) for line in lines)
    remembering = ExpositionParser(KEPT)
    first = outcome(remembering, text)
    assert outcome(remembering, text) == first == outcome(ExpositionParser(KEPT), text)
    changed = "\n".join(
        line.rpartition(" ")[0] + " " + tails[index % len(tails)]
        for index, line in enumerate(text.split("\n"))
    )
    assert outcome(remembering, changed) == outcome(ExpositionParser(KEPT), changed)


def test_remembered_heads_are_bounded() -> None:
    parser = ExpositionParser(KEPT)
    lines = [f'nv_inference_request_success{{model="m{i}"}} 1' for i in range(12_000)]
    parsed = parser.parse("\n".join(lines))
    assert len(parsed["nv_inference_request_success"]) == 12_000
    assert 0 < parser.remembered_heads <= MAX_REMEMBERED_HEADS


def check_total(text: str) -> None:
    """``text`` parses or is refused naming a line, and a parser that remembers what it
    parsed before (``PARSER``, shared by every example) says what a fresh one says."""
    fresh = outcome(ExpositionParser(KEPT), text)
    assert outcome(PARSER, text) == fresh
    assert outcome(PARSER, text) == fresh  # now with this text's heads remembered
    try:
        parsed = PARSER.parse(text, 50)
    except ExpositionError as err:
        assert str(err).startswith("line "), err
        assert err.reason in ("malformed", "duplicate", "too_many_series")
        return
    total = 0
    for name, samples in parsed.items():
        assert name in KEPT
        keys = {frozenset(s.labels.items()) for s in samples}
        assert len(keys) == len(samples)  # never a series twice
        total += len(samples)
        for sample in samples:
            assert isinstance(sample.value, float)
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in sample.labels.items())
    assert total <= 50
    for prefix in ("nv_", "DCGM_"):
        found = has_family_with_prefix(text, prefix)
        if any(name.startswith(prefix) for name in parsed):
            assert found  # a kept sample of the kind is always recognised
