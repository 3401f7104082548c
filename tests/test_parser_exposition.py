"""The exposition parser keeps only wanted families, reads real captures exactly and
rejects malformed input with the line number."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapter.exposition import DCGM_FAMILIES, TRITON_FAMILIES, ExpositionError, ExpositionParser

FIXTURES = Path(__file__).resolve().parent / "data" / "fixtures"
TRITON = FIXTURES / "triton-2.51-cpu-two-models-under-load.metrics.txt"
DCGM = FIXTURES / "dcgm-exporter-L4-idle.metrics.txt"
PARSER = ExpositionParser(TRITON_FAMILIES + DCGM_FAMILIES)


def _reference(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every kept sample as prometheus_client reads it (the oracle)."""
    wanted = set(TRITON_FAMILIES + DCGM_FAMILIES)
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # prometheus_client appends _total to counter samples that lack it
            name = sample.name if sample.name in wanted else sample.name.removesuffix("_total")
            if name in wanted:
                out[(name, frozenset(sample.labels.items()))] = sample.value
    return out


@pytest.mark.parametrize("path", [TRITON, DCGM], ids=["triton-2.51", "dcgm-exporter"])
def test_real_capture_matches_prometheus_client(path: Path) -> None:
    text = path.read_text()
    ours = {
        (name, frozenset(s.labels.items())): s.value
        for name, samples in PARSER.parse(text).items()
        for s in samples
    }
    assert ours == _reference(text)
    assert ours  # the capture has kept families


def test_triton_capture_values() -> None:
    families = PARSER.parse(TRITON.read_text())
    pending = {s.labels["model"]: s.value for s in families["nv_inference_pending_request_count"]}
    assert pending == {"bert": 2.0, "resnet": 47.0}
    assert "nv_cpu_utilization" not in families  # not asked for
    assert "nv_gpu_utilization" not in families  # absent in a CPU capture: absent, not 0


@pytest.mark.parametrize(
    ("line", "labels", "value"),
    [
        ('nv_gpu_utilization{gpu_uuid="GPU-1"} 0.5', {"gpu_uuid": "GPU-1"}, 0.5),
        ('nv_gpu_utilization{gpu_uuid="a"} NaN', {"gpu_uuid": "a"}, math.nan),
        ('nv_gpu_utilization{gpu_uuid="a"} +Inf', {"gpu_uuid": "a"}, math.inf),
        ('nv_gpu_utilization{gpu_uuid="a"} -Inf', {"gpu_uuid": "a"}, -math.inf),
        ('nv_gpu_utilization{gpu_uuid="a"} 1.5e-3 1700000000000', {"gpu_uuid": "a"}, 1.5e-3),
        ('nv_gpu_utilization{gpu_uuid="a",} 1', {"gpu_uuid": "a"}, 1.0),
        ('nv_gpu_utilization{ gpu_uuid = "a" } 1', {"gpu_uuid": "a"}, 1.0),
        (r'nv_gpu_utilization{x="q\"uote\\back\nline"} 2', {"x": 'q"uote\\back\nline'}, 2.0),
        ('nv_gpu_utilization{x="a,b}c"} 3', {"x": "a,b}c"}, 3.0),
        ("nv_gpu_utilization 4", {}, 4.0),
        ("nv_gpu_utilization{} 5", {}, 5.0),
        ('nv_gpu_utilization{x="y"}\t6\r', {"x": "y"}, 6.0),
    ],
)
def test_sample_syntax(line: str, labels: dict[str, str], value: float) -> None:
    text = f"# HELP nv_gpu_utilization help\n# TYPE nv_gpu_utilization gauge\n{line}\n"
    (sample,) = PARSER.parse(text)["nv_gpu_utilization"]
    assert sample.labels == labels
    assert sample.value == value or (math.isnan(value) and math.isnan(sample.value))


def test_longer_names_sharing_a_prefix_are_not_kept() -> None:
    text = (
        'nv_inference_queue_duration_us{model="m"} 10\n'
        'nv_inference_queue_duration_us_total{model="m"} 99\n'
        'nv_inference_count_bogus{model="m"} 7\n'
    )
    families = PARSER.parse(text)
    assert [s.value for s in families["nv_inference_queue_duration_us"]] == [10.0]
    assert "nv_inference_count" not in families


def test_missing_families_and_empty_input() -> None:
    assert PARSER.parse("") == {}
    assert PARSER.parse("# only a comment\n\n") == {}


@pytest.mark.parametrize(
    ("text", "line_number", "fragment"),
    [
        ('nv_gpu_utilization{gpu="a"} abc\n', 1, "not a number"),
        ('ok 1\nnv_gpu_utilization{gpu="a" 1\n', 2, "not a valid sample"),
        ("\n\nnv_gpu_utilization{gpu=a} 1\n", 3, "malformed labels"),
        ("nv_gpu_utilization\n", 1, "not a valid sample"),
        ('nv_gpu_utilization{gpu="a"} 1 2 3\n', 1, "not a valid sample"),
    ],
)
def test_malformed_lines_name_the_line(text: str, line_number: int, fragment: str) -> None:
    with pytest.raises(ExpositionError, match=rf"line {line_number}: .*{fragment}"):
        PARSER.parse(text)


def test_malformed_line_in_unwanted_family_is_ignored() -> None:
    assert PARSER.parse("nv_cpu_utilization{{{ garbage\n") == {}
