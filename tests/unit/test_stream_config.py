"""Stream job config: the shipped TOML equals the defaults, overrides, errors, CLI precedence."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from ray_deepsort.stream import cli
from ray_deepsort.stream.config import (
    SECURITY_KEYS,
    ConfigError,
    StreamConfig,
    load_config,
    parse_override,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TOML = ROOT / "jobs" / "stream.toml"


def test_shipped_config_equals_defaults() -> None:
    assert load_config(DEFAULT_TOML) == StreamConfig().validate()


def test_every_key_is_documented() -> None:
    doc = (ROOT / "docs" / "streaming.md").read_text()
    toml = DEFAULT_TOML.read_text()
    for section in dataclasses.fields(StreamConfig):
        for key in dataclasses.fields(getattr(StreamConfig(), section.name)):
            assert f"`{section.name}.{key.name}`" in doc, f"{section.name}.{key.name} not in docs"
            assert f"{key.name} =" in toml or (
                section.name == "kafka"
                and key.name
                in (
                    "security",
                    "consumer",
                    "producer",
                )
            ), f"{section.name}.{key.name} not in stream.toml"


def test_overrides_are_typed_and_nested() -> None:
    config = load_config(
        DEFAULT_TOML,
        [
            "batch.max_frames=8",
            "kafka.bootstrap_servers=broker-1:9093,broker-2:9093",
            'kafka.frames_topics=["a", "b"]',
            "kafka.security.security_protocol=SASL_SSL",
            "kafka.security.sasl_plain_password=secret",
            "actors.embedder_num_cpus=2",
            "actors.use_gpu=false",
            "model.name=none",
        ],
    )
    assert config.batch.max_frames == 8
    assert config.kafka.bootstrap_servers == "broker-1:9093,broker-2:9093"
    assert config.kafka.frames_topics == ["a", "b"]
    assert config.kafka.security == {
        "security_protocol": "SASL_SSL",
        "sasl_plain_password": "secret",
    }
    assert config.actors.embedder_num_cpus == 2.0 and config.use_gpu_setting() is False
    assert not config.reid_enabled
    assert config.to_dict()["kafka"]["security"]["sasl_plain_password"] == "***"
    assert config.to_dict(redact=False)["kafka"]["security"]["sasl_plain_password"] == "secret"
    assert parse_override("kafka.frames_topics=x,y") == {"kafka": {"frames_topics": "x,y"}}
    assert load_config(None, ["kafka.frames_topics=x,y"]).kafka.frames_topics == ["x", "y"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("nosuch.key=1", "unknown config section"),
        ("batch.nosuch=1", "unknown key batch.nosuch"),
        ("batch.max_frames=0", "batch.max_frames must be > 0"),
        ("batch.max_frames=1.5", "must be an integer"),
        ("batch.max_frames=true", "must be an integer"),
        ("output.fsync=1", "true or false"),
        ("kafka.security.sasl_passwd=x", "unknown key(s) ['sasl_passwd']"),
        ("kafka.auto_offset_reset=middle", "auto_offset_reset"),
        ("tracker.minimum_iou_threshold=3", "tracker: minimum_iou_threshold"),
        ("kafka.dead_letter_topic=frames", "must differ"),
        ("actors.use_gpu=maybe", "use_gpu"),
        ("batch", "not section.key=value"),
    ],
)
def test_invalid_overrides(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_bad_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[batch\nmax_frames = 1")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_config(path)


def test_security_keys_exist_in_kafka_python() -> None:
    from kafka import KafkaConsumer, KafkaProducer

    assert set(KafkaConsumer.DEFAULT_CONFIG) & set(KafkaProducer.DEFAULT_CONFIG) >= SECURITY_KEYS


def test_cli_flags_then_set_override_the_file() -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        [
            "--config",
            str(DEFAULT_TOML),
            "--bootstrap-servers",
            "k:9092",
            "--frames-topic",
            "t1",
            "--frames-topic",
            "t2",
            "--shards",
            "3",
            "--output",
            "/data/out",
            "--set",
            "actors.num_shards=5",
            "--create-topics",
        ]
    )
    config = load_config(args.config, cli.overrides_from_args(args))
    assert config.kafka.bootstrap_servers == "k:9092"
    assert config.kafka.frames_topics == ["t1", "t2"]
    assert config.actors.num_shards == 5  # --set wins over --shards
    assert config.output.path == "/data/out"
    assert config.kafka.create_topics is True


def test_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--config", str(DEFAULT_TOML), "--print-config"]) == 0
    assert '"bootstrap_servers": "127.0.0.1:9092"' in capsys.readouterr().out
    assert cli.main(["--set", "batch.max_frames=-1", "--print-config"]) == 2
