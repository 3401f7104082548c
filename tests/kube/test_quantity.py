"""float -> canonical resource.Quantity, checked against apimachinery's examples and rules."""

from __future__ import annotations

import decimal
import math
import random
import re
from decimal import Decimal

import pytest

from adapter.kube.quantity import MAX_MAGNITUDE, QuantityError, format_quantity, parse_quantity

INT64_MAX = 2**63 - 1
NANO = Decimal("1e-9")
CANONICAL = re.compile(r"^-?(0|[1-9][0-9]*)(n|u|m|k|M|G|T|P)?$")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # the table in the reference (apimachinery quantity_test.go and CanonicalizeBytes rules)
        (1.5, "1500m"),
        (2.0, "2"),
        (1500.0, "1500"),
        (12000.0, "12k"),
        (0.08, "80m"),
        (1.08, "1080m"),
        (3000.0, "3k"),
        (300e6, "300M"),
        (0.0, "0"),
        (-0.0, "0"),
        # negatives mirror positives
        (-1.5, "-1500m"),
        (-12000.0, "-12k"),
        # sub-milli precision is kept down to nano, then rounded up (away from zero)
        (0.0001, "100u"),
        (1e-9, "1n"),
        (1e-12, "1n"),
        (-1e-12, "-1n"),
        (1.0000000001, "1000000001n"),
        (0.1 + 0.2, "300000001n"),  # repr 0.30000000000000004 rounds up at the 9th decimal
        (2.5e-6, "2500n"),
        (1e15, "1P"),
        (4.2e12, "4200G"),
    ],
)
def test_canonical_form(value: float, expected: str) -> None:
    assert format_quantity(value) == expected


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values_raise_instead_of_becoming_zero(value: float) -> None:
    with pytest.raises(QuantityError, match="cannot be served"):
        format_quantity(value)


@pytest.mark.parametrize("value", [1e16, 1e300, 9.3e15, -1e300])
def test_huge_values_are_capped_so_milli_value_fits_int64(value: float) -> None:
    text = format_quantity(value)
    assert text == ("-" if value < 0 else "") + f"{INT64_MAX}m"
    assert abs(parse_quantity(text)) * 1000 == INT64_MAX


def test_cap_is_int64_max_milli() -> None:
    assert MAX_MAGNITUDE * 1000 == INT64_MAX


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1500m", "1.5"),
        ("1.5", "1.5"),
        ("12k", "12000"),
        ("1Ki", "1024"),
        ("1e3", "1000"),
        ("1E-3", "0.001"),
        (".5", "0.5"),
        ("5.", "5"),
        ("+2", "2"),
        ("-1n", "-0.000000001"),
        ("1u", "0.000001"),
        ("0.0000000001", "0.000000001"),  # rounded up to nano, as ParseQuantity
    ],
)
def test_parse_quantity_grammar(text: str, expected: str) -> None:
    assert parse_quantity(text) == Decimal(expected)


@pytest.mark.parametrize("text", ["", "1.5.5", "1x", "ki", "1 k", "NaN", "--1"])
def test_parse_quantity_rejects_garbage(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


def _random_floats(count: int) -> list[float]:
    rng = random.Random(20260820)
    values = [0.1, 1 / 3, 2 / 3, 123.456789123456, 9.999999999e-10, 4.9e-10]
    while len(values) < count:
        mantissa = rng.uniform(-10.0, 10.0)
        exponent = rng.randint(-13, 16)
        values.append(mantissa * 10.0**exponent)
    return values


def test_round_trip_is_canonical_and_within_one_nano() -> None:
    for value in _random_floats(20_000):
        text = format_quantity(value)
        assert CANONICAL.match(text), (value, text)
        mantissa = int(re.sub(r"[a-zA-Z]$", "", text))
        if mantissa != 0 and not text.endswith("P"):
            # "the exponent (or suffix) is as large as possible": no 3 trailing zeros left
            assert mantissa % 1000 != 0, (value, text)
        parsed = parse_quantity(text)
        exact = min(abs(Decimal(repr(value))), MAX_MAGNITUDE)
        # rounding is away from zero, by less than one nano step
        assert exact <= abs(parsed) < exact + NANO, (value, text)
        if exact > 0:
            assert (parsed < 0) is (value < 0), (value, text)
        # the HPA's MilliValue (ceil of milli-units) fits int64
        assert abs(math.ceil(parsed * 1000)) <= INT64_MAX, (value, text)


@pytest.mark.parametrize("value", [0.1, -0.1, 1.5, 12000.0, 1e-12, -0.0, 9.0e15])
def test_a_value_formatted_again_reads_the_same(value: float) -> None:
    first = format_quantity(value)
    assert format_quantity(value) == first
    assert format_quantity(value + 1.0) != first  # the cache keys on the value itself


def test_non_finite_values_are_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(QuantityError):
            format_quantity(math.nan)


def _reference_format(value: float) -> str:
    """The Decimal formulation of ParseQuantity's rounding (what format_quantity computed
    before it moved to integer arithmetic): the two must agree on every finite float."""
    context = decimal.Context(prec=60)
    with decimal.localcontext(context):
        amount = Decimal(repr(float(value)))
        if amount.is_zero():
            return "0"
        negative = amount < 0
        amount = min(abs(amount), MAX_MAGNITUDE).quantize(
            Decimal("1e-9"), rounding=decimal.ROUND_UP
        )
        _, digits, exponent = amount.normalize().as_tuple()
        assert isinstance(exponent, int)
        mantissa = int("".join(map(str, digits))) * 10 ** (exponent % 3)
        exponent -= exponent % 3
        suffix = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P"}
        return ("-" if negative else "") + f"{mantissa}{suffix[exponent]}"


def test_integer_formatting_agrees_with_decimal_arithmetic() -> None:
    rng = random.Random(20261201)
    values = [0.0, -0.0, 1e-9, 1e-10, 5e-10, 9.999e-10, 1.0000000001, 2**53, 1e16, 1e300]
    values += [rng.uniform(-1, 1) * 10 ** rng.randint(-12, 18) for _ in range(20_000)]
    values += [round(rng.uniform(0, 100), rng.randint(0, 12)) for _ in range(5_000)]
    values += [float(rng.randint(0, 10**12)) for _ in range(5_000)]
    for value in values:
        assert format_quantity(value) == _reference_format(value), value
