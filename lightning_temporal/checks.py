"""Argument checks with one message style: ``"<name> must be <what is allowed>[ (<why>)], got <value>"``.

Every public class of the package checks the arguments a user passes it, once, in its constructor (or the
public function that receives them), through these functions; the error names the argument, what is allowed
and the value received. Pure Python: no torch, no Lightning.

Example:
    >>> check_int("clip_len", 16, minimum=1)
    16
    >>> check_int("clip_len", 0, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: clip_len must be an int >= 1, got 0
    >>> check_number("momentum", 1.0, minimum=0, maximum=1, exclusive_maximum=True)
    Traceback (most recent call last):
    ...
    ValueError: momentum must be in [0, 1), got 1.0
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Sequence

__all__ = ["check_int", "check_number", "check_choice", "check_instance", "check_callable", "fail"]


def fail(name: str, allowed: str, value: Any, hint: Optional[str] = None, error: type = ValueError):
    """Raise ``error("<name> must be <allowed>[ (<hint>)], got <value!r>")``: the one message style (a long
    ``repr`` is cut to 80 characters)."""
    why = f" ({hint})" if hint else ""
    got = repr(value)
    if len(got) > 80:
        got = f"{got[:60]}... ({type(value).__name__})"
    raise error(f"{name} must be {allowed}{why}, got {got}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: Optional[int] = None, maximum: Optional[int] = None, *,
              hint: Optional[str] = None) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) in ``[minimum, maximum]``, else ``ValueError``."""
    if maximum is not None and minimum is not None:
        allowed = f"an int in {minimum}..{maximum}"
    elif minimum is not None:
        allowed = f"an int >= {minimum}"
    elif maximum is not None:
        allowed = f"an int <= {maximum}"
    else:
        allowed = "an int"
    if not _is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        fail(name, allowed, value, hint)
    return int(value)


def _bound(value: float) -> str:
    return f"{value:g}"


def check_number(name: str, value: Any, *, minimum: Optional[float] = None, maximum: Optional[float] = None,
                 exclusive_minimum: bool = False, exclusive_maximum: bool = False, finite: bool = True,
                 hint: Optional[str] = None) -> float:
    """``value`` as a ``float`` if it is a real number (not a bool, not NaN; finite unless ``finite=False``) within
    the bounds, else ``ValueError``."""
    if minimum is not None and maximum is not None:
        allowed = (f"in {'(' if exclusive_minimum else '['}{_bound(minimum)}, {_bound(maximum)}"
                   f"{')' if exclusive_maximum else ']'}")
    else:
        allowed = "a finite number" if finite else "a number"
        if minimum is not None:
            allowed += f" {'>' if exclusive_minimum else '>='} {_bound(minimum)}"
        if maximum is not None:
            allowed += f" {'<' if exclusive_maximum else '<='} {_bound(maximum)}"
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)
    if ok and finite:
        ok = math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if exclusive_minimum else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if exclusive_maximum else value <= maximum
    if not ok:
        fail(name, allowed, value, hint)
    return float(value)


def check_choice(name: str, value: Any, choices: Sequence[Any], *, hint: Optional[str] = None) -> Any:
    """``value`` if it is one of ``choices``, else ``ValueError`` listing them."""
    if value not in tuple(choices):
        fail(name, f"one of {tuple(choices)!r}", value, hint)
    return value


def check_instance(name: str, value: Any, types: Any, *, hint: Optional[str] = None) -> Any:
    """``value`` if it is an instance of ``types`` (a class or a tuple of classes), else ``TypeError``."""
    if not isinstance(value, types):
        names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        fail(name, f"a {names}", value, hint, TypeError)
    return value


def check_callable(name: str, value: Any, *, optional: bool = False, hint: Optional[str] = None) -> Any:
    """``value`` if it is callable (or None when ``optional``), else ``TypeError``."""
    if not (callable(value) or (optional and value is None)):
        fail(name, "a callable" + (" or None" if optional else ""), value, hint, TypeError)
    return value
