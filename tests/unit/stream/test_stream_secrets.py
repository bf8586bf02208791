"""Kafka secrets from files and `${ENV}`, masking, refused empty settings, and topic limits."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from ray_deepsort.stream import cli
from ray_deepsort.stream.config import ConfigError, dumps, load_config, resolve_secrets
from ray_deepsort.stream.kafka_clients import (
    RECORD_HEADROOM,
    TopicLimitError,
    check_topic_limits,
    create_job_topics,
    required_topic_bytes,
)

SASL = [
    "kafka.bootstrap_servers=broker:9093",
    "kafka.security.security_protocol=SASL_SSL",
    "kafka.security.sasl_mechanism=SCRAM-SHA-512",
]


def _secret_files(tmp_path: Path) -> Path:
    """A Strimzi-like KafkaUser secret mount: one file per key, no trailing newline."""
    mount = tmp_path / "kafka-user"
    mount.mkdir()
    (mount / "password").write_text("p4ss-from-file")
    (mount / "username").write_text("tracker\n")
    return mount


def test_secrets_come_from_files(tmp_path: Path) -> None:
    mount = _secret_files(tmp_path)
    config = load_config(
        None,
        [
            *SASL,
            f'kafka.security.sasl_plain_username_file="{mount / "username"}"',
            f'kafka.security.sasl_plain_password_file="{mount / "password"}"',
        ],
    )
    security = config.kafka.security
    assert security["sasl_plain_username"] == "tracker"  # the trailing newline is dropped
    assert security["sasl_plain_password"] == "p4ss-from-file"
    assert not any(key.endswith("_file") and key != "ssl_cafile" for key in security)
    assert "p4ss-from-file" not in dumps(config)


def test_secrets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_USERNAME", "tracker")
    monkeypatch.setenv("KAFKA_PASSWORD", "p4ss-from-env")
    config = load_config(
        None,
        [
            *SASL,
            "kafka.security.sasl_plain_username=${KAFKA_USERNAME}",
            'kafka.security.sasl_plain_password="${KAFKA_PASSWORD}"',
        ],
    )
    assert config.kafka.security["sasl_plain_password"] == "p4ss-from-env"
    assert config.to_dict()["kafka"]["security"]["sasl_plain_password"] == "***"


def test_env_references_resolve_inside_values_and_from_a_given_environ() -> None:
    resolved = resolve_secrets({"ssl_cafile": "${CA_DIR}/ca.crt"}, {"CA_DIR": "/etc/ca"})
    assert resolved == {"ssl_cafile": "/etc/ca/ca.crt"}


def test_a_missing_variable_or_file_is_named_without_a_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="environment variable NOPE_PASSWORD is not set"):
        resolve_secrets({"sasl_plain_password": "${NOPE_PASSWORD}"}, {})
    missing = tmp_path / "absent"
    with pytest.raises(ConfigError, match=r"sasl_plain_password_file: cannot read .*absent"):
        resolve_secrets({"sasl_plain_password_file": str(missing)})
    with pytest.raises(ConfigError, match="set sasl_plain_password or sasl_plain_password_file"):
        resolve_secrets({"sasl_plain_password": "x", "sasl_plain_password_file": str(missing)})


@pytest.mark.parametrize("servers", ['""', '" "', '"a:9092,,b:9092"', '","'])
def test_empty_bootstrap_servers_are_refused(servers: str) -> None:
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap_servers must list host:port"):
        load_config(None, [f"kafka.bootstrap_servers={servers}"])


@pytest.mark.parametrize(
    ("extra", "missing"),
    [
        (["kafka.security.sasl_plain_password=x"], "sasl_plain_username"),
        (
            ['kafka.security.sasl_plain_username=""', "kafka.security.sasl_plain_password=x"],
            "sasl_plain_username",
        ),
        (["kafka.security.sasl_plain_username=u"], "sasl_plain_password"),
        (
            ["kafka.security.sasl_plain_username=u", 'kafka.security.sasl_plain_password=""'],
            "sasl_plain_password",
        ),
    ],
)
def test_empty_sasl_user_or_password_is_refused(extra: list[str], missing: str) -> None:
    with pytest.raises(ConfigError, match=rf"kafka\.security\.{missing} is empty"):
        load_config(None, [*SASL, *extra])


def test_an_empty_variable_is_an_empty_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """What happened in KubeRay's submitter pod: the variable exists there but is empty."""
    monkeypatch.setenv("KAFKA_PASSWORD", "")
    overrides = [*SASL, "kafka.security.sasl_plain_username=u"]
    with pytest.raises(ConfigError, match="sasl_plain_password is empty"):
        load_config(None, [*overrides, "kafka.security.sasl_plain_password=${KAFKA_PASSWORD}"])


def test_non_password_sasl_mechanisms_need_no_password() -> None:
    config = load_config(
        None,
        [
            "kafka.security.security_protocol=SASL_PLAINTEXT",
            "kafka.security.sasl_mechanism=GSSAPI",
            "kafka.security.sasl_kerberos_service_name=kafka",
        ],
    )
    assert config.kafka.security["sasl_mechanism"] == "GSSAPI"


def test_every_secret_is_masked_in_print_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mount = _secret_files(tmp_path)
    monkeypatch.setenv("KEY_PASSWORD", "key-p4ss")
    path = tmp_path / "secure.toml"
    path.write_text(
        f"""
[kafka]
bootstrap_servers = "broker:9093"
[kafka.security]
security_protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-512"
sasl_plain_username = "tracker"
sasl_plain_password_file = "{mount / "password"}"
ssl_password = "${{KEY_PASSWORD}}"
[kafka.producer]
sasl_plain_password = "producer-p4ss"
"""
    )
    assert cli.main(["--config", str(path), "--print-config"]) == 0
    out = capsys.readouterr().out
    for secret in ("p4ss-from-file", "key-p4ss", "producer-p4ss"):
        assert secret not in out
    security = json.loads(out)["kafka"]["security"]
    assert security["sasl_plain_password"] == security["ssl_password"] == "***"
    assert json.loads(out)["kafka"]["producer"]["sasl_plain_password"] == "***"


def test_a_literal_password_on_the_command_line_warns(caplog: pytest.LogCaptureFixture) -> None:
    overrides = [*SASL, "kafka.security.sasl_plain_username=u"]
    with caplog.at_level(logging.WARNING, logger="ray_deepsort.stream"):
        load_config(None, [*overrides, "kafka.security.sasl_plain_password=${PATH}"])
        assert not caplog.records
        load_config(None, [*overrides, "kafka.security.sasl_plain_password=literal"])
    assert "ray job list" in caplog.text and "literal" not in caplog.text


# ------------------------------------------------------------------- topic limits
MIB = 1024 * 1024


class FakeAdmin:
    """kafka-python's admin client as `check_topic_limits` and `create_topics` use it."""

    def __init__(self, limits: dict[str, int | None] | None = None, **_: object) -> None:
        self.limits = limits or {}
        self.created: list[Any] = []

    def describe_configs(self, resources: list[Any], config_filter: str) -> dict[str, Any]:
        assert config_filter == "all"  # the default ("modified") leaves defaults out
        topics = {}
        for resource in resources:
            limit = self.limits.get(resource.name)
            topics[resource.name] = (
                {} if limit is None else {"max.message.bytes": {"value": str(limit)}}
            )
        return {"topic": topics}

    def list_topics(self) -> list[str]:
        return []

    def create_topics(self, new_topics: list[Any], timeout_ms: int) -> None:
        self.created = new_topics

    def close(self) -> None:
        pass


def _config(*overrides: str) -> Any:
    return load_config(None, ["kafka.max_message_bytes=2097152", *overrides])


def test_required_sizes_per_topic() -> None:
    assert required_topic_bytes(_config()) == {
        "frames": 2 * MIB,
        "tracks": 2 * MIB + RECORD_HEADROOM,
        "frames-dlq": 2 * MIB + RECORD_HEADROOM,
    }
    assert required_topic_bytes(_config('kafka.dead_letter_topic=""')).keys() == {
        "frames",
        "tracks",
    }


def test_topics_that_fit_pass() -> None:
    check_topic_limits(
        _config(), FakeAdmin({"frames": 2 * MIB, "tracks": 3 * MIB, "frames-dlq": 3 * MIB})
    )


@pytest.mark.parametrize(
    ("limits", "named"),
    [
        ({"frames": MIB, "tracks": 3 * MIB, "frames-dlq": 3 * MIB}, "'frames'"),
        ({"frames": 2 * MIB, "tracks": 3 * MIB, "frames-dlq": 2 * MIB}, "'frames-dlq'"),
        ({"frames": 2 * MIB, "tracks": 1048588, "frames-dlq": 3 * MIB}, "'tracks'"),
    ],
)
def test_a_topic_too_small_is_refused(limits: dict[str, int | None], named: str) -> None:
    with pytest.raises(TopicLimitError, match=rf"topic {named} has max.message.bytes=\d+") as info:
        check_topic_limits(_config(), FakeAdmin(limits))
    assert "lower kafka.max_message_bytes" in str(info.value)


def test_unreported_limits_are_logged_not_refused(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ray_deepsort.stream"):
        check_topic_limits(_config(), FakeAdmin({"frames": 2 * MIB}))
    assert "not reported for ['frames-dlq', 'tracks']" in caplog.text


def test_limits_the_user_may_not_read_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    from kafka.errors import TopicAuthorizationFailedError

    class Denied(FakeAdmin):
        def describe_configs(self, resources: list[Any], config_filter: str) -> dict[str, Any]:
            raise TopicAuthorizationFailedError("no DescribeConfigs")

    with caplog.at_level(logging.WARNING, logger="ray_deepsort.stream"):
        check_topic_limits(_config(), Denied())
    assert "cannot read the topics' max.message.bytes" in caplog.text


def test_created_topics_get_a_limit_that_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    import kafka.admin

    admin = FakeAdmin()

    def admin_class(**_: object) -> FakeAdmin:
        return admin

    admin_class.DEFAULT_CONFIG = {}  # type: ignore[attr-defined]  # read by admin_options
    monkeypatch.setattr(kafka.admin, "KafkaAdminClient", admin_class)
    config = _config("kafka.topic_replication_factor=3")
    create_job_topics(config)
    created = {topic.name: topic for topic in admin.created}
    required = required_topic_bytes(config)
    assert created.keys() == required.keys()
    for name, topic in created.items():
        assert topic.replication_factor == 3
        assert int(topic.topic_configs["max.message.bytes"]) == required[name]
    limits = {name: int(t.topic_configs["max.message.bytes"]) for name, t in created.items()}
    check_topic_limits(config, FakeAdmin(limits))  # what it creates passes its own check
