"""ServiceConfig: defaults, SWITCHBOARD_* variables, flags winning, clear errors."""

from __future__ import annotations

import argparse

import pytest

from services.config import ConfigError, ServiceConfig


def parse(argv: list[str], environ: dict[str, str] | None = None) -> ServiceConfig:
    parser = argparse.ArgumentParser()
    ServiceConfig.add_arguments(parser)
    return ServiceConfig.from_namespace(parser.parse_args(argv), environ or {})


def test_defaults() -> None:
    config = parse([])
    assert config == ServiceConfig()
    assert config.listen == "127.0.0.1:50051"
    assert config.max_message_bytes == 64 * 1024
    assert config.grace_period_s == 10.0
    assert config.max_receive_message_bytes > config.max_message_bytes


def test_environment_then_flags() -> None:
    environ = {
        "SWITCHBOARD_LISTEN": "0.0.0.0:6000",
        "SWITCHBOARD_HISTORY_MAX_EVENTS": "50",
        "SWITCHBOARD_HISTORY_MAX_AGE": "60",
        "SWITCHBOARD_IDEMPOTENCY_WINDOW": "5.5",
        "SWITCHBOARD_SUBSCRIBER_BUFFER": "16",
        "SWITCHBOARD_MAX_MESSAGE_BYTES": "100",
        "SWITCHBOARD_GRACE_PERIOD": "1",
    }
    config = parse(["--listen", "127.0.0.1:7000", "--subscriber-buffer", "32"], environ)
    assert config.listen == "127.0.0.1:7000"
    assert config.subscriber_buffer == 32
    assert config.history_max_events == 50
    assert config.history_max_age_s == 60.0
    assert config.idempotency_window_s == 5.5
    assert config.max_message_bytes == 100
    assert config.grace_period_s == 1.0
    engine = config.engine_config()
    assert (engine.history_max_events, engine.subscriber_buffer) == (50, 32)
    assert engine.idempotency_window_s == 5.5


def test_bad_values_name_their_source() -> None:
    with pytest.raises(ConfigError, match="SWITCHBOARD_SUBSCRIBER_BUFFER: 'lots'"):
        parse([], {"SWITCHBOARD_SUBSCRIBER_BUFFER": "lots"})
    with pytest.raises(ConfigError, match="--grace-period"):
        parse(["--grace-period", "soon"])
    with pytest.raises(ConfigError, match="--history-max-events must be positive, got 0"):
        parse(["--history-max-events", "0"])
    with pytest.raises(ConfigError, match="listen"):
        ServiceConfig(listen=" ")
