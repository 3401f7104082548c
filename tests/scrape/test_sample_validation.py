"""The parser refuses duplicates and over-cap scrapes; readings refuse values their family
cannot have, so nothing invalid is ever turned into a number that is served."""

from __future__ import annotations

import math

import pytest

from adapter.exposition import (
    DCGM_FAMILIES,
    TRITON_FAMILIES,
    DuplicateSeriesError,
    ExpositionError,
    ExpositionParser,
    TooManySeriesError,
    has_family_with_prefix,
)
from adapter.readings import ReadingError, problem, reading_from_families

PARSER = ExpositionParser(TRITON_FAMILIES + DCGM_FAMILIES)
M = ("m", "")


@pytest.mark.parametrize(
    "text",
    [
        'nv_inference_request_success{model="m"} 1\nnv_inference_request_success{model="m"} 1\n',
        # the same label set written in another order and spacing is the same series
        'nv_inference_count{a="1",model="m"} 1\nnv_inference_count{ model="m" , a="1" } 2\n',
        "nv_gpu_utilization 0.1\nnv_gpu_utilization{} 0.2\n",
    ],
)
def test_a_series_twice_is_an_error(text: str) -> None:
    with pytest.raises(DuplicateSeriesError, match=r"line 2: .* appears twice") as caught:
        PARSER.parse(text)
    assert caught.value.reason == "duplicate"


def test_same_labels_in_different_families_are_not_duplicates() -> None:
    text = 'nv_inference_count{model="m"} 1\nnv_inference_exec_count{model="m"} 1\n'
    assert set(PARSER.parse(text)) == {"nv_inference_count", "nv_inference_exec_count"}


def test_a_label_given_twice_is_malformed() -> None:
    with pytest.raises(ExpositionError, match="label 'model' given twice"):
        PARSER.parse('nv_inference_count{model="a",model="b"} 1\n')


def test_series_cap_counts_kept_samples_only() -> None:
    lines = [f'nv_inference_count{{model="m{i}"}} {i}' for i in range(10)]
    text = "\n".join(["nv_cpu_utilization 0.5", *lines, "# comment"]) + "\n"
    assert len(PARSER.parse(text, max_series=10)["nv_inference_count"]) == 10
    with pytest.raises(TooManySeriesError, match=r"line 11: more than 9 series") as caught:
        PARSER.parse(text, max_series=9)
    assert caught.value.reason == "too_many_series"


@pytest.mark.parametrize(
    ("text", "prefix", "expected"),
    [
        ("nv_pinned_memory_pool_total_bytes 268435456\n", "nv_", True),
        ('# HELP nv_x help\n# TYPE nv_x gauge\nnv_x{a="b"} 1\n', "nv_", True),
        ("# HELP nv_x only a comment\n", "nv_", False),
        ("go_goroutines 12\n", "nv_", False),
        ("<html>\nnv_ is not a sample\n</html>\n", "nv_", False),
        ('DCGM_FI_DEV_GPU_UTIL{gpu="0"} 3\n', "DCGM_", True),
        ('DCGM_FI_DEV_GPU_UTIL{gpu="0"} 3\n', "nv_", False),
    ],
)
def test_exposition_of_a_kind_needs_a_sample_of_its_prefix(
    text: str, prefix: str, expected: bool
) -> None:
    assert has_family_with_prefix(text, prefix) is expected


@pytest.mark.parametrize(
    ("value", "highest", "expected"),
    [
        (0.0, math.inf, None),
        (1e300, math.inf, None),
        (1e300, 2.0**64, "above_range"),
        (math.nan, math.inf, "nan"),
        (math.inf, math.inf, "inf"),
        (-math.inf, math.inf, "inf"),
        (-5.0, math.inf, "negative"),
        (-0.0, math.inf, None),
        (1.0, 1.0, None),
        (1.01, 1.0, "above_range"),
        (math.nan, 1.0, "nan"),
    ],
)
def test_problem(value: float, highest: float, expected: str | None) -> None:
    assert problem(value, highest) == expected


def triton_text(**overrides: str) -> str:
    values = {
        "nv_inference_request_success": "100",
        "nv_inference_request_failure": "1",
        "nv_inference_pending_request_count": "5",
        "nv_inference_queue_duration_us": "1000",
        "nv_inference_compute_infer_duration_us": "2000",
        **overrides,
    }
    lines = [f'{name}{{model="m",version="1"}} {value}' for name, value in values.items()]
    lines.append('nv_inference_request_success{model="ok",version="1"} 7')
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("family", "raw", "reason"),
    [
        ("nv_inference_request_success", "NaN", "nan"),
        ("nv_inference_request_success", "+Inf", "inf"),
        ("nv_inference_request_failure", "-1", "negative"),
        ("nv_inference_pending_request_count", "-5", "negative"),
        ("nv_inference_pending_request_count", "NaN", "nan"),
        ("nv_inference_queue_duration_us", "-Inf", "inf"),
        ("nv_inference_compute_infer_duration_us", "NaN", "nan"),
    ],
)
def test_a_model_with_an_invalid_sample_is_rejected_whole(
    family: str, raw: str, reason: str
) -> None:
    reading = reading_from_families(PARSER.parse(triton_text(**{family: raw})), "triton", 0, 0)
    assert M not in reading.models and reading.rejected_models == {M}
    assert [(r.family, r.reason, r.count) for r in reading.rejections] == [(family, reason, 1)]
    assert reading.models[("ok", "")].success == 7  # other models are unaffected


def test_clean_reading_counts_series() -> None:
    reading = reading_from_families(PARSER.parse(triton_text()), "triton", 0, 0)
    assert reading.clean and reading.rejected_models == frozenset()
    assert reading.models[M].pending == 5 and reading.series == 6


def test_counters_beyond_what_triton_can_count_are_rejected() -> None:
    """Triton's counters are unsigned 64-bit: 1e308 cannot come from Triton (and would
    turn into infinite rates downstream)."""
    text = (
        'nv_inference_request_success{model="m",version="1"} 1.8e19\n'
        'nv_inference_request_success{model="m",version="2"} 1e308\n'
        'nv_inference_request_success{model="ok",version="1"} 1.8e19\n'
        'nv_inference_request_success{model="ok",version="2"} 1.8e19\n'
    )
    summed = reading_from_families(PARSER.parse(text), "triton", 0, 0, sum_versions=True)
    assert summed.rejected_models == {M}
    assert [r.reason for r in summed.rejections] == ["above_range"]
    assert summed.models[("ok", "")].success == 3.6e19  # versions may sum past 2**64
    split = reading_from_families(PARSER.parse(text), "triton", 0, 0, sum_versions=False)
    assert set(split.models) == {("m", "1"), ("ok", "1"), ("ok", "2")}


def test_too_many_models_fails_the_reading() -> None:
    text = "".join(f'nv_inference_request_success{{model="m{i}"}} 1\n' for i in range(4))
    text += 'nv_inference_pending_request_count{model="only-pending"} 1\n'
    families = PARSER.parse(text)
    assert len(reading_from_families(families, "triton", 0, 0, max_models=5).models) == 4
    with pytest.raises(ReadingError, match="5 models in one scrape, more than 4") as caught:
        reading_from_families(families, "triton", 0, 0, max_models=4)
    assert caught.value.reason == "too_many_models"


@pytest.mark.parametrize(
    ("kind", "text", "gpu", "rejected"),
    [
        ("triton", 'nv_gpu_utilization{gpu_uuid="a"} 0.5\n', (0.5,), False),
        ("triton", 'nv_gpu_utilization{gpu_uuid="a"} 0.5\nnv_gpu_utilization 1.5\n', (), True),
        ("triton", 'nv_gpu_utilization{gpu_uuid="a"} NaN\n', (), True),
        ("dcgm", 'DCGM_FI_DEV_GPU_UTIL{gpu="0"} 100\n', (1.0,), False),
        ("dcgm", 'DCGM_FI_DEV_GPU_UTIL{gpu="0"} 101\n', (), True),
        ("dcgm", 'DCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu="0"} -0.1\n', (), True),
    ],
)
def test_gpu_utilization_out_of_range_makes_it_unknown(
    kind: str, text: str, gpu: tuple[float, ...], rejected: bool
) -> None:
    reading = reading_from_families(PARSER.parse(text), kind, 0, 0)  # type: ignore[arg-type]
    assert reading.gpu_utilization == gpu
    assert reading.gpu_rejected is rejected
