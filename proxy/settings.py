"""Settings from `CHATDEBUG_*` environment variables and command-line flags (flags win)."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from addons.classify import ProfileFile
from addons.cost import PriceFile
from storage.backends import is_postgres


def parse_addr(value: Any) -> tuple[str, int]:
    if isinstance(value, tuple):
        return value
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT with a port from 0 to 65535, got {text!r}")
    return host, int(port)


Addr = Annotated[tuple[str, int], NoDecode]
ENV_PREFIX = "CHATDEBUG_"


class ReverseTarget(BaseModel):
    """`--reverse URL@PORT`: listen on PORT and forward everything to URL."""

    url: str
    port: int

    @classmethod
    def parse(cls, spec: Any) -> ReverseTarget:
        if isinstance(spec, ReverseTarget | dict):
            return cls.model_validate(spec)
        url, sep, port = str(spec).strip().rpartition("@")
        parts = urlsplit(url)
        if not sep or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected URL@PORT such as https://api.openai.com@8082, got {spec!r}")
        if not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(f"port must be from 1 to 65535, got {port!r}")
        return cls(url=url.rstrip("/"), port=int(port))

    @property
    def host_port(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def _split(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


@dataclass(frozen=True)
class Flag:
    """How a setting appears on the command line, in `--help` and in the README's table.

    `default` is the default as a person reads it, when the field's own value says it badly
    (a computed path, an empty list that means "the built-in ones").
    """

    name: str
    help: str
    metavar: str | None = None
    repeatable: bool = False
    default: str | None = None


CommaList = Annotated[list[str], NoDecode]  # repeatable flag; comma-separated in the environment


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    proxy_addr: Annotated[
        Addr, Flag("--proxy-addr", "where HTTPS_PROXY/HTTP_PROXY clients connect", "HOST:PORT")
    ] = ("127.0.0.1", 8080)
    api_addr: Annotated[Addr, Flag("--api-addr", "where the query API listens", "HOST:PORT")] = (
        "127.0.0.1",
        8081,
    )
    database: Annotated[
        str,
        Flag(
            "--database",
            "sqlite:///relative.db (to the working directory), sqlite:////absolute.db, or"
            " postgresql://user:password@host:port/dbname for a store many sidecars share",
            "URL",
        ),
    ] = "sqlite:///chatdebug.db"
    replica: Annotated[
        str | None,
        Flag(
            "--replica",
            "this sidecar's name in a shared store: on restart it ends only the open runs it recorded",
            "NAME",
            default="the host name",
        ),
    ] = None
    spool_path: Annotated[
        Path | None,
        Flag(
            "--spool-path",
            "file holding records while the database is down",
            "PATH",
            default="the database path + .spool; with PostgreSQL, spool-REPLICA.jsonl in the confdir",
        ),
    ] = None
    confdir: Annotated[Path, Flag("--confdir", "directory of the CA; clients trust its ca.pem", "DIR")] = (
        Path("~/.chatdebug")
    )
    intercept_hosts: Annotated[
        CommaList,
        Flag(
            "--intercept-host",
            "extra host, host:port or *.suffix to intercept and record",
            "HOST",
            repeatable=True,
            default="built-in provider hosts",
        ),
    ] = []
    upstream_insecure: Annotated[
        bool, Flag("--upstream-insecure", "do not verify upstream TLS certificates")
    ] = False
    upstream_ca: Annotated[
        Path | None,
        Flag(
            "--upstream-ca",
            "PEM bundle to verify upstream servers with (self-hosted models)",
            "FILE",
            default="system roots",
        ),
    ] = None
    api_token: Annotated[
        SecretStr | None,
        Flag(
            "--api-token",
            "bearer token the API requires; needed when the API listens beyond loopback",
            "TOKEN",
        ),
    ] = None
    api_allow_anonymous: Annotated[
        bool, Flag("--api-allow-anonymous", "allow an API beyond loopback without a token")
    ] = False
    api_allowed_hosts: Annotated[
        CommaList,
        Flag(
            "--api-allowed-host",
            "extra Host header name the tokenless API accepts, beside loopback ones",
            "HOST",
            repeatable=True,
        ),
    ] = []
    cors_origins: Annotated[
        CommaList,
        Flag("--cors-origin", "browser origin allowed to call the API, or *", "ORIGIN", repeatable=True),
    ] = []
    retention_days: Annotated[
        int, Flag("--retention-days", "delete runs idle for this many days; 0 keeps them", "DAYS")
    ] = Field(30, ge=0)
    reverse: Annotated[
        list[ReverseTarget],
        NoDecode,
        Flag(
            "--reverse",
            "also listen on PORT as a reverse proxy to URL",
            "URL@PORT",
            repeatable=True,
        ),
    ] = []
    text_limit: Annotated[int, Flag("--text-limit", "characters kept per text part", "CHARS")] = Field(
        10_000, ge=100
    )
    capture_limit: Annotated[
        int, Flag("--capture-limit", "bytes of each body kept for recording", "BYTES")
    ] = Field(1 << 20, ge=1024)
    spool_max_bytes: Annotated[
        int, Flag("--spool-max-bytes", "cap of the spool; past it records are dropped", "BYTES")
    ] = Field(256 << 20, ge=0)
    retry_window: Annotated[
        float, Flag("--retry-window", "seconds within which a re-sent request is a retry", "SECONDS")
    ] = Field(30.0, gt=0)
    stale_after: Annotated[
        float, Flag("--stale-after", "seconds after which an idle open run ends interrupted", "SECONDS")
    ] = Field(300.0, gt=0)
    stop_grace: Annotated[
        float,
        Flag("--stop-grace", "seconds in-flight calls get to finish on SIGTERM", "SECONDS"),
    ] = Field(8.0, ge=0)
    log_level: Annotated[str, Flag("--log-level", "debug, info, warning or error", "LEVEL")] = "info"
    profiles: Annotated[
        list[Path],
        NoDecode,
        Flag(
            "--profiles",
            "JSON file of classification profiles, tried before the built-in ones",
            "FILE",
            repeatable=True,
        ),
    ] = []
    prices: Annotated[
        list[Path],
        NoDecode,
        Flag(
            "--prices",
            "JSON file of model prices (USD per million tokens) that add to or override the built-in table",
            "FILE",
            repeatable=True,
        ),
    ] = []
    otlp_endpoint: Annotated[
        str | None,
        Flag(
            "--otlp-endpoint",
            "push finished runs as OpenTelemetry traces to this collector (OTLP/HTTP base URL)",
            "URL",
            default="unset (or OTEL_EXPORTER_OTLP_ENDPOINT)",
        ),
    ] = None
    otlp_content: Annotated[bool, Flag("--otlp-content", "include message content in exported spans")] = False
    otlp_retry_seconds: Annotated[
        float, Flag("--otlp-retry-seconds", "retry an export this long, then drop its runs", "SECONDS")
    ] = Field(300.0, gt=0)

    @field_validator("proxy_addr", "api_addr", mode="before")
    @classmethod
    def _addr(cls, value: Any) -> tuple[str, int]:
        return parse_addr(value)

    @field_validator("intercept_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> list[str]:
        hosts = _split(value)
        for host in hosts:
            if not host or any(c in host for c in "/ @"):
                raise ValueError(f"expected host, host:port or *.suffix, got {host!r}")
        return hosts

    @field_validator("api_allowed_hosts", mode="before")
    @classmethod
    def _api_hosts(cls, value: Any) -> list[str]:
        hosts = _split(value)
        for host in hosts:
            if any(c in host for c in "/ @"):
                raise ValueError(f"expected a host name such as chatdebug or chatdebug:8081, got {host!r}")
        return [h.lower() for h in hosts]

    @field_validator("api_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        # an empty token would turn authentication off while looking set: refuse it
        if value is None:
            return None
        token = value.get_secret_value().strip()  # a token read from a file ends in a newline
        if not token:
            raise ValueError("is empty; unset it to run without a token, or give a real one")
        return SecretStr(token)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> list[str]:
        origins = _split(value)
        for origin in origins:
            if origin != "*" and urlsplit(origin).scheme not in ("http", "https"):
                raise ValueError(f"expected an origin such as https://dash.example.com, or *, got {origin!r}")
        return [o.rstrip("/") for o in origins]

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp(cls, value: str | None) -> str | None:
        parts = urlsplit(value or "")
        if value is not None and (parts.scheme not in ("http", "https") or not parts.hostname):
            raise ValueError(f"expected an http(s) URL such as http://127.0.0.1:4318, got {value!r}")
        return value

    @field_validator("reverse", mode="before")
    @classmethod
    def _reverse(cls, value: Any) -> list[ReverseTarget]:
        return [ReverseTarget.parse(v) for v in _split(value)]

    @field_validator("profiles", mode="before")
    @classmethod
    def _profiles(cls, value: Any) -> list[Path]:
        return _json_files(value, ProfileFile, "a profiles file")

    @field_validator("prices", mode="before")
    @classmethod
    def _prices(cls, value: Any) -> list[Path]:
        return _json_files(value, PriceFile, "a prices file")

    @field_validator("database")
    @classmethod
    def _database(cls, value: str) -> str:
        if is_postgres(value):
            # imported here: psycopg costs ~10 MiB of memory that a SQLite sidecar never needs
            import psycopg
            from psycopg.conninfo import conninfo_to_dict

            try:
                conninfo_to_dict(value)
            except psycopg.ProgrammingError as e:
                raise ValueError(f"not a PostgreSQL URL ({str(e).strip()})") from None
            return value
        if not value.startswith("sqlite:///") or value == "sqlite:///":
            raise ValueError(
                "expected sqlite:///relative.db, sqlite:////absolute.db"
                f" or postgresql://user:password@host:port/dbname, got {value!r}"
            )
        return value

    @field_validator("confdir", "upstream_ca", "spool_path")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError(f"expected debug, info, warning or error, got {value!r}")
        return value.lower()

    @model_validator(mode="after")
    def _api_exposure(self) -> Settings:
        if self.upstream_ca is not None and not self.upstream_ca.is_file():
            raise ValueError(f"upstream_ca: no such file {str(self.upstream_ca)!r}")
        host = self.api_addr[0]
        if not _loopback(host) and self.api_token is None and not self.api_allow_anonymous:
            raise ValueError(
                f"api_addr: {host} is reachable beyond this machine; set an api_token "
                "or pass --api-allow-anonymous"
            )
        ports = [self.proxy_addr[1], *(r.port for r in self.reverse)]
        if self.proxy_addr[0] == self.api_addr[0] and self.api_addr[1] in ports and self.api_addr[1]:
            raise ValueError(f"api_addr: port {self.api_addr[1]} is already used by the proxy")
        return self

    @property
    def exports_traces(self) -> bool:
        """An OTLP endpoint is set: ours (`--otlp-endpoint`), or the standard
        OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT the SDK reads."""
        if self.otlp_endpoint:
            return True
        return any(os.environ.get(f"OTEL_EXPORTER_OTLP_{s}ENDPOINT") for s in ("TRACES_", ""))

    @property
    def postgres(self) -> bool:
        return is_postgres(self.database)

    @property
    def replica_name(self) -> str:
        return self.replica or socket.gethostname()

    @property
    def sqlite_path(self) -> str:
        """`sqlite:///rel.db` is relative to the working directory, `sqlite:////abs.db` absolute."""
        return self.database.removeprefix("sqlite:///")

    @property
    def database_file(self) -> Path:
        return Path(self.sqlite_path).absolute()

    @property
    def spool_file(self) -> Path:
        if self.spool_path is not None:
            return self.spool_path
        if self.postgres:  # one spool per replica: replicas may share a confdir
            return self.confdir / f"spool-{self.replica_name}.jsonl"
        return Path(f"{self.sqlite_path}.spool")

    @property
    def token(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token is not None else None


def _json_files(value: Any, model: type[BaseModel], what: str) -> list[Path]:
    """Paths to JSON files that must hold `model`, checked at start-up, one line if not."""
    paths = [Path(p).expanduser() for p in _split(value)]
    for path in paths:
        try:
            model.model_validate_json(path.read_bytes())
        except OSError as e:
            raise ValueError(f"cannot read {str(path)!r}: {e.strerror}") from None
        except ValueError as e:
            first = str(e).splitlines()[1:3]
            raise ValueError(f"{str(path)!r} is not {what}: {' '.join(first)}") from None
    return paths


def flags() -> dict[str, Flag]:
    """Each setting's flag, in declaration order."""
    found: dict[str, Flag] = {}
    for name, info in Settings.model_fields.items():
        flag = next((m for m in info.metadata if isinstance(m, Flag)), None)
        assert flag is not None, f"setting {name} has no Flag"
        found[name] = flag
    return found


def env_name(setting: str) -> str:
    return f"{ENV_PREFIX}{setting.upper()}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
