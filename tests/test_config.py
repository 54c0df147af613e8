"""CrackleConfig: keyword arguments win over CRACKLE_* variables; errors name the variable and the value."""

from __future__ import annotations

import pytest

from crackle_otel.otel.config import CrackleConfig, CrackleConfigError
from crackle_otel.profile import CoolingRate, ThermalProfile


def test_defaults_without_environment():
    config = CrackleConfig.load({})
    assert config == CrackleConfig()
    assert config.enabled is True
    assert config.group_by == ("service.name", "span.name")
    assert config.exporter == "otlp"
    assert config.profile == ThermalProfile.default()


def test_environment_variables_are_parsed():
    config = CrackleConfig.load(
        {
            "CRACKLE_ENABLED": "FALSE",
            "CRACKLE_COOL_INTERVAL_MILLIS": " 5000 ",
            "CRACKLE_MAX_QUEUE_SIZE": "4096",
            "CRACKLE_KILN_CAPACITY": "1024",
            "CRACKLE_MAX_GROUPS": "7",
            "CRACKLE_MAX_METRICS_PER_GROUP": "12",
            "CRACKLE_GROUP_BY": "service.name, http.route",
            "CRACKLE_ATTRIBUTES_ALLOW": "records_*,http.status_code",
            "CRACKLE_ATTRIBUTES_DENY": "db.*",
            "CRACKLE_PROFILE": "Slow",
            "CRACKLE_EXPORTER": "console",
            "CRACKLE_EXPORT_TIMEOUT_MILLIS": "2500",
            "CRACKLE_MAX_COOLER_SHARE": "0.25",
            "OTEL_BSP_MAX_QUEUE_SIZE": "1",  # not ours
        }
    )
    assert config.enabled is False
    assert config.cool_interval_millis == 5000
    assert config.max_queue_size == 4096
    assert config.kiln_capacity == 1024
    assert config.max_groups == 7
    assert config.max_metrics_per_group == 12
    assert config.group_by == ("service.name", "http.route")
    assert config.attributes_allow == ("records_*", "http.status_code")
    assert config.attributes_deny == ("db.*",)
    assert config.profile.rate is CoolingRate.SLOW
    assert config.exporter == "console"
    assert config.export_timeout_millis == 2500
    assert config.max_cooler_share == 0.25


def test_keyword_arguments_win_over_the_environment():
    environ = {"CRACKLE_PROFILE": "slow", "CRACKLE_MAX_GROUPS": "3", "CRACKLE_EXPORTER": "none"}
    config = CrackleConfig.load(environ, profile="fast", max_groups=9)
    assert config.profile.rate is CoolingRate.FAST
    assert config.max_groups == 9
    assert config.exporter == "none"  # not given as keyword: the environment's


def test_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("CRACKLE_KILN_CAPACITY", "777")
    assert CrackleConfig.load().kiln_capacity == 777


def test_empty_variables_mean_default():
    assert CrackleConfig.load({"CRACKLE_MAX_GROUPS": "", "CRACKLE_PROFILE": "  "}) == CrackleConfig()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CRACKLE_MAX_QUEUE_SIZE", "lots", "positive integer"),
        ("CRACKLE_KILN_CAPACITY", "0", "positive integer"),
        ("CRACKLE_COOL_INTERVAL_MILLIS", "1.5", "positive integer"),
        ("CRACKLE_ENABLED", "maybe", "true or false"),
        ("CRACKLE_PROFILE", "turbo", "fast, default, slow"),
        ("CRACKLE_EXPORTER", "zipkin", "otlp, console, none"),
        ("CRACKLE_ATTRIBUTES_DENY", "db.*.rows", "may only end a prefix"),
        ("CRACKLE_GROUP_BY", " , ", "at least one attribute"),
        ("CRACKLE_MAX_COOLER_SHARE", "1.5", "(0, 1]"),
        ("CRACKLE_MAX_COOLER_SHARE", "nan", "(0, 1]"),
    ],
)
def test_bad_environment_values_name_the_variable_and_the_value(variable, value, expected):
    with pytest.raises(CrackleConfigError) as caught:
        CrackleConfig.load({variable: value})
    message = str(caught.value)
    assert variable in message and repr(value) in message and expected in message
    assert isinstance(caught.value, ValueError)


def test_bad_keyword_arguments_name_the_argument():
    with pytest.raises(CrackleConfigError, match=r"max_groups=-2: expected a positive integer"):
        CrackleConfig.load({}, max_groups=-2)
    with pytest.raises(CrackleConfigError, match="max_groups"):
        CrackleConfig(max_groups=True)
    with pytest.raises(CrackleConfigError, match="unknown configuration argument.*max_group"):
        CrackleConfig.load({}, max_group=3)
    with pytest.raises(CrackleConfigError, match="drain_batch_size=600 must not exceed max_queue_size=500"):
        CrackleConfig.load({"CRACKLE_MAX_QUEUE_SIZE": "500"}, drain_batch_size=600)


def test_group_by_may_be_a_callable_and_profile_an_instance():
    def by_route(view):
        return view.attributes.get("http.route", "?")

    profile = ThermalProfile.fast_cooling().without_clustering()
    config = CrackleConfig.load({}, group_by=by_route, profile=profile, attributes_allow=["a", "b.*"])
    assert config.group_by is by_route
    assert config.profile is profile
    assert config.attributes_allow == ("a", "b.*")
