"""Settings from `CHATDEBUG_*` environment variables and command-line flags (flags win)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from addons.classify import ProfileFile


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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHATDEBUG_", extra="forbid", validate_default=True)

    proxy_addr: Addr = ("127.0.0.1", 8080)
    api_addr: Addr = ("127.0.0.1", 8081)
    database: str = "sqlite:///chatdebug.db"
    confdir: Path = Path("~/.chatdebug")
    intercept_hosts: Annotated[list[str], NoDecode] = []
    upstream_insecure: bool = False
    upstream_ca: Path | None = None
    api_token: SecretStr | None = None
    api_allow_anonymous: bool = False
    retention_days: int = Field(30, ge=0)
    reverse: Annotated[list[ReverseTarget], NoDecode] = []
    text_limit: int = Field(10_000, ge=100)
    capture_limit: int = Field(1 << 20, ge=1024)
    spool_max_bytes: int = Field(256 << 20, ge=0)
    retry_window: float = Field(30.0, gt=0)
    stale_after: float = Field(300.0, gt=0)
    log_level: str = "info"
    profiles: Annotated[list[Path], NoDecode] = []
    cors_origins: Annotated[list[str], NoDecode] = []
    otlp_endpoint: str | None = None
    otlp_content: bool = False
    otlp_retry_seconds: float = Field(300.0, gt=0)

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
        paths = [Path(p).expanduser() for p in _split(value)]
        for path in paths:
            try:
                ProfileFile.model_validate_json(path.read_bytes())
            except OSError as e:
                raise ValueError(f"cannot read {str(path)!r}: {e.strerror}") from None
            except ValueError as e:
                first = str(e).splitlines()[1:3]
                raise ValueError(f"{str(path)!r} is not a profiles file: {' '.join(first)}") from None
        return paths

    @field_validator("database")
    @classmethod
    def _database(cls, value: str) -> str:
        if not value.startswith("sqlite:///") or value == "sqlite:///":
            raise ValueError(f"expected sqlite:///relative.db or sqlite:////absolute.db, got {value!r}")
        return value

    @field_validator("confdir", "upstream_ca")
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
    def sqlite_path(self) -> str:
        """`sqlite:///rel.db` is relative to the working directory, `sqlite:////abs.db` absolute."""
        return self.database.removeprefix("sqlite:///")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
