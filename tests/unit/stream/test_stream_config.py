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

ROOT = Path(__file__).resolve().parents[3]
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
            "kafka.security.sasl_plain_username=tracker",
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
        "sasl_plain_username": "tracker",
        "sasl_plain_password": "secret",
    }
    assert config.actors.embedder_num_cpus == 2.0 and config.use_gpu_setting() is False
    assert not config.reid_enabled
    assert config.to_dict()["kafka"]["security"]["sasl_plain_password"] == "***"
    assert config.to_dict(redact=False)["kafka"]["security"]["sasl_plain_password"] == "secret"
    assert parse_override("kafka.frames_topics=x,y") == {"kafka": {"frames_topics": "x,y"}}
    assert load_config(None, ["kafka.frames_topics=x,y"]).kafka.frames_topics == ["x", "y"]
    assert load_config(None, []).checkpoint.on_invalid == "fail"
    assert load_config(None, ["checkpoint.on_invalid=fresh"]).checkpoint.on_invalid == "fresh"


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
        ("checkpoint.on_invalid=ignore", "checkpoint.on_invalid must be 'fail' or 'fresh'"),
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


# ------------------------------------------------------------------- TLS / SASL plumbing
SECURE_TOML = """
[kafka]
bootstrap_servers = "broker-1:9093,broker-2:9093"
[kafka.security]
security_protocol = "SASL_SSL"
ssl_cafile = "/etc/kafka/ca.pem"
ssl_certfile = "/etc/kafka/client.pem"
ssl_keyfile = "/etc/kafka/client.key"
ssl_password = 123456
ssl_check_hostname = false
sasl_mechanism = "SCRAM-SHA-512"
sasl_plain_username = "tracker"
sasl_plain_password = "s3cret"
"""
SECURE_EXPECTED = {
    "security_protocol": "SASL_SSL",
    "ssl_cafile": "/etc/kafka/ca.pem",
    "ssl_certfile": "/etc/kafka/client.pem",
    "ssl_keyfile": "/etc/kafka/client.key",
    "ssl_password": "123456",  # a numeric-looking secret stays a string
    "ssl_check_hostname": False,
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_plain_username": "tracker",
    "sasl_plain_password": "s3cret",
}


class _Recorder:
    """Stands in for a kafka-python client class and records the constructor's keywords."""

    def __init__(self) -> None:
        self.calls: list[dict[str, object]] = []

    def __call__(self, **kwargs: object) -> _Recorder:
        self.calls.append(kwargs)
        return self

    def list_topics(self) -> list[str]:
        return ["frames"]

    def create_topics(self, new_topics: list[object], timeout_ms: int) -> None:
        self.created = [topic.name for topic in new_topics]  # type: ignore[attr-defined]

    def close(self) -> None:
        pass


def test_security_table_reaches_every_kafka_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """File -> config -> the kwargs of the job's consumer and producer, the publisher, the admin."""
    import kafka
    import kafka.admin

    from ray_deepsort.stream import kafka_clients, publish
    from ray_deepsort.stream.broker import create_topics

    path = tmp_path / "secure.toml"
    path.write_text(SECURE_TOML)
    config = load_config(path)
    assert config.kafka.security == SECURE_EXPECTED
    assert "s3cret" not in cli_dump(config) and "123456" not in cli_dump(config)

    known = {
        "consumer": set(kafka.KafkaConsumer.DEFAULT_CONFIG),
        "producer": set(kafka.KafkaProducer.DEFAULT_CONFIG),
        "admin": set(kafka.admin.KafkaAdminClient.DEFAULT_CONFIG),
    }
    consumer, producer, admin = _Recorder(), _Recorder(), _Recorder()
    admin.DEFAULT_CONFIG = kafka.admin.KafkaAdminClient.DEFAULT_CONFIG  # read by admin_options
    monkeypatch.setattr(kafka, "KafkaConsumer", consumer)
    monkeypatch.setattr(kafka, "KafkaProducer", producer)
    monkeypatch.setattr(kafka.admin, "KafkaAdminClient", admin)
    kafka_clients.make_consumer(config)
    kafka_clients.make_producer(config)
    publish.FramePublisher(
        config.kafka.bootstrap_servers, "frames", security=dict(config.kafka.security)
    )
    create_topics(config.kafka.bootstrap_servers, {"tracks": 1}, dict(config.kafka.security))

    calls = [consumer.calls[0], *producer.calls, admin.calls[0]]
    assert len(calls) == 4
    for kwargs in calls:
        assert {key: kwargs[key] for key in SECURE_EXPECTED} == SECURE_EXPECTED
    assert consumer.calls[0]["bootstrap_servers"] == ["broker-1:9093", "broker-2:9093"]
    # Every key the clients received is one kafka-python knows (no silent typo).
    assert set(consumer.calls[0]) <= known["consumer"]
    for kwargs in producer.calls:
        assert set(kwargs) <= known["producer"]
    assert set(admin.calls[0]) <= known["admin"]
    assert admin.created == ["tracks"]


def cli_dump(config: StreamConfig) -> str:
    from ray_deepsort.stream.config import dumps

    return dumps(config)


def test_admin_client_gets_only_the_security_keys_it_accepts() -> None:
    from kafka.admin import KafkaAdminClient

    from ray_deepsort.stream.broker import admin_options

    options = {key: "x" for key in SECURITY_KEYS}
    kept = admin_options(options)
    assert set(kept) <= set(KafkaAdminClient.DEFAULT_CONFIG)
    assert "ssl_ciphers" not in kept  # refused by KafkaAdminClient ("Unrecognized configs")
    assert {"security_protocol", "sasl_mechanism", "ssl_cafile"} <= set(kept)


@pytest.mark.parametrize(
    "typo", ["ssl_ca_file", "sasl_username", "security.protocol", "SSL_CAFILE", "sasl_password"]
)
def test_misspelled_security_key_in_a_file_is_named(tmp_path: Path, typo: str) -> None:
    path = tmp_path / "typo.toml"
    path.write_text(f'[kafka.security]\n"{typo}" = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert f"kafka.security has unknown key(s) ['{typo}']" in message
    assert "ssl_cafile" in message and "sasl_plain_password" in message  # the known keys


def test_security_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"kafka\.security must be a table"):
        load_config(overrides=['kafka.security="SASL_SSL"'])


# ------------------------------------------------------------------- the model and its gate
OMZ = ROOT / ".." / "shared" / "models" / "intel-omz"
O288 = "person-reidentification-retail-0288"
XML_0288 = OMZ / O288 / "FP16" / f"{O288}.xml"


def _flags(*argv: str) -> StreamConfig:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--config", str(DEFAULT_TOML), *argv])
    return load_config(args.config, cli.overrides_from_args(args))


def test_model_keys_become_a_model_choice() -> None:
    from ray_deepsort.pipeline.embedder import ModelChoice

    default = load_config(DEFAULT_TOML)
    assert default.model_choice() == ModelChoice()  # mobilenetv2-imagenet, its own input size
    config = load_config(
        DEFAULT_TOML,
        [
            f'model.name="{O288}"',
            'model.path="/models/0288"',
            "model.backend=openvino",
            "model.threads=2",
            "model.precision=bf16",
            "model.device=cpu",
            "model.pretrained=false",
            "model.input_height=128",
            "model.input_width=64",
        ],
    )
    assert config.model_choice(max_batch_size=16) == ModelChoice(
        name=O288,
        path="/models/0288",
        backend="openvino",
        device="cpu",
        threads=2,
        precision="bf16",
        pretrained=False,
        max_batch_size=16,
        input_size=(128, 64),
    )
    # The old spelling still means the bundled trunk.
    old = load_config(None, ["model.name=mobilenetv2_100"])
    assert old.model_choice().describe() == "mobilenetv2-imagenet" and old.reid_enabled


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ('model.checkpoint="w.pt"', "model.checkpoint is gone: put the weights file in model.path"),
        ("model.backend=tensorrt", "model.backend must be one of"),
        ("model.precision=int8", "model.precision must be one of"),
        ("model.threads=-1", "model.threads must be >= 0"),
        ("model.input_height=128", "set both, or neither"),
        ('model.name=""', "model.name (or path) must be set"),
        ("tracker.gating_threshold=-1", "tracker: gating_threshold must be in"),
        ("tracker.max_lost_tracks=-1", "tracker: max_lost_tracks"),
    ],
)
def test_invalid_model_and_tracker_keys(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DEFAULT_TOML, [override])
    assert message in str(info.value)


def test_model_flags() -> None:
    config = _flags("--model", O288, "--model-path", "/m/0288", "--model-backend", "openvino")
    assert (config.model.name, config.model.path, config.model.backend) == (
        O288,
        "/m/0288",
        "openvino",
    )
    alone = _flags("--model-path", "/m/0288/FP16/x.xml")  # the file says which model it is
    assert (alone.model.name, alone.model.path) == ("", "/m/0288/FP16/x.xml")
    assert _flags("--model", "none").reid_enabled is False
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--checkpoint", "w.pt"])


def test_appearance_threshold_is_left_to_the_model_unless_set() -> None:
    from ray_deepsort.core import is_default

    shipped = load_config(DEFAULT_TOML)
    assert is_default(shipped.tracker.appearance_threshold)  # commented out in the file
    assert is_default(shipped.tracker.params()["appearance_threshold"])
    explicit = load_config(DEFAULT_TOML, ["tracker.appearance_threshold=0.7"])
    assert explicit.tracker.appearance_threshold == 0.7
    assert not is_default(explicit.tracker.params()["appearance_threshold"])
    assert "\nappearance_threshold" not in DEFAULT_TOML.read_text()
    assert load_config(DEFAULT_TOML).tracker.params()["gating_threshold"] is None
    assert load_config(None, ["tracker.gating_threshold=9.4877"]).tracker.params()[
        "gating_threshold"
    ] == pytest.approx(9.4877)


class _StopAtActors(Exception):
    pass


@pytest.mark.parametrize(
    ("overrides", "source"),
    [
        ([], "model"),
        (["tracker.appearance_threshold=0.7"], "explicit"),
        (['model.name="resnet50"', 'model.path=""'], "default"),
    ],
)
def test_stream_job_gives_shards_the_resolved_gate(
    overrides: list[str],
    source: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if not XML_0288.is_file():
        pytest.skip("needs ../shared/models/intel-omz")
    import logging

    import ray

    from ray_deepsort.pipeline import actors
    from ray_deepsort.reid.known_models import KNOWN_MODELS
    from ray_deepsort.stream import job as stream_job
    from ray_deepsort.stream.job import StreamJob

    started: dict[str, object] = {}

    def start_actors(plan: object, model: object, tracker_params: dict, *_: object, **__: object):
        started.update(model=model, params=tracker_params)
        raise _StopAtActors

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    monkeypatch.setattr(actors, "start_actors", start_actors)
    monkeypatch.setattr(stream_job, "check_topic_limits", lambda _: None)  # no broker here
    config = load_config(
        DEFAULT_TOML, ['model.name=""', f"model.path={str(XML_0288)!r}", *overrides]
    )
    with caplog.at_level(logging.INFO, logger="ray_deepsort.stream"), pytest.raises(_StopAtActors):
        StreamJob(config).run()
    gate = started["params"]["appearance_threshold"]
    expected = {
        "model": KNOWN_MODELS[O288].spec.appearance_threshold,
        "explicit": 0.7,
        "default": 0.7,
    }[source]
    assert gate == expected and type(gate) is float
    weight = started["params"]["appearance_weight"]
    assert weight == (KNOWN_MODELS[O288].spec.appearance_weight if source != "default" else 0.5)
    line = {
        "model": f"appearance gate {expected:.2f}, weight {weight:.2f} from {O288}",
        "explicit": f"appearance gate 0.70, weight {weight:.2f} (gate set explicitly)",
        "default": "appearance gate 0.70, weight 0.50 (defaults; resnet50 recommends none)",
    }[source]
    assert line in caplog.text


@pytest.mark.skipif(not XML_0288.is_file(), reason="needs ../shared/models/intel-omz")
def test_a_model_file_that_is_another_known_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=f"set the name to '{O288}'"):
        load_config(DEFAULT_TOML, [f"model.path={str(XML_0288)!r}"])  # name: mobilenetv2-imagenet
    assert _flags("--model-path", str(XML_0288)).model.name == ""  # the flag alone is fine
