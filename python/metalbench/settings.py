"""How each variant is measured: `Settings`, with the core's defaults and the core's checks.

Every field but `cold` is a setting of the native measurement loop
(csrc/core/measure.h): its default is the core's, read from a default-built
`_core.MeasureConfig`, and its range is checked by the core (`MeasureConfig.check`),
so no default or range is written twice. All of it is part of a result's key
(runner.py). This module reads the core's config and nothing else of it: it opens
no device.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _core
from .errors import InputError

__all__ = ["BATCH_TIME", "Settings", "SettingsError"]


class SettingsError(InputError, ValueError):
    """A measurement setting out of its range or of the wrong type; the message names it."""


# The core's measurement settings with its defaults (csrc/core/measure.h): the one
# source of Settings' defaults and, through check(), of their ranges.
_CORE_DEFAULTS = _core.MeasureConfig()
# The GPU time a batch sample spans at least, by default (measure.h says why).
BATCH_TIME = _CORE_DEFAULTS.batch_time

@dataclass(frozen=True)
class Settings:
    """How each variant is measured; all of it is part of the result key (runner.py).

    Every field but `cold` is a setting of the core's measurement loop, with the
    core's default, and is checked by the core on construction: SettingsError("setting
    NAME ...") with the core's words names the first one out of range.
    """

    warmup: int = _CORE_DEFAULTS.warmup
    min_samples: int = _CORE_DEFAULTS.min_samples
    max_samples: int = _CORE_DEFAULTS.max_samples
    min_time: float = _CORE_DEFAULTS.min_time
    max_time: float = _CORE_DEFAULTS.max_time
    max_noise: float = _CORE_DEFAULTS.max_noise
    rank_by: str = _CORE_DEFAULTS.rank_by
    cold: bool = False
    batch_time: float = _CORE_DEFAULTS.batch_time  # seconds of GPU time a batch sample spans at least

    def __post_init__(self) -> None:
        _core_config(self.core())

    def core(self) -> dict:
        """Keyword arguments of Device.measure."""
        return {"warmup": self.warmup, "min_samples": self.min_samples, "max_samples": self.max_samples,
                "min_time": self.min_time, "max_time": self.max_time, "max_noise": self.max_noise,
                "rank_by": self.rank_by, "batch_time": self.batch_time}


def _core_config(values: dict[str, object]) -> _core.MeasureConfig:
    """`values` (MeasureConfig's field names) as the core's config, checked by the core:
    SettingsError("setting NAME ...") names the first one it refuses, in its words.

    Only the type is checked here, since a value the binding cannot convert never
    reaches the core; bool is an int to Python and to the binding, but `warmup=True`
    is a mistake, not a 1.
    """
    config = _core.MeasureConfig()
    try:
        for name, value in values.items():
            kind = type(getattr(_CORE_DEFAULTS, name))
            if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else kind):
                what = {int: "an integer", float: "a number", str: "a string"}[kind]
                raise SettingsError(f"setting {name} must be {what}, got {value!r}")
            try:
                setattr(config, name, value)
            except TypeError:  # an integer too large for the core's C int
                raise SettingsError(f"setting {name} is out of range, got {value!r}") from None
        config.check()
    except _core.UsageError as e:  # "[core::measure] max_time must be ...": the core names the setting
        raise SettingsError("setting " + str(e).removeprefix("[core::measure] ")) from None
    return config
