"""Whatever bytes a config file holds, loading it gives a Config or a ConfigError: nothing else.

Hypothesis drives the loader with raw bytes, random text, YAML built from random structures
under the real setting names (so it reaches the validators), and mutations of a good config.
``make fuzz`` runs each at 100,000 cases.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from adapter.config import ConfigError, parse_config
from tests.config.test_config import GOOD

pytestmark = pytest.mark.fuzz

SETTING_NAMES = [
    "listen", "tls", "cert_file", "hostnames", "scrape", "interval_seconds", "timeout_seconds",
    "max_response_bytes", "signals", "rate_window_seconds", "max_age_seconds", "targets", "url",
    "kind", "labels", "scrape_interval_seconds", "predictive", "defaults", "series", "match",
    "step_seconds", "cold_start_seconds", "capacity_rps", "min_replicas", "max_replicas",
    "slo_attainment", "forecaster", "auth", "mode", "always_allow_paths", "discovery", "kubernetes",
    "namespaces", "label_selector", "port", "copy_labels", "log", "level", "format",
]  # fmt: skip

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and ±inf included
    st.text(max_size=20),
    st.sampled_from(["http://h:8002/metrics", "triton", "delegated", "127.0.0.1:0", "holt"]),
)
STRUCTURES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(SETTING_NAMES), st.text(max_size=8)), children, max_size=5
        ),
    ),
    max_leaves=25,
)


def _load(data: bytes) -> None:
    try:
        config = parse_config(data, "fuzz.yaml")
    except ConfigError as error:
        assert error.problems
        assert all(problem.startswith("fuzz.yaml") for problem in error.problems)
        return
    # what loads is usable: every predictive setting builds, every float is finite
    config.predictive.for_series({})
    assert math.isfinite(config.scrape.interval_seconds)


@given(st.binary(max_size=300))
@example(b"\xef\xbb\xbfscrape: {interval_seconds: 1}\n")  # BOM
@example(b"a: &a [*a]\n")
def test_any_bytes(data: bytes) -> None:
    _load(data)


@given(st.text(max_size=300))
@example("[" * 3000)
@example("{a: " * 2000)
@example("- " * 3000 + "x")
@example("x: " + "9" * 5000)
@example("x: 1e" + "9" * 5000)
def test_any_text(text: str) -> None:
    _load(text.encode("utf-8", errors="surrogatepass"))


@given(STRUCTURES)
def test_yaml_of_any_structure_under_the_real_setting_names(document: Any) -> None:
    _load(yaml.safe_dump(document).encode())


@given(st.dictionaries(st.sampled_from(SETTING_NAMES), STRUCTURES, max_size=6))
def test_any_top_level_mapping(document: dict[str, Any]) -> None:
    _load(yaml.safe_dump(document).encode())


@given(
    st.lists(
        st.tuples(st.integers(0, GOOD.count("\n")), st.text(max_size=30)), min_size=1, max_size=4
    )
)
def test_mutations_of_a_good_config(edits: list[tuple[int, str]]) -> None:
    lines = GOOD.splitlines()
    for index, text in edits:
        lines.insert(index, text)
    _load("\n".join(lines).encode("utf-8", errors="surrogatepass"))
