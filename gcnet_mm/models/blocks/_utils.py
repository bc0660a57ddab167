"""Argument checks shared by the blocks.

Each check raises :class:`ArgumentTypeError` (wrong type) or
:class:`ArgumentValueError` (wrong value) with a message that names the
argument, repeats the value given and says what is allowed, so a typo in a
config points at itself.
"""
import difflib
import numbers
from typing import Dict, Iterable, Optional

from torch import Tensor

__all__ = [
    'ArgumentTypeError', 'ArgumentValueError', 'check_positive_int',
    'check_choice', 'check_choices', 'reduced_channels', 'check_input'
]


class ArgumentValueError(ValueError, AssertionError):
    """A block argument with a wrong value.

    Also an ``AssertionError``: mmcv's blocks check their arguments with
    ``assert``, so code written against them (mmcv's own tests included)
    catches this too.
    """


class ArgumentTypeError(TypeError, AssertionError):
    """A block argument of a wrong type; an ``AssertionError`` too, as
    :class:`ArgumentValueError`."""


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` as an ``int`` if it is a positive integer.

    Args:
        name: argument name, used in the message.
        value: the value given.

    Raises:
        TypeError: ``value`` is not an integer (``bool`` counts as not one).
        ValueError: ``value`` is zero or negative.
    """
    if not _is_int(value):
        raise ArgumentTypeError(
            f'{name} must be a positive int, '
            f'got {value!r} of type {type(value).__name__}')
    if value < 1:
        raise ArgumentValueError(
            f'{name} must be a positive int, got {value!r}')
    return int(value)


def check_choice(name: str,
                 value: object,
                 allowed: Iterable[str],
                 *,
                 aliases: Optional[Dict[str, str]] = None) -> str:
    """Return ``value`` if it is one of ``allowed``.

    Args:
        name: argument name, used in the message.
        value: the value given.
        allowed: the accepted names.
        aliases: known misspellings mapped to the intended name; they are
            rejected too, but with a pointed "did you mean" hint.

    Raises:
        ValueError: ``value`` is not in ``allowed``.
    """
    allowed = list(allowed)
    if isinstance(value, str) and value in allowed:
        return value
    hint = ''
    if isinstance(value, str):
        guess = (aliases or {}).get(value)
        if guess is None:
            close = difflib.get_close_matches(value, allowed, n=1)
            guess = close[0] if close else None
        if guess is not None:
            hint = f"; did you mean '{guess}'?"
    raise ArgumentValueError(f'unknown {name} {value!r}, expected one of '
                             f'{allowed}{hint}')


def check_choices(name: str,
                  values: object,
                  allowed: Iterable[str],
                  *,
                  aliases: Optional[Dict[str, str]] = None) -> tuple:
    """Return ``values`` as a tuple if it is a non-empty list/tuple of names.

    Args:
        name: argument name, used in the message.
        values: the sequence given.
        allowed: the accepted names.
        aliases: see :func:`check_choice`.

    Raises:
        TypeError: ``values`` is not a list or tuple (a bare string included).
        ValueError: ``values`` is empty or holds an unknown name.
    """
    allowed = list(allowed)
    if not isinstance(values, (list, tuple)):
        raise ArgumentTypeError(
            f'{name} must be a list or tuple of names from '
            f'{allowed}, got {values!r} of type '
            f'{type(values).__name__}')
    if len(values) == 0:
        raise ArgumentValueError(
            f'{name} must name at least one of {allowed}, '
            f'got {values!r}')
    for value in values:
        check_choice(name, value, allowed, aliases=aliases)
    return tuple(values)


def reduced_channels(in_channels: int, ratio: Optional[float],
                     channels: Optional[int], *, default_ratio: float) -> int:
    """Width of a bottleneck, given as a ratio or as a channel count.

    ``int(in_channels * ratio)`` as mmcv computes it, or ``channels`` as is.

    Args:
        in_channels: input channels (already checked).
        ratio: reduction ratio, e.g. ``1 / 16``; ``None`` to use
            ``channels`` or, if that is ``None`` too, ``default_ratio``.
        channels: explicit bottleneck width; excludes ``ratio``.
        default_ratio: the ratio used when neither is given.

    Raises:
        ValueError: both are given; ``ratio`` is not positive or leaves no
            channels; ``channels`` is not positive.
        TypeError: ``ratio`` is not a real number or ``channels`` not an int.
    """
    if ratio is not None and channels is not None:
        raise ArgumentValueError(
            f'give the reduced width either as ratio or as '
            f'channels, not both (got ratio={ratio!r}, '
            f'channels={channels!r})')
    if channels is not None:
        return check_positive_int('channels', channels)
    if ratio is None:
        ratio = default_ratio
    if not isinstance(ratio, numbers.Real) or isinstance(ratio, bool):
        raise ArgumentTypeError(
            f'ratio must be a positive number, got {ratio!r} '
            f'of type {type(ratio).__name__}')
    if not ratio > 0:
        raise ArgumentValueError(f'ratio must be positive, got {ratio!r}')
    planes = int(in_channels * ratio)
    if planes < 1:
        raise ArgumentValueError(
            f'ratio={ratio!r} leaves no channels for '
            f'in_channels={in_channels} (int({in_channels} * '
            f'{ratio!r}) = {planes}); use a larger ratio '
            f'or give channels=')
    return planes


_LAYOUTS = {4: '(B, C, H, W)', 5: '(B, C, T, H, W)'}


def check_input(x: Tensor, in_channels: int, *, ndim: int = 4) -> None:
    """Check that ``x`` is an ``ndim``-D tensor with ``in_channels`` channels.

    Args:
        x: the input of a block's ``forward``.
        in_channels: the channels the block was built for.
        ndim: the expected rank (4 for ``(B, C, H, W)``, 5 for video
            features ``(B, C, T, H, W)``).

    Raises:
        ValueError: wrong rank or wrong channel count; the message holds
            both the expected and the given number.
    """
    if x.dim() != ndim:
        layout = _LAYOUTS.get(ndim, f'with {ndim} dims')
        raise ValueError(f'expected a {ndim}-D input {layout}, got a '
                         f'{x.dim()}-D tensor of shape {tuple(x.shape)}')
    if x.shape[1] != in_channels:
        raise ValueError(f'expected an input with C={in_channels} channels '
                         f'(dim 1), got C={x.shape[1]} (input shape '
                         f'{tuple(x.shape)})')
