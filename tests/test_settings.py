"""The measurement settings have one set of defaults and one set of ranges: the core's
(csrc/core/measure.h, bound as _core.MeasureConfig), which Device.measure, Settings and
`metalbench run` all take."""

import inspect

import pytest

from metalbench import _core, cli
from metalbench.settings import Settings

# Every field of Settings that the core measures by (all but `cold`).
CORE_FIELDS = list(Settings().core())

# (values, the setting the core names): each out of the core's range.
OUT_OF_RANGE = [
    ({"max_time": float("nan")}, "max_time"), ({"max_time": float("inf")}, "max_time"),
    ({"max_time": -1.0}, "max_time"), ({"min_time": -0.5}, "min_time"),
    ({"max_noise": float("nan")}, "max_noise"), ({"max_noise": 2.0}, "max_noise"),
    ({"min_samples": 0}, "min_samples"), ({"max_samples": 2, "min_samples": 5}, "max_samples"),
    ({"warmup": -1}, "warmup"), ({"rank_by": "wall"}, "rank_by"), ({"batch_time": 0.0}, "batch_time"),
]


def test_the_core_config_has_the_documented_defaults():
    """The one place they are written is measure.h; these are what the README and the stored keys assume."""
    c = _core.MeasureConfig()
    assert (c.warmup, c.min_samples, c.max_samples, c.min_time, c.max_time, c.max_noise, c.rank_by, c.batch_time) == \
        (3, 10, 1000, 0.005, 0.1, 0.005, "batch", 5e-4)
    c.check()


def test_settings_take_every_default_from_the_core():
    core, settings = _core.MeasureConfig(), Settings()
    assert CORE_FIELDS == ["warmup", "min_samples", "max_samples", "min_time", "max_time", "max_noise", "rank_by",
                           "batch_time"]
    for name in CORE_FIELDS:
        assert getattr(settings, name) == getattr(core, name), name
    assert settings.cold is False


def test_the_run_command_takes_its_defaults_from_settings():
    params = inspect.signature(cli.run).parameters
    for name in CORE_FIELDS:
        if name in params and name != "rank_by":  # --rank-by defaults to None: the run's own clock in `report`
            assert params[name].default == getattr(Settings(), name), name


def test_config_fields_are_read_and_written():
    c = _core.MeasureConfig()
    c.max_time, c.min_samples, c.rank_by, c.max_batch, c.min_clock_fraction = 2.5, 7, "gpu", 64, 0.5
    assert (c.max_time, c.min_samples, c.rank_by, c.max_batch, c.min_clock_fraction) == (2.5, 7, "gpu", 64, 0.5)
    assert _core.MeasureConfig().max_time == 0.1  # each config is its own
    with pytest.raises(_core.UsageError, match=r"^\[core::measure\] rank_by must be"):
        c.rank_by = "wall"


def _core_message(values: dict) -> str:
    config = _core.MeasureConfig()
    with pytest.raises(_core.UsageError) as refused:
        for name, value in values.items():
            setattr(config, name, value)
        config.check()
    return str(refused.value)


@pytest.mark.parametrize(("values", "name"), OUT_OF_RANGE, ids=[f"{n}={v}" for v, n in OUT_OF_RANGE])
def test_an_invalid_setting_is_refused_in_the_core_s_words(values, name):
    message = _core_message(values)
    assert message.startswith(f"[core::measure] {name} ")
    with pytest.raises(ValueError) as refused:
        Settings(**values)
    assert str(refused.value) == "setting " + message.removeprefix("[core::measure] ")


@pytest.mark.parametrize(("values", "words"), [
    ({"warmup": True}, "setting warmup must be an integer, got True"),
    ({"min_samples": 2.5}, "setting min_samples must be an integer, got 2.5"),
    ({"max_time": "1"}, "setting max_time must be a number, got '1'"),
    ({"rank_by": 1}, "setting rank_by must be a string, got 1"),
    ({"warmup": 2**40}, "setting warmup is out of range, got 1099511627776"),
])
def test_a_value_of_the_wrong_type_names_the_setting(values, words):
    with pytest.raises(ValueError) as refused:
        Settings(**values)
    assert str(refused.value) == words


def test_integers_are_accepted_for_seconds():
    assert Settings(max_time=2).max_time == 2
