"""Kubernetes ``resource.Quantity``: float -> canonical DecimalSI string, and back.

The HPA reads every item with ``Quantity.MilliValue()`` (ceil to milli-units, int64), so
the string we send must be exactly what ``ParseQuantity`` would keep: non-zero values are
rounded *up* (away from zero) to nano precision, and the result is written in the
canonical form "no fractional digits, largest suffix" (``1.5`` -> ``"1500m"``,
``12000`` -> ``"12k"``). Arithmetic uses :class:`decimal.Decimal` built from
``repr(float)`` so that ``0.08`` is 8/100 and not the binary approximation.
"""

from __future__ import annotations

import functools
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
    return _format_finite(float(value))


FORMATTED_VALUES_CACHED = 65536
"""Values whose Quantity string is kept: between publishes every HPA asks for the same few."""


@functools.lru_cache(maxsize=FORMATTED_VALUES_CACHED)
def _format_finite(value: float) -> str:
    with localcontext(_CONTEXT):
        amount = Decimal(repr(float(value)))
        if amount.is_zero():
            return "0"
        negative = amount < 0
        amount = min(abs(amount), MAX_MAGNITUDE)
        amount = amount.quantize(_NANO, rounding=ROUND_UP)
        return ("-" if negative else "") + _canonical(amount)


def _canonical(amount: Decimal) -> str:
    """Positive ``amount`` as integer mantissa + largest DecimalSI suffix."""
    _, digits, exponent = amount.normalize().as_tuple()
    assert isinstance(exponent, int)
    mantissa = int("".join(map(str, digits)))
    # lower the exponent to a multiple of 3 (toward -inf), scaling the mantissa up
    extra = exponent % 3
    mantissa *= 10**extra
    exponent -= extra
    # exponent is in [-9, 15] because of nano rounding and the cap
    return f"{mantissa}{_DECIMAL_SI_SUFFIX[exponent]}"


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
