"""Runtime deployment files: docker-compose.yml (validated by Compose itself, offline, plus the
properties the stack relies on), deploy/Dockerfile and .dockerignore, and the Kubernetes manifests
in deploy/k8s (validated against the Kubernetes API schemas, offline, and checked against each other).

Compose: `docker compose` (the v2 plugin) when present, else Debian's `docker-compose` package
(apt-get install -y --no-install-recommends docker-compose). Neither needs a Docker engine for
`config`. A missing Compose FAILS the test; nothing here is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from worker.config import ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"
# Schemas bundled with the kubernetes-validate package (no network). An old-enough API version
# that every supported cluster serves.
K8S_VERSION = "1.30.0"


def load_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def compose_file() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def check_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every TEXTSTREAM_* variable is a real setting and its value passes the worker's validation."""
    fields = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    ours = {k: str(v) for k, v in env.items() if k.startswith(ENV_PREFIX)}
    assert set(ours) <= fields, f"unknown settings: {sorted(set(ours) - fields)}"
    for key, value in ours.items():
        monkeypatch.setenv(key, value)
    load_settings()  # raises ConfigError naming the bad variable


# --- docker compose -----------------------------------------------------------------------------

def compose_command() -> list[str]:
    """`docker compose` if the plugin is there, else the standalone `docker-compose`."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        return [standalone]
    pytest.fail("neither `docker compose` nor `docker-compose` found: install Debian's docker-compose "
                "package (apt-get install -y --no-install-recommends docker-compose)")


def test_compose_config_is_valid() -> None:
    # `config` parses, interpolates and validates against Compose's schema without an engine.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "KAFKA_HOST_PORT", "DOCKER_"))}
    proc = subprocess.run([*compose_command(), "-f", str(COMPOSE), "config", "-q"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_has_the_whole_stack() -> None:
    services = compose_file()["services"]
    assert set(services) == {"kafka", "trainer", "feedback-trainer", "worker", "prometheus", "grafana"}
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    # KRaft: one node is both broker and controller, no ZooKeeper.
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name in ["kafka", "worker", "prometheus"]:
        assert services[name]["healthcheck"]["test"], name


def test_worker_scales_in_one_consumer_group(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = compose_file()["services"]["worker"]
    # `--scale worker=3` fails on a fixed host port or a fixed container name.
    assert "ports" not in worker and "container_name" not in worker
    assert worker["environment"]["TEXTSTREAM_APP_ID"]  # the same group for every replica
    assert worker["command"] == ["worker"]
    assert "/healthz" in " ".join(worker["healthcheck"]["test"])
    assert worker["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "trainer": {"condition": "service_completed_successfully"},
    }
    assert "models:/models" in worker["volumes"]
    check_settings(worker["environment"], monkeypatch)


def test_prometheus_finds_every_worker_replica() -> None:
    services = compose_file()["services"]
    config = load_yaml(ROOT / "deploy" / "prometheus" / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "textstream-worker"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker"]  # the compose service name: one A record per replica
    assert [str(sd["port"])] == services["worker"]["expose"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]


def test_grafana_gets_the_provisioning_and_the_dashboard() -> None:
    grafana = compose_file()["services"]["grafana"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    providers = load_yaml(ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "textstream.yml")["providers"]
    path = providers[0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in grafana["volumes"]
    assert (ROOT / "deploy" / "grafana" / "dashboards" / "textstream.json").is_file()


def _trainer_script() -> str:
    trainer = compose_file()["services"]["trainer"]
    assert trainer["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = trainer["command"]
    return str(script).replace("$$", "$")  # what Compose hands the shell


@pytest.mark.parametrize(("entries", "force", "trains"), [
    ([], "0", True),                            # empty registry
    ([".staging-1f2e", "notes.txt"], "0", True),  # no published version yet
    (["1", "2"], "0", False),                   # a version exists: nothing to do
    (["3"], "1", True),                         # FORCE_TRAIN=1 trains anyway
])
def test_trainer_publishes_only_into_an_empty_registry(
    tmp_path: Path, entries: list[str], force: str, trains: bool
) -> None:
    # Run the compose trainer's shell script for real, with /models pointed at a temporary folder
    # and a stand-in `textstream` that records its arguments.
    models = tmp_path / "models"
    models.mkdir()
    for entry in entries:
        (models / entry).mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "textstream"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/called\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    script = _trainer_script().replace("/models", str(models))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FORCE_TRAIN": force}
    proc = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    called = tmp_path / "called"
    assert called.exists() == trains
    if trains:
        args = called.read_text().split()
        assert args[0] == "train" and args[args.index("--model-dir") + 1] == str(models)
        data = args[args.index("--data") + 1: args.index("--model-dir")]
        assert data == ["/app/data/bbc_news_train.jsonl.gz", "/app/data/sms_spam_train.jsonl.gz"]
        for path in data:  # the image copies data/ to /app/data
            assert (ROOT / "data" / Path(path).name).is_file()


def test_trainer_and_worker_share_the_registry_volume() -> None:
    compose = compose_file()
    services = compose["services"]
    assert "models" in compose["volumes"]
    assert "models:/models" in services["trainer"]["volumes"]
    assert services["trainer"]["environment"]["TEXTSTREAM_MODEL_DIR"] == "/models"
    assert services["worker"]["environment"]["TEXTSTREAM_MODEL_DIR"] == "/models"


# --- Dockerfile ---------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def test_dockerfile_builds_a_small_non_root_cpu_image() -> None:
    steps = dockerfile_instructions()
    args = dict(a.split("=", 1) for op, a in steps if op == "ARG" and "=" in a)
    stages = dict(reversed(a.split(" AS ")) for op, a in steps if op == "FROM")
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    # Every stage grows from the Python image; the last one (the default image) runs worker and trainer.
    for name, source in stages.items():
        while source in stages:
            source = stages[source]
        assert source == "${PYTHON_IMAGE}", name
    assert list(stages)[-1] == "trainer" and stages["worker"] == stages["trainer"] == "runtime"
    runs = " ".join(a for op, a in steps if op == "RUN")
    assert "pip install -r worker.txt" in runs and "pip install -r train.txt" in runs
    assert "pip install --no-deps ." in runs
    # CPU TensorFlow comes from the pinned dependencies that `pip install .` installs.
    assert re.search(r'"tensorflow-cpu==[\d.]+"', (ROOT / "pyproject.toml").read_text())
    users = [a for op, a in steps if op == "USER"]
    assert len(users) == 2 and all(user.split(":")[0] not in {"0", "root"} for user in users)
    assert [a for op, a in steps if op == "ENTRYPOINT"] == ['["textstream"]']
    assert [a for op, a in steps if op == "CMD"] == ['["worker"]']
    assert "6066" in [a for op, a in steps if op == "EXPOSE"]


def test_dockerignore_lets_through_what_the_dockerfile_copies() -> None:
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    assert patterns[0] == "*"  # allow-list: .venv, models/, Kafka jars never reach the build context
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for op, arg in dockerfile_instructions():
        if op == "COPY" and "--from=" not in arg:
            for source in arg.split()[:-1]:
                top = source.split("/")[0]
                assert top in allowed, f"COPY {source}: excluded by .dockerignore"
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


# --- Kubernetes ---------------------------------------------------------------------------------

def manifests() -> dict[str, dict[str, Any]]:
    """Every manifest in deploy/k8s by file name (one document per file)."""
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert len(docs) == 1, path.name
        found[path.name] = docs[0]
    return found


def by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in manifests().values() if d["kind"] == kind]
    return doc


def test_kustomization_lists_every_manifest() -> None:
    found = manifests()
    kustomization = found.pop("kustomization.yaml")
    # servicemonitor.yaml needs the Prometheus Operator's CRD, so it is applied on its own.
    assert sorted(kustomization["resources"]) == sorted(set(found) - {"servicemonitor.yaml"})


@pytest.mark.parametrize("name", ["configmap.yaml", "pvc.yaml", "worker-deployment.yaml",
                                  "worker-service.yaml", "worker-pdb.yaml", "trainer-cronjob.yaml",
                                  "feedback-trainer.yaml", "feedback-trainer-pvc.yaml"])
def test_manifest_matches_the_kubernetes_schema(name: str) -> None:
    # strict: unknown fields (a misspelt `readinessProbe`) are errors too.
    kubernetes_validate.validate(manifests()[name], K8S_VERSION, strict=True)


def test_schema_validation_catches_a_misspelt_field() -> None:
    broken = manifests()["worker-deployment.yaml"]
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinessProb"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_configmap_holds_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    check_settings(by_kind("ConfigMap")["data"], monkeypatch)


def test_worker_deployment_probes_resources_and_storage() -> None:
    config = by_kind("ConfigMap")["data"]
    deployment = manifests()["worker-deployment.yaml"]
    assert "replicas" not in deployment["spec"]  # KEDA owns it
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["worker"]
    assert container["envFrom"] == [{"configMapRef": {"name": by_kind("ConfigMap")["metadata"]["name"]}}]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(config["TEXTSTREAM_WEB_PORT"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    pvc = manifests()["pvc.yaml"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # every replica, on any node
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert claims == {"models": pvc["metadata"]["name"]}
    assert mounts["models"] == config["TEXTSTREAM_MODEL_DIR"]


def test_metrics_service_selects_the_workers() -> None:
    deployment = manifests()["worker-deployment.yaml"]
    service = by_kind("Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["metadata"]["name"] == "textstream-worker"  # = the job label alerts select
    assert service["spec"]["publishNotReadyAddresses"] is True  # scrape workers that have no model yet
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    monitor = by_kind("ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == port["name"]


def test_drains_take_the_workers_down_one_at_a_time() -> None:
    budget = by_kind("PodDisruptionBudget")
    pod_labels = manifests()["worker-deployment.yaml"]["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["spec"]["maxUnavailable"] == 1


def test_a_refused_version_fails_the_training_job_without_retries() -> None:
    from commands.train import EXIT_GATE_REFUSED

    job = by_kind("CronJob")["spec"]["jobTemplate"]["spec"]
    assert job["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy requires it
    fail, ignore = job["podFailurePolicy"]["rules"]
    assert fail["action"] == "FailJob" and fail["onExitCodes"]["values"] == [EXIT_GATE_REFUSED]
    assert fail["onExitCodes"]["containerName"] == job["template"]["spec"]["containers"][0]["name"]
    assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}


def test_trainer_cronjob_writes_the_shared_registry() -> None:
    config = by_kind("ConfigMap")["data"]
    cronjob = by_kind("CronJob")
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[0] == "train"
    assert args[args.index("--model-dir") + 1] == config["TEXTSTREAM_MODEL_DIR"]
    for path in args[args.index("--data") + 1: args.index("--model-dir")]:
        assert (ROOT / "data" / Path(path).name).is_file()
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [manifests()["pvc.yaml"]["metadata"]["name"]]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"


def test_keda_scales_on_the_lag_of_the_workers_group() -> None:
    config = by_kind("ConfigMap")["data"]
    scaled = by_kind("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == manifests()["worker-deployment.yaml"]["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["topic"] == config["TEXTSTREAM_INPUT_TOPIC"] == "texts.raw"
    assert meta["consumerGroup"] == config["TEXTSTREAM_APP_ID"] == "textstream"
    assert meta["bootstrapServers"] == config["TEXTSTREAM_BROKER"].removeprefix("kafka://")
    assert int(meta["lagThreshold"]) > 0
    # Partitions bound the useful replica count (one consumer per partition in a group).
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    assert scaled["spec"]["maxReplicaCount"] == int(config["TEXTSTREAM_TOPIC_PARTITIONS"])
    assert "partition" in (K8S / "scaledobject.yaml").read_text()


def test_the_feedback_trainer_runs_once_with_its_own_state_and_the_shared_registry(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from training.trainer import TrainerSettings

    service = compose_file()["services"]["feedback-trainer"]
    assert service["command"][0] == "trainer" and "trainer-state" in compose_file()["volumes"]
    assert {"models:/models", "trainer-state:/trainer-state"} <= set(service["volumes"])
    deployment = manifests()["feedback-trainer.yaml"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {manifests()["pvc.yaml"]["metadata"]["name"],
                      manifests()["feedback-trainer-pvc.yaml"]["metadata"]["name"]}
    for env in (service["environment"], {e["name"]: e["value"] for e in container["env"]}):
        for key, value in env.items():
            if key.startswith("TEXTSTREAM_TRAINER_"):
                monkeypatch.setenv(key, str(value))
        settings = TrainerSettings()
        for path in settings.data_paths:  # the image copies data/ to /app/data
            assert (ROOT / "data" / path.name).is_file()
