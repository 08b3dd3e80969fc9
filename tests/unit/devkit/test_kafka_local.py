"""Fast checks of devkit.kafka_local that never start Java."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit import kafka_local
from devkit.kafka_local import BrokerConfig, KafkaLocalError

KAFKA_HOME = Path(__file__).resolve().parents[3] / "deploy" / "kafka"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.fixture
def bare_home(tmp_path: Path) -> Path:
    """A Kafka home with the real pom but no libs/."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(KAFKA_HOME / "pom.xml", home / "pom.xml")
    return home


def _path_with(tmp_path: Path, *tools: str) -> str:
    """A PATH holding only fake executables with the given names."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in tools:
        exe = bin_dir / tool
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    return str(bin_dir)


def _cfg(run_dir: Path, port: int, controller: int) -> BrokerConfig:
    return BrokerConfig(home=KAFKA_HOME, run_dir=run_dir, port=port, controller_port=controller)


def test_busy_broker_port_gives_clear_error(tmp_path: Path, busy_port: int) -> None:
    cfg = _cfg(tmp_path, busy_port, _free_port())
    expected = f"port {busy_port} on 127.0.0.1 is already in use"
    with pytest.raises(KafkaLocalError, match=expected) as err:
        kafka_local.check_ports_free(cfg)
    assert "TEXTSTREAM_KAFKA_PORT" in str(err.value)


def test_busy_controller_port_names_its_variable(tmp_path: Path, busy_port: int) -> None:
    cfg = _cfg(tmp_path, _free_port(), busy_port)
    with pytest.raises(KafkaLocalError, match="TEXTSTREAM_KAFKA_CONTROLLER_PORT"):
        kafka_local.check_ports_free(cfg)


def test_free_ports_pass(tmp_path: Path) -> None:
    kafka_local.check_ports_free(_cfg(tmp_path, _free_port(), _free_port()))


def test_missing_java_says_how_to_install(
    tmp_path: Path, bare_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", _path_with(tmp_path))
    with pytest.raises(KafkaLocalError, match="`java` is not on PATH.*apt-get install openjdk-17-"):
        kafka_local.assemble(BrokerConfig(home=bare_home, run_dir=tmp_path / "run"))


def test_missing_mvn_says_how_to_install(
    tmp_path: Path, bare_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", _path_with(tmp_path, "java"))
    with pytest.raises(KafkaLocalError, match="`mvn` is not on PATH.*apt-get install .*maven"):
        kafka_local.assemble(BrokerConfig(home=bare_home, run_dir=tmp_path / "run"))


def test_up_to_date_libs_need_no_mvn(
    tmp_path: Path, bare_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    libs = bare_home / "libs"
    libs.mkdir()
    digest = hashlib.sha256((bare_home / "pom.xml").read_bytes()).hexdigest()
    (libs / ".pom.sha256").write_text(digest)
    monkeypatch.setenv("PATH", _path_with(tmp_path, "java"))
    assert kafka_local.assemble(BrokerConfig(home=bare_home, run_dir=tmp_path / "run")) == libs


@pytest.mark.parametrize(
    ("name", "value"),
    [("TEXTSTREAM_KAFKA_PORT", "nine"), ("TEXTSTREAM_KAFKA_CONTROLLER_PORT", "70000")],
)
def test_config_from_env_rejects_bad_port(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(KafkaLocalError, match=name):
        kafka_local.config_from_env()


def test_config_from_env_reads_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEXTSTREAM_KAFKA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TEXTSTREAM_KAFKA_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("TEXTSTREAM_KAFKA_PORT", "19092")
    monkeypatch.setenv("TEXTSTREAM_KAFKA_CONTROLLER_PORT", "19093")
    cfg = kafka_local.config_from_env()
    assert (cfg.home, cfg.run_dir) == (tmp_path / "home", tmp_path / "run")
    assert (cfg.port, cfg.controller_port) == (19092, 19093)
    assert kafka_local.bootstrap(cfg) == "127.0.0.1:19092"


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TEXTSTREAM_KAFKA_HOME", "TEXTSTREAM_KAFKA_RUN_DIR", "TEXTSTREAM_KAFKA_PORT"):
        monkeypatch.delenv(name, raising=False)
    cfg = kafka_local.config_from_env()
    assert cfg.home == KAFKA_HOME and cfg.run_dir == KAFKA_HOME / "run"
    assert kafka_local.bootstrap(cfg) == "127.0.0.1:9092"


def test_template_renders_ports_and_absolute_log_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = kafka_local.render_properties(_cfg(Path("relative-run"), 19092, 19093))
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    props = dict(line.split("=", 1) for line in lines)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert "controller.quorum.voters" not in props  # --standalone formatting forbids it
    assert Path(props["log.dirs"]).is_absolute()
    assert props["log.dirs"] == str(tmp_path / "relative-run" / "data")
    assert props["num.partitions"] == "4" and props["auto.create.topics.enable"] == "true"
    assert "$" not in text


def test_stop_and_status_when_nothing_runs(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, _free_port(), _free_port())
    assert kafka_local.stop(cfg) is False
    assert kafka_local.status(cfg)["running"] is False


def test_pid_file_of_another_process_is_not_the_broker(tmp_path: Path) -> None:
    # A recycled pid must never be signalled: here it is the test process itself.
    cfg = BrokerConfig(home=KAFKA_HOME, run_dir=tmp_path)
    cfg.pid_file.write_text(f"{os.getpid()}\n")
    assert kafka_local.status(cfg)["running"] is False
    assert kafka_local.stop(cfg) is False
    assert not cfg.pid_file.exists()
