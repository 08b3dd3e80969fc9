"""A real single-node Apache Kafka (KRaft) broker for tests, CI and the local demo.

No Docker runs on the dev and CI machines, so the broker is assembled from Maven Central jars
(deploy/kafka/pom.xml) and run with Java 17; recipe: shared/design/kafka-local.md. Stdlib only,
so the CLI and test fixtures can use it without importing faust.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.config import validation_problems
from worker.errors import TextstreamError

logger = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[1]
# Sized for a 2-core CI machine.
_JVM_OPTS = ["-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
             "-Djava.awt.headless=true"]
_PACKAGES = {"java": "openjdk-17-jre-headless", "mvn": "openjdk-17-jre-headless maven"}


_SCRAM_UNSAFE = re.compile(r"[\s,=\[\]\"']")
SCRAM_MECHANISM = "SCRAM-SHA-512"


class KafkaLocalError(TextstreamError):
    """The local broker could not be assembled, started or stopped; the message says why."""


def _default_home() -> Path:
    return _REPO_ROOT / "deploy" / "kafka"


@dataclass(frozen=True)
class BrokerConfig:
    home: Path = field(default_factory=lambda: local_kafka_home())
    # None means home/"run"; filled in by __post_init__, so it is always a Path afterwards.
    run_dir: Path = None  # type: ignore[assignment]
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    # Optional extra SASL_PLAINTEXT listener with SCRAM-SHA-512 (the PLAINTEXT one stays for the
    # broker itself and the default clients); the users are created when the storage is formatted.
    sasl_port: int | None = None
    scram_users: tuple[tuple[str, str], ...] = ()
    # Also accept SASL/OAUTHBEARER on the SASL listener, validated by Kafka's unsecured JWT validator
    # (unsigned tokens with `sub` and `exp`): for tests of token login, never for a real cluster.
    oauthbearer: bool = False
    # Optional extra SSL listener that requires a client certificate (mutual TLS): keystore = PEM
    # file with the broker's certificate chain and unencrypted PKCS#8 key, truststore = PEM CA(s)
    # of the client certificates. For tests; the demo broker has none.
    ssl_port: int | None = None
    ssl_keystore: Path | None = None
    ssl_truststore: Path | None = None

    # Derived paths (absolute: log.dirs must be, and the JVM runs with another cwd).
    libs: Path = field(init=False, repr=False)
    data_dir: Path = field(init=False, repr=False)
    logs_dir: Path = field(init=False, repr=False)
    properties_file: Path = field(init=False, repr=False)
    pid_file: Path = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.port == self.controller_port:
            raise KafkaLocalError(f"broker and controller port are both {self.port}")
        if self.sasl_port is not None:
            if self.sasl_port in (self.port, self.controller_port):
                raise KafkaLocalError(f"the SASL port {self.sasl_port} is also the broker or controller port")
            if not self.scram_users:
                raise KafkaLocalError("a SASL listener needs at least one SCRAM user "
                                      "(TEXTSTREAM_SASL_USERNAME and TEXTSTREAM_SASL_PASSWORD)")
        elif self.scram_users:
            raise KafkaLocalError("SCRAM users without a SASL listener: set sasl_port (TEXTSTREAM_KAFKA_SASL_PORT)")
        elif self.oauthbearer:
            raise KafkaLocalError("OAUTHBEARER without a SASL listener: set sasl_port")
        if self.ssl_port is not None:
            if self.ssl_port in (self.port, self.controller_port, self.sasl_port):
                raise KafkaLocalError(f"the SSL port {self.ssl_port} is also another listener's port")
            for name, path in (("ssl_keystore", self.ssl_keystore), ("ssl_truststore", self.ssl_truststore)):
                if path is None or not Path(path).is_file():
                    raise KafkaLocalError(f"an SSL listener needs {name}, a PEM file (got {path})")
            object.__setattr__(self, "ssl_keystore", Path(self.ssl_keystore).resolve())  # type: ignore[arg-type]
            object.__setattr__(self, "ssl_truststore", Path(self.ssl_truststore).resolve())  # type: ignore[arg-type]
        for name, password in self.scram_users:
            # StorageTool parses 'SCRAM-SHA-512=[name=N,password=P]': these characters would break it.
            if not name or not password or _SCRAM_UNSAFE.search(name + password):
                raise KafkaLocalError(f"SCRAM user {name!r}: name and password must be non-empty and free of "
                                      "spaces, quotes, ',', '=', '[' and ']'")
        home = Path(self.home).expanduser().resolve()
        run = Path(self.run_dir).expanduser().resolve() if self.run_dir else home / "run"
        paths = {"home": home, "run_dir": run, "libs": home / "libs", "data_dir": run / "data",
                 "logs_dir": run / "logs", "properties_file": run / "server.properties",
                 "pid_file": run / "broker.pid"}
        for name, value in paths.items():
            object.__setattr__(self, name, value)


class LocalKafkaSettings(BaseSettings):
    """TEXTSTREAM_KAFKA_*: where the local broker lives and listens. With a SASL port the broker also
    creates the SCRAM user the worker logs in as (TEXTSTREAM_SASL_USERNAME / TEXTSTREAM_SASL_PASSWORD)."""

    model_config = SettingsConfigDict(env_prefix="TEXTSTREAM_KAFKA_", frozen=True, extra="ignore")

    home: Path = Field(default_factory=_default_home, description="Kafka jars and config (deploy/kafka)")
    run_dir: Path | None = Field(None, description="data and logs (default: HOME/run)")
    port: int = Field(9092, ge=1, le=65535, description="PLAINTEXT listener on 127.0.0.1")
    controller_port: int = Field(9093, ge=1, le=65535, description="KRaft controller listener")
    sasl_port: int | None = Field(None, ge=1, le=65535, description="adds a SASL_PLAINTEXT/SCRAM-SHA-512 listener")
    sasl_username: str = Field("", validation_alias="TEXTSTREAM_SASL_USERNAME")
    sasl_password: SecretStr = Field(SecretStr(""), validation_alias="TEXTSTREAM_SASL_PASSWORD")

    @field_validator("run_dir", "sasl_port", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


def local_settings() -> LocalKafkaSettings:
    """TEXTSTREAM_KAFKA_*, validated; KafkaLocalError names each bad variable."""
    try:
        return LocalKafkaSettings()
    except ValidationError as exc:
        problems = validation_problems(exc, lambda field: f"TEXTSTREAM_KAFKA_{field.upper()}")
        raise KafkaLocalError("invalid local Kafka settings: " + "; ".join(problems)) from None


def local_kafka_home() -> Path:
    """TEXTSTREAM_KAFKA_HOME, else deploy/kafka of this clone."""
    return local_settings().home


def config_from_env() -> BrokerConfig:
    """The local broker's configuration from TEXTSTREAM_KAFKA_*."""
    env = local_settings()
    users: tuple[tuple[str, str], ...] = ()
    if env.sasl_port is not None:
        password = env.sasl_password.get_secret_value()
        if not env.sasl_username or not password:
            raise KafkaLocalError("TEXTSTREAM_KAFKA_SASL_PORT needs TEXTSTREAM_SASL_USERNAME and "
                                  "TEXTSTREAM_SASL_PASSWORD: the SCRAM user the broker creates")
        users = ((env.sasl_username, password),)
    return BrokerConfig(home=env.home, run_dir=env.run_dir, port=env.port,  # type: ignore[arg-type]
                        controller_port=env.controller_port, sasl_port=env.sasl_port, scram_users=users)


def bootstrap(cfg: BrokerConfig) -> str:
    return f"{cfg.host}:{cfg.port}"


def sasl_bootstrap(cfg: BrokerConfig) -> str | None:
    """The SCRAM listener's address, if the broker has one."""
    return f"{cfg.host}:{cfg.sasl_port}" if cfg.sasl_port is not None else None


def ssl_bootstrap(cfg: BrokerConfig) -> str | None:
    """The mutual-TLS listener's address, if the broker has one."""
    return f"{cfg.host}:{cfg.ssl_port}" if cfg.ssl_port is not None else None


def unsecured_jwt(subject: str, lifetime_s: float = 3600.0, now: float | None = None) -> str:
    """An unsigned JWT ({"alg":"none"}) with `sub`, `iat` and `exp`: what the local broker's
    OAUTHBEARER listener accepts (Kafka's unsecured validator). A negative lifetime gives an expired one."""
    issued = time.time() if now is None else now

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part({'sub': subject, 'iat': int(issued), 'exp': int(issued + lifetime_s)})}."


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        hint = f"install it, e.g. `apt-get install {_PACKAGES[name]}`" if name in _PACKAGES else ""
        raise KafkaLocalError(f"`{name}` is not on PATH; {hint}".rstrip("; "))
    return path


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path} not found)"
    return f"--- {path} (last {lines} lines) ---\n" + "\n".join(text[-lines:])


def assemble(cfg: BrokerConfig) -> Path:
    """Make sure home/libs holds the jars of the pom; rebuild them when the pom changed."""
    require_tool("java")
    pom = cfg.home / "pom.xml"
    if not pom.is_file():
        raise KafkaLocalError(f"{pom} not found (TEXTSTREAM_KAFKA_HOME={cfg.home})")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    stamp = cfg.libs / ".pom.sha256"
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return cfg.libs
    mvn = require_tool("mvn")
    # Two Kafka versions on one classpath break the broker, so never copy over old jars.
    shutil.rmtree(cfg.libs, ignore_errors=True)
    cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
           "-DincludeScope=runtime", f"-DoutputDirectory={cfg.libs}"]
    logger.info("assembling Kafka jars into %s", cfg.libs)
    proc = subprocess.run(cmd, cwd=cfg.home, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(cfg.libs, ignore_errors=True)
        # Maven 3.8 emits ANSI resets even with -B; keep the message readable.
        output = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
        tail = "\n".join(output.splitlines()[-30:])
        raise KafkaLocalError(f"mvn failed (exit {proc.returncode}) assembling {cfg.libs}:\n{tail}")
    stamp.write_text(digest + "\n")
    return cfg.libs


def render_properties(cfg: BrokerConfig) -> str:
    template = string.Template((cfg.home / "server.properties.template").read_text())
    listeners, protocols, lines = "", "", []
    if cfg.sasl_port is not None:
        listeners += f",SASL_PLAINTEXT://{cfg.host}:{cfg.sasl_port}"
        protocols += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
        # No credentials in the file: the users live in the metadata log (format --add-scram).
        mechanisms = SCRAM_MECHANISM + (",OAUTHBEARER" if cfg.oauthbearer else "")
        lines += [
            "# SCRAM listener for clients; the broker itself still talks PLAINTEXT.",
            f"sasl.enabled.mechanisms={mechanisms}",
            f"listener.name.sasl_plaintext.{SCRAM_MECHANISM.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        ]
        if cfg.oauthbearer:
            # No server callback handler: Kafka validates tokens with its unsecured JWT validator.
            lines += [
                "# OAUTHBEARER with unsigned test tokens (OAuthBearerUnsecuredValidatorCallbackHandler).",
                "listener.name.sasl_plaintext.oauthbearer.sasl.jaas.config="
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
                'unsecuredLoginStringClaim_sub="broker";',
            ]
    if cfg.ssl_port is not None:
        listeners += f",SSL://{cfg.host}:{cfg.ssl_port}"
        protocols += ",SSL:SSL"
        lines += [
            "# Mutual-TLS listener for clients (PEM files, no Java keystores).",
            "listener.name.ssl.ssl.keystore.type=PEM",
            f"listener.name.ssl.ssl.keystore.location={cfg.ssl_keystore}",
            "listener.name.ssl.ssl.truststore.type=PEM",
            f"listener.name.ssl.ssl.truststore.location={cfg.ssl_truststore}",
            "listener.name.ssl.ssl.client.auth=required",
        ]
    return template.substitute(host=cfg.host, port=cfg.port, controller_port=cfg.controller_port,
                               log_dirs=cfg.data_dir, sasl_listener=listeners, sasl_protocol_map=protocols,
                               sasl_properties="".join("\n" + line for line in lines))


def _settings_lines(properties: str) -> list[str]:
    """The lines that matter (comments and blank lines do not change a formatted broker)."""
    return [line for line in properties.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (all sockets held together so they differ)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def check_ports_free(cfg: BrokerConfig) -> None:
    ports = [(cfg.port, "TEXTSTREAM_KAFKA_PORT"), (cfg.controller_port, "TEXTSTREAM_KAFKA_CONTROLLER_PORT")]
    if cfg.sasl_port is not None:
        ports.append((cfg.sasl_port, "TEXTSTREAM_KAFKA_SASL_PORT"))
    if cfg.ssl_port is not None:
        ports.append((cfg.ssl_port, "the SSL listener port"))
    for port, var in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # SO_REUSEADDR as the JVM does, so TIME_WAIT left by a stopped broker is not "in use".
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((cfg.host, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise KafkaLocalError(f"cannot bind {cfg.host}:{port}: {exc}") from None
                raise KafkaLocalError(f"port {port} on {cfg.host} is already in use "
                                      f"(another Kafka? set {var} to use another port)") from None


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our own exited child; otherwise the zombie would look alive.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    return True


def _running_pid(cfg: BrokerConfig) -> int | None:
    """The pid in the pid file if that process is alive and is this run_dir's broker."""
    try:
        pid = int(cfg.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not _alive(pid):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    # A recycled pid must never be mistaken for the broker (stop() would kill it).
    if cmdline.exists() and str(cfg.properties_file).encode() not in cmdline.read_bytes():
        return None
    return pid


def _java(cfg: BrokerConfig, *args: str, hide: tuple[str, ...] = ()) -> str:
    proc = subprocess.run([require_tool("java"), "-cp", f"{cfg.libs}/*", *args],
                          capture_output=True, text=True, cwd=cfg.run_dir)
    if proc.returncode != 0:
        message = f"`java {' '.join(args)}` failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}".rstrip()
        for secret in hide:  # SCRAM passwords are arguments of `format`
            message = message.replace(secret, "***")
        raise KafkaLocalError(message)
    return proc.stdout.strip()


def _format(cfg: BrokerConfig) -> None:
    shutil.rmtree(cfg.data_dir, ignore_errors=True)
    cfg.properties_file.write_text(render_properties(cfg))
    cluster_id = _java(cfg, "kafka.tools.StorageTool", "random-uuid")
    scram = [arg for name, password in cfg.scram_users
             for arg in ("--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]")]
    _java(cfg, "kafka.tools.StorageTool", "format", "--standalone", "-t", cluster_id,
          "-c", str(cfg.properties_file), *scram, hide=tuple(pw for _, pw in cfg.scram_users))
    logger.info("formatted %s (cluster id %s)", cfg.data_dir, cluster_id)


def _wait_ready(cfg: BrokerConfig, pid: int, timeout: float) -> None:
    # In Kafka 4.x the PLAINTEXT port opens only once the broker is caught up and unfenced.
    deadline = time.monotonic() + timeout
    ports = [p for p in (cfg.port, cfg.sasl_port, cfg.ssl_port) if p is not None]
    while not all(_port_open(cfg.host, p) for p in ports):
        if not _alive(pid):
            cfg.pid_file.unlink(missing_ok=True)
            logs = f"{_tail(cfg.logs_dir / 'console.log')}\n{_tail(cfg.logs_dir / 'server.log')}"
            raise KafkaLocalError(f"Kafka broker (pid {pid}) exited during start-up:\n{logs}")
        if time.monotonic() > deadline:
            stop(cfg)
            raise KafkaLocalError(f"Kafka broker not ready on {bootstrap(cfg)} after "
                                  f"{timeout:.0f} s:\n{_tail(cfg.logs_dir / 'server.log')}")
        time.sleep(0.2)


def start(cfg: BrokerConfig, fresh: bool = False, timeout: float = 90) -> int:
    """Start the broker (or reuse the one running from run_dir); return its pid once ready."""
    pid = _running_pid(cfg)
    if pid is not None and not fresh:
        _wait_ready(cfg, pid, timeout)
        return pid
    if pid is not None:
        stop(cfg)
    assemble(cfg)
    check_ports_free(cfg)
    cfg.logs_dir.mkdir(parents=True, exist_ok=True)
    if fresh or not (cfg.data_dir / "meta.properties").is_file():
        _format(cfg)
    elif _settings_lines(cfg.properties_file.read_text()) != _settings_lines(render_properties(cfg)):
        # The formatted quorum remembers the controller endpoint; changed ports need a new format.
        raise KafkaLocalError(f"broker settings changed since {cfg.data_dir} was formatted; "
                              "start with fresh=True to wipe it")
    cmd = [require_tool("java"), *_JVM_OPTS,
           f"-Dlog4j2.configurationFile={cfg.home / 'log4j2.properties'}",
           f"-Dkafka.logs.dir={cfg.logs_dir}",
           "-cp", f"{cfg.libs}/*", "kafka.Kafka", str(cfg.properties_file)]
    started = time.monotonic()
    with open(cfg.logs_dir / "console.log", "ab") as console:
        # Own session: Ctrl-C in the terminal that started it must not kill the broker.
        proc = subprocess.Popen(cmd, cwd=cfg.run_dir, stdin=subprocess.DEVNULL, stdout=console,
                                stderr=subprocess.STDOUT, start_new_session=True)
    cfg.pid_file.write_text(f"{proc.pid}\n")
    _wait_ready(cfg, proc.pid, timeout)
    # The broker outlives this handle by design; mark it done so Popen's __del__ does not warn.
    proc.returncode = 0
    logger.info("Kafka broker pid %d ready on %s in %.1f s",
                proc.pid, bootstrap(cfg), time.monotonic() - started)
    return proc.pid


def stop(cfg: BrokerConfig, timeout: float = 30) -> bool:
    """SIGTERM (controlled shutdown), SIGKILL after timeout; False if nothing was running."""
    pid = _running_pid(cfg)
    if pid is None:
        cfg.pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        logger.warning("Kafka broker pid %d ignored SIGTERM for %.0f s; killing it", pid, timeout)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    cfg.pid_file.unlink(missing_ok=True)
    logger.info("Kafka broker pid %d stopped", pid)
    return True


def kill(cfg: BrokerConfig, sig: int = signal.SIGKILL, timeout: float = 30) -> bool:
    """Send `sig` to the broker and wait until it exited; False if nothing was running.

    For fault tests: SIGKILL is a crash (no controlled shutdown, nothing flushed). `start(cfg)`
    afterwards restarts it on the same data directory and ports, as a restarted server would.
    """
    pid = _running_pid(cfg)
    if pid is None:
        cfg.pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise KafkaLocalError(f"Kafka broker pid {pid} still alive {timeout:.0f} s after signal {sig}")
        time.sleep(0.1)
    cfg.pid_file.unlink(missing_ok=True)
    logger.info("Kafka broker pid %d ended by signal %d", pid, sig)
    return True


def status(cfg: BrokerConfig) -> dict[str, Any]:
    pid = _running_pid(cfg)
    return {"running": pid is not None, "ready": pid is not None and _port_open(cfg.host, cfg.port),
            "pid": pid, "bootstrap": bootstrap(cfg), "data_dir": str(cfg.data_dir),
            "log_file": str(cfg.logs_dir / "server.log")}
