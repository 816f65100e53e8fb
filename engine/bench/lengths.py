"""Length distributions for prompts and outputs: ``fixed``, ``uniform``, ``normal``, ``file``.

A distribution is written as a short spec on the command line:

* ``128`` or ``fixed:128``: always 128;
* ``uniform:64,256``: an integer drawn uniformly from 64..256 (both included);
* ``normal:128,32``: a normal with mean 128 and standard deviation 32, rounded and
  clipped to ``[min, max]`` (``normal:128,32,16,512``; default bounds 1 and mean + 6 sd);
* ``file:PATH``: one length per line of PATH (blank lines and ``#`` comments skipped),
  drawn uniformly with replacement, so a measured distribution is replayed as it is.

Every draw comes from a ``random.Random`` the caller seeds, so a run is reproducible.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from statistics import NormalDist

import msgspec

from ..errors import ConfigError, InputError

__all__ = ("LengthDist", "parse_length")


class LengthDist(msgspec.Struct, frozen=True, kw_only=True):
    """A distribution of token counts (see the module docstring for the spec syntax).

    Attributes:
        kind: ``"fixed"``, ``"uniform"``, ``"normal"`` or ``"file"``.
        low: the fixed value, the uniform's low end or the normal's lower clip.
        high: the uniform's high end or the normal's upper clip.
        mean: the normal's mean.
        sd: the normal's standard deviation.
        values: the lengths read from a file.
        spec: the spec it was parsed from (for reports).
    """

    kind: str
    low: int = 1
    high: int = 1
    mean: float = 0.0
    sd: float = 0.0
    values: tuple[int, ...] = ()
    spec: str = ""

    def sample(self, rng: random.Random) -> int:
        """One length, >= 1."""
        if self.kind == "fixed":
            return self.low
        if self.kind == "uniform":
            return rng.randint(self.low, self.high)
        if self.kind == "normal":
            return min(self.high, max(self.low, round(rng.gauss(self.mean, self.sd))))
        return self.values[rng.randrange(len(self.values))]

    def quantile(self, u: float) -> int:
        """The length at probability ``u`` in [0, 1): one draw from a uniform ``u``."""
        if self.kind == "fixed":
            return self.low
        if self.kind == "uniform":
            return min(self.high, self.low + int(u * (self.high - self.low + 1)))
        if self.kind == "normal":
            if self.sd == 0:
                return min(self.high, max(self.low, round(self.mean)))
            z = NormalDist(self.mean, self.sd).inv_cdf(min(max(u, 1e-12), 1 - 1e-12))
            return min(self.high, max(self.low, round(z)))
        return self.values[min(len(self.values) - 1, int(u * len(self.values)))]

    @property
    def expected(self) -> float:
        """The mean length (for sizing reservations and reports)."""
        if self.kind == "fixed":
            return float(self.low)
        if self.kind == "uniform":
            return (self.low + self.high) / 2.0
        if self.kind == "normal":
            return self.mean
        return sum(self.values) / len(self.values)


def _ints(text: str, option: str, count: tuple[int, ...]) -> list[float]:
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) not in count:
        raise ConfigError(
            f"cannot read {text!r} as {' or '.join(str(c) for c in count)} comma-separated numbers",
            path="bench",
            field=option,
            hint="e.g. 128, uniform:64,256, normal:128,32 or file:lengths.txt",
        )
    return parts


def parse_length(spec: str | int, option: str = "--prompt-tokens") -> LengthDist:
    """Parse a length spec.

    Args:
        spec: e.g. ``"128"``, ``"uniform:64,256"``, ``"normal:128,32"``, ``"file:lens.txt"``.
        option: the command-line option it came from (for error messages).

    Raises:
        ConfigError: the spec is malformed or gives lengths below 1.
        InputError: a length file cannot be read or holds something other than integers.
    """
    text = str(spec).strip()
    kind, sep, rest = text.partition(":")
    if not sep:
        kind, rest = "fixed", text
    bad = ConfigError(
        f"lengths must be >= 1 and low <= high in {text!r}", path="bench", field=option
    )
    if kind == "fixed":
        (value,) = _ints(rest, option, (1,))
        if value < 1 or not value.is_integer():
            raise bad
        return LengthDist(kind="fixed", low=int(value), high=int(value), spec=text)
    if kind == "uniform":
        lo, hi = _ints(rest, option, (2,))
        if lo < 1 or hi < lo:
            raise bad
        return LengthDist(kind="uniform", low=math.ceil(lo), high=math.floor(hi), spec=text)
    if kind == "normal":
        nums = _ints(rest, option, (2, 4))
        mean, sd = nums[0], nums[1]
        lo, hi = (nums[2], nums[3]) if len(nums) == 4 else (1.0, mean + 6 * sd)
        if mean < 1 or sd < 0 or lo < 1 or hi < lo:
            raise bad
        return LengthDist(
            kind="normal", mean=mean, sd=sd, low=math.ceil(lo), high=math.floor(hi), spec=text
        )
    if kind == "file":
        return LengthDist(kind="file", values=_read_lengths(Path(rest)), spec=text)
    raise ConfigError(
        f"unknown length distribution {kind!r}",
        path="bench",
        field=option,
        hint="use fixed, uniform, normal or file",
    )


def _read_lengths(path: Path) -> tuple[int, ...]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read the length file: {exc.strerror}", path=str(path)) from exc
    values: list[int] = []
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            value = int(line)
        except ValueError:
            raise InputError(
                f"not an integer length: {line[:40]!r}", path=str(path), line=number
            ) from None
        if value < 1:
            raise InputError(f"length {value} is below 1", path=str(path), line=number)
        values.append(value)
    if not values:
        raise InputError("the length file holds no lengths", path=str(path))
    return tuple(values)
