"""Kubernetes ``resource.Quantity``: float -> canonical DecimalSI string, and back.

The HPA reads every item with ``Quantity.MilliValue()`` (ceil to milli-units, int64), so
the string we send must be exactly what ``ParseQuantity`` would keep: non-zero values are
rounded *up* (away from zero) to nano precision, and the result is written in the
canonical form "no fractional digits, largest suffix" (``1.5`` -> ``"1500m"``,
``12000`` -> ``"12k"``). Formatting works on the integers of ``repr(float)`` (the shortest
decimal that reads back as the same float, so ``0.08`` is 8/100 and not the binary
approximation), which is exact and about 3x cheaper per value than :mod:`decimal`; parsing
uses :class:`decimal.Decimal`.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_UP, Context, Decimal, InvalidOperation, localcontext

__all__ = ["MAX_MAGNITUDE", "QuantityError", "format_quantity", "parse_quantity"]


class QuantityError(ValueError):
    """The value cannot be a Quantity (NaN, ±Inf, or unparseable text)."""


MAX_MAGNITUDE = Decimal(2**63 - 1) / 1000
"""Largest magnitude served: ``MilliValue()`` of it is exactly int64 max (2**63-1)."""

_NANO = Decimal("1e-9")
_CONTEXT = Context(prec=60)
_DECIMAL_SI_SUFFIX = {
    -9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E",
}  # fmt: skip
_SUFFIX_EXPONENT = {suffix: exp for exp, suffix in _DECIMAL_SI_SUFFIX.items()}
_BINARY_SI_POWER = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_QUANTITY_RE = re.compile(
    r"^(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$"
)


def format_quantity(value: float) -> str:
    """Canonical DecimalSI Quantity string for ``value`` (in the metric's own unit).

    Non-zero values are rounded away from zero to a multiple of 1e-9 (as ``ParseQuantity``
    does, so ``1e-12`` -> ``"1n"``); magnitudes above :data:`MAX_MAGNITUDE`
    (``(2**63-1)/1000``, about 9.2e15) are capped to it so that the HPA's
    ``MilliValue()`` fits int64. Raises :class:`QuantityError` for NaN and ±Inf: the
    caller must hold (serve an error), never substitute 0.
    """
    if math.isnan(value) or math.isinf(value):
        raise QuantityError(f"{value!r} cannot be served as a Quantity")
    digits, exponent = _shortest_decimal(float(value))
    if digits == 0:
        return "0"
    negative = digits < 0
    digits = abs(digits)
    # in nano units, rounded up (away from zero) as ParseQuantity does
    shift = exponent + 9
    nanos = digits * 10**shift if shift >= 0 else -(-digits // 10**-shift)
    nanos = min(nanos, _MAX_NANOS)
    return ("-" if negative else "") + _canonical(nanos)


_MAX_NANOS = (2**63 - 1) * 10**6
"""MAX_MAGNITUDE in nano units: ``(2**63-1)/1000 * 1e9``."""


def _shortest_decimal(value: float) -> tuple[int, int]:
    """``value`` as ``digits * 10**exponent`` (integers), from ``repr``: the shortest decimal
    that reads back as the same float, so ``0.08`` is 8/100 and not its binary neighbour."""
    text = repr(value)
    mantissa, _, power = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    exponent = (int(power) if power else 0) - len(fraction)
    return int(whole + fraction), exponent


def _canonical(nanos: int) -> str:
    """Positive ``nanos`` (units of 1e-9) as integer mantissa + largest DecimalSI suffix:
    whole thousands move into the suffix (``1500000000`` n -> ``"1500m"``)."""
    exponent = -9
    while nanos % 1000 == 0 and exponent < 15:  # 15: the cap keeps values below 1e16
        nanos //= 1000
        exponent += 3
    return f"{nanos}{_DECIMAL_SI_SUFFIX[exponent]}"


def parse_quantity(text: str) -> Decimal:
    """The exact value ``ParseQuantity(text)`` keeps: rounded up to nano, capped to 2**63-1.

    Accepts every suffix of the grammar (decimal SI incl. ``n``/``u``, binary SI,
    ``e``/``E`` exponents). Raises :class:`QuantityError` for anything else.
    """
    match = _QUANTITY_RE.match(text.strip())
    if match is None:
        raise QuantityError(f"{text!r} is not a Kubernetes quantity")
    with localcontext(_CONTEXT):
        try:
            number = Decimal(match["number"])
            suffix = match["suffix"] or ""
            if suffix in _BINARY_SI_POWER:
                amount = number * (1 << _BINARY_SI_POWER[suffix])
            elif suffix in _SUFFIX_EXPONENT:
                amount = number.scaleb(_SUFFIX_EXPONENT[suffix])
            else:
                amount = number.scaleb(int(suffix[1:]))
            if amount.is_zero():
                return Decimal(0)
            negative = amount < 0
            amount = min(abs(amount), Decimal(2**63 - 1)).quantize(_NANO, rounding=ROUND_UP)
        except (ArithmeticError, InvalidOperation) as exc:
            raise QuantityError(f"{text!r} is out of the range this parser handles") from exc
        return -amount if negative else amount
