"""Stream job configuration: one TOML file with documented defaults, plus `--set` overrides.

Every key is documented in docs/streaming.md; `jobs/stream.toml` is the default file. Unknown
sections or keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray_deepsort.core.parameters import TrackerConfig, tracker_parameter
from ray_deepsort.pipeline.embedder import ModelChoice, known_model_name
from ray_deepsort.pipeline.tracker_shard import ON_INVALID_POLICIES

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

# kafka-python settings for TLS and SASL, passed as they are to consumer, producer and admin.
SECURITY_KEYS = frozenset(
    {
        "security_protocol",
        "ssl_check_hostname",
        "ssl_cafile",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_crlfile",
        "ssl_password",
        "ssl_ciphers",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "sasl_kerberos_name",
        "sasl_kerberos_service_name",
        "sasl_kerberos_domain_name",
    }
)
_SECRET_KEYS = frozenset({"ssl_password", "sasl_plain_password"})
# `<key>_file`: the value is that file's content (Kubernetes mounts a Secret's keys as files), so
# no secret has to be on a command line, where `ray job list` and the job log would show it.
SECRET_FILE_KEYS = {
    f"{key}_file": key for key in ("sasl_plain_username", "sasl_plain_password", "ssl_password")
}
# SASL mechanisms that log in with sasl_plain_username / sasl_plain_password.
_PASSWORD_MECHANISMS = frozenset({"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"})
# `${NAME}` in a [kafka.security] value: the driver's environment variable NAME.
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MASK = "***"

logger = logging.getLogger("ray_deepsort.stream")


class ConfigError(ValueError):
    """A config file or override that is not valid; the message names the key."""


@dataclass
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    frames_topics: list[str] = field(default_factory=lambda: ["frames"])
    results_topic: str = "tracks"
    dead_letter_topic: str = "frames-dlq"
    group_id: str = "ray-deepsort"
    client_id: str = "ray-deepsort-stream"
    auto_offset_reset: str = "earliest"
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    max_poll_interval_ms: int = 300_000
    max_partition_fetch_bytes: int = 8 * 1024 * 1024
    max_message_bytes: int = 16 * 1024 * 1024
    create_topics: bool = False
    topic_partitions: int = 4
    topic_replication_factor: int = 1
    security: dict[str, Any] = field(default_factory=dict)
    consumer: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """The embedders' model: `ray_deepsort.pipeline.ModelChoice`'s keys (docs/streaming.md)."""

    name: str = "mobilenetv2-imagenet"  # known model, timm name, "" (the file says) or "none"
    path: str = ""  # model file (.xml, .onnx, .pt) or a known model's folder
    backend: str = "auto"  # auto | torch | openvino | onnxruntime
    threads: int = 0  # OpenVINO / ONNX Runtime threads; 0 = actors.embedder_num_cpus
    precision: str = "auto"  # OpenVINO: auto | f32 | bf16 | f16
    device: str = "auto"
    pretrained: bool = True
    input_height: int = 0  # 0 (with input_width 0): the model's own input size
    input_width: int = 0
    forward_batch_size: int = 0  # 0: DEFAULT_CPU_FORWARD_BATCH on CPU, max_embed_crops on GPU

    def choice(self, max_batch_size: int = 128) -> ModelChoice:
        """The `ModelChoice` these keys describe (ValueError when they are not valid)."""
        size = (self.input_height, self.input_width)
        return ModelChoice(
            name=self.name,
            path=self.path,
            backend=self.backend,
            device=self.device,
            threads=self.threads,
            precision=self.precision,
            pretrained=self.pretrained,
            max_batch_size=max_batch_size,
            input_size=None if size == (0, 0) else size,
        )


@dataclass
class BatchConfig:
    max_frames: int = 64
    max_wait_ms: int = 50
    max_embed_crops: int = 128
    max_inflight_batches: int = 4


@dataclass
class ActorsConfig:
    num_shards: int = 2
    ingest_workers: int = 1
    num_embedders: int = 0
    use_gpu: str = "auto"
    embedder_num_cpus: float = 1.0
    shard_num_cpus: float = 0.5
    ingest_num_cpus: float = 0.0
    start_timeout_s: float = 300.0


@dataclass
class OutputConfig:
    path: str = "output/stream"
    compression: str = "zstd"
    include_unconfirmed: bool = False
    fsync: bool = True


@dataclass
class CheckpointConfig:
    enabled: bool = True
    every_batches: int = 1  # snapshot every N-th micro-batch, written after its offsets commit
    evict_idle_s: float = 0.0  # streams silent this long leave memory (state stays on disk)
    # A stream checkpoint that cannot be restored (missing, torn, fails validation):
    # "fail" stops the job with a message; "fresh" restarts that stream with new track ids.
    on_invalid: str = "fail"


@dataclass
class JobConfig:
    commit_interval_s: float = 0.0
    progress_interval_s: float = 10.0
    max_idle_s: float = 0.0
    expected_frames: int = 0
    stop_after_batches: int = 0
    fail_after_batches: int = 0
    metrics: bool = True
    request_timeout_s: float = 30.0  # one produce flush / offset commit waits this long
    retry_backoff_s: float = 0.5  # first wait after a failed produce or commit; doubles
    retry_backoff_max_s: float = 30.0
    broker_timeout_s: float = 600.0  # produce/commit failing this long fails the job; 0 = never


@dataclass
class RayConfig:
    address: str = ""
    namespace: str = "ray-deepsort"


@dataclass
class StreamConfig:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    actors: ActorsConfig = field(default_factory=ActorsConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    job: JobConfig = field(default_factory=JobConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    @property
    def reid_enabled(self) -> bool:
        """Whether frames without precomputed embeddings are embedded (model "none": never)."""
        return self.model.name.lower() != "none" and self.tracker.appearance_weight > 0

    def model_choice(self, max_batch_size: int = 128) -> ModelChoice:
        """The embedders' `ModelChoice` (forward passes of `max_batch_size` crops)."""
        return self.model.choice(max_batch_size)

    def validate(self) -> StreamConfig:
        """Check ranges and combinations; returns self."""
        kafka = self.kafka
        if not kafka.frames_topics:
            raise ConfigError("kafka.frames_topics must name at least one topic")
        if kafka.dead_letter_topic and kafka.dead_letter_topic in kafka.frames_topics:
            raise ConfigError("kafka.dead_letter_topic must differ from the frames topics")
        if kafka.results_topic and kafka.results_topic in kafka.frames_topics:
            raise ConfigError("kafka.results_topic must differ from the frames topics")
        if kafka.auto_offset_reset not in ("earliest", "latest"):
            raise ConfigError("kafka.auto_offset_reset must be 'earliest' or 'latest'")
        servers = [part.strip() for part in kafka.bootstrap_servers.split(",")]
        if not any(servers) or not all(servers):
            raise ConfigError(
                f"kafka.bootstrap_servers must list host:port addresses, got "
                f"{kafka.bootstrap_servers!r} (an empty variable in the command line?)"
            )
        unknown = set(kafka.security) - SECURITY_KEYS
        if unknown:
            raise ConfigError(
                f"kafka.security has unknown key(s) {sorted(unknown)}; "
                f"known: {sorted(SECURITY_KEYS | set(SECRET_FILE_KEYS))}"
            )
        _check_sasl_login(kafka.security)
        positive = {
            "kafka.max_message_bytes": kafka.max_message_bytes,
            "kafka.topic_partitions": kafka.topic_partitions,
            "kafka.topic_replication_factor": kafka.topic_replication_factor,
            "batch.max_frames": self.batch.max_frames,
            "batch.max_embed_crops": self.batch.max_embed_crops,
            "batch.max_inflight_batches": self.batch.max_inflight_batches,
            "actors.num_shards": self.actors.num_shards,
            "actors.ingest_workers": self.actors.ingest_workers,
            "actors.start_timeout_s": self.actors.start_timeout_s,
            "checkpoint.every_batches": self.checkpoint.every_batches,
            "job.request_timeout_s": self.job.request_timeout_s,
            "job.retry_backoff_s": self.job.retry_backoff_s,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        non_negative = {
            "batch.max_wait_ms": self.batch.max_wait_ms,
            "model.forward_batch_size": self.model.forward_batch_size,
            "model.threads": self.model.threads,
            "model.input_height": self.model.input_height,
            "model.input_width": self.model.input_width,
            "actors.num_embedders": self.actors.num_embedders,
            "actors.embedder_num_cpus": self.actors.embedder_num_cpus,
            "actors.shard_num_cpus": self.actors.shard_num_cpus,
            "actors.ingest_num_cpus": self.actors.ingest_num_cpus,
            "job.commit_interval_s": self.job.commit_interval_s,
            "job.progress_interval_s": self.job.progress_interval_s,
            "job.max_idle_s": self.job.max_idle_s,
            "job.expected_frames": self.job.expected_frames,
            "job.stop_after_batches": self.job.stop_after_batches,
            "job.fail_after_batches": self.job.fail_after_batches,
            "job.broker_timeout_s": self.job.broker_timeout_s,
            "checkpoint.evict_idle_s": self.checkpoint.evict_idle_s,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")
        if self.job.retry_backoff_max_s < self.job.retry_backoff_s:
            raise ConfigError("job.retry_backoff_max_s must be >= job.retry_backoff_s")
        if (self.model.input_height == 0) != (self.model.input_width == 0):
            raise ConfigError("model.input_height and model.input_width: set both, or neither (0)")
        try:
            known_model_name(self.model.choice())  # also: a path that is another known model
        except ValueError as error:
            raise ConfigError(str(error).replace("model ", "model.", 1)) from None
        on_invalid = self.checkpoint.on_invalid
        if on_invalid not in ON_INVALID_POLICIES:
            raise ConfigError(f"checkpoint.on_invalid must be 'fail' or 'fresh': {on_invalid!r}")
        if str(self.actors.use_gpu).lower() not in ("auto", "true", "false"):
            raise ConfigError("actors.use_gpu must be 'auto', true or false")
        if not self.output.path:
            raise ConfigError("output.path must be set")
        # The tracker itself checks its parameter ranges.
        from ray_deepsort.core import DeepSORTTracker

        try:
            DeepSORTTracker(**self.tracker.params())
        except (TypeError, ValueError) as error:
            raise ConfigError(f"tracker: {error}") from None
        return self

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        """Plain dict (for logs and summaries); secrets are masked unless `redact=False`: the
        security passwords, and any key naming a password in the consumer/producer tables."""
        data = dataclasses.asdict(self)
        if redact:
            for table in ("security", "consumer", "producer"):
                options = data["kafka"][table]
                for key in options:
                    if key in _SECRET_KEYS or "password" in key:
                        options[key] = _MASK
        return data

    def use_gpu_setting(self) -> str | bool:
        value = str(self.actors.use_gpu).lower()
        return "auto" if value == "auto" else value == "true"


_SECTIONS: dict[str, type] = {
    "kafka": KafkaConfig,
    "model": ModelConfig,
    "batch": BatchConfig,
    "actors": ActorsConfig,
    "tracker": TrackerConfig,
    "output": OutputConfig,
    "job": JobConfig,
    "checkpoint": CheckpointConfig,
    "ray": RayConfig,
}
# Keys of earlier versions, and what to write instead.
_REPLACED = {
    ("model", "checkpoint"): "put the weights file in model.path, with model.name = its timm "
    'architecture (e.g. name = "mobilenetv2_100", path = "w.pt")',
}
_FREE_TABLES = {("kafka", "security"), ("kafka", "consumer"), ("kafka", "producer")}


def _coerce(section: str, key: str, value: Any, expected: Any) -> Any:
    """Check a value against the dataclass field's type (ints are accepted for floats)."""
    where = f"{section}.{key}"
    if section == "tracker":
        try:
            return tracker_parameter(key).coerce(value)
        except ValueError as error:
            raise ConfigError(str(error).replace("tracker parameter ", "tracker.", 1)) from None
    if (section, key) in _FREE_TABLES:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table")
        if key == "security":
            # Secrets from the shell may look like numbers or booleans: keep them strings.
            return resolve_secrets(
                {
                    k: v if k == "ssl_check_hostname" or isinstance(v, str) else str(v)
                    for k, v in value.items()
                }
            )
        return dict(value)
    if isinstance(expected, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(expected, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if isinstance(expected, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if isinstance(expected, list):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings, got {value!r}")
        return list(value)
    if isinstance(expected, str):
        if section == "actors" and key == "use_gpu" and isinstance(value, bool):
            return str(value).lower()
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type")  # pragma: no cover


def resolve_secrets(
    security: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """[kafka.security] with `${NAME}` replaced by environment variables and each `<key>_file`
    (e.g. `sasl_plain_password_file`) replaced by `<key>` = the file's content (one trailing
    newline dropped). Missing variables or unreadable files are `ConfigError`s that name the
    variable or path, never a value."""
    env = os.environ if environ is None else environ
    resolved: dict[str, Any] = {}
    for key, value in security.items():
        if isinstance(value, str):
            value = _expand_env(f"kafka.security.{key}", value, env)
        if key not in SECRET_FILE_KEYS:
            resolved[key] = value
            continue
        target = SECRET_FILE_KEYS[key]
        if target in security:
            raise ConfigError(f"kafka.security: set {target} or {key}, not both")
        try:
            resolved[target] = Path(value).read_text(encoding="utf-8").removesuffix("\n")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            raise ConfigError(f"kafka.security.{key}: cannot read {value!r}: {reason}") from None
    return resolved


def _expand_env(where: str, value: str, env: Mapping[str, str]) -> str:
    def variable(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return env[name]

    return _ENV_REFERENCE.sub(variable, value)


def _check_sasl_login(security: Mapping[str, Any]) -> None:
    """SASL with a user/password mechanism needs both, non-empty (an empty secret or variable
    would otherwise fail as a login error far from its cause)."""
    protocol = str(security.get("security_protocol", "PLAINTEXT")).upper()
    mechanism = str(security.get("sasl_mechanism", "PLAIN")).upper()
    if not protocol.startswith("SASL") or mechanism not in _PASSWORD_MECHANISMS:
        return
    for key in ("sasl_plain_username", "sasl_plain_password"):
        if not str(security.get(key) or "").strip():
            raise ConfigError(
                f"kafka.security.{key} is empty: {protocol} with {mechanism} needs it "
                f'(set {key}_file to a mounted secret file, or {key} = "${{ENV_VAR}}")'
            )


def config_from_dict(data: dict[str, Any], base: StreamConfig | None = None) -> StreamConfig:
    """Apply a nested dict (as parsed from TOML) over `base` (defaults if None)."""
    config = dataclasses.replace(base) if base is not None else StreamConfig()
    for section, values in data.items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown config section [{section}]; known: {sorted(_SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table")
        current = dataclasses.replace(getattr(config, section))
        names = {f.name for f in dataclasses.fields(current)}
        for key, value in values.items():
            if (section, key) in _REPLACED:
                raise ConfigError(f"{section}.{key} is gone: {_REPLACED[(section, key)]}")
            if key not in names:
                raise ConfigError(f"unknown key {section}.{key}; known: {sorted(names)}")
            setattr(current, key, _coerce(section, key, value, getattr(current, key)))
        setattr(config, section, current)
    return config


def parse_override(text: str) -> dict[str, Any]:
    """`section.key=value` (or `kafka.security.key=value`) -> nested dict; value read as TOML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not section.key=value")
    path, raw = text.split("=", 1)
    parts = [p.strip() for p in path.strip().split(".")]
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(f"override {text!r}: expected section.key or kafka.<table>.key")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # bare strings need no quotes on the command line
    nested: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        nested = {part: nested}
    return nested


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> StreamConfig:
    """Defaults, then the TOML file at `path` (if any), then each `section.key=value` override."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: {error}") from None
    for override in overrides:
        parsed = parse_override(override)
        security = parsed.get("kafka", {}).get("security")
        for key, value in security.items() if isinstance(security, dict) else ():
            if key in _SECRET_KEYS and not _ENV_REFERENCE.search(str(value)):
                logger.warning(
                    "kafka.security.%s is on the command line, where `ray job list` and the job "
                    "log show it: use %s_file (a mounted secret) or %s=${ENV_VAR} instead",
                    key,
                    key,
                    key,
                )
        _merge(data, parsed)
    return config_from_dict(data).validate()


def dumps(config: StreamConfig) -> str:
    """The effective config as JSON (secrets masked) for logs."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)
