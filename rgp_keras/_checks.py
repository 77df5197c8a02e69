"""Argument checks shared by the public API: each error names the bad value and what is accepted."""

import math
import numbers

from rgp_keras.errors import InputTypeError, InputValueError


def check_int(name, value, minimum=None):
    """Return `value` as an `int`, or raise naming it when it is not an integer >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"`{name}` must be an integer, got {value!r} of type {type(value).__name__}.")
    if minimum is not None and value < minimum:
        raise InputValueError(f"`{name}` must be an integer >= {minimum}, got {value}.")
    return int(value)


def check_positive(name, value):
    """Return `value` as a `float`, or raise when it is not a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"`{name}` must be a number, got {value!r} of type {type(value).__name__}.")
    if not math.isfinite(value) or value <= 0:
        raise InputValueError(f"`{name}` must be a finite number > 0, got {value}.")
    return float(value)


def check_fraction(name, value):
    """Return `value` as a `float`, or raise when it is not strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"`{name}` must be a number in (0, 1), got {value!r} of type {type(value).__name__}.")
    if not 0 < value < 1:
        raise InputValueError(f"`{name}` must be in (0, 1) (exclusive), got {value}.")
    return float(value)
