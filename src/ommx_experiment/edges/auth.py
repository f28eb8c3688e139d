"""Credentials for remote OCI registries.

Lookup order for a registry host (the ``host[:port]`` of an image name):

1. ``OMMX_BASIC_AUTH_DOMAIN`` / ``OMMX_BASIC_AUTH_USERNAME`` / ``OMMX_BASIC_AUTH_PASSWORD``
   when all three are set and the domain equals the host (OMMX 3's override);
2. the Docker client config, ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``:
   ``credHelpers[host]`` (``docker-credential-<name> get``), else ``credsStore``, else the
   ``auths`` entry (base64 ``auth`` or ``username``/``password``), as the Docker CLI does;
3. nothing: anonymous.

Secrets live only in :class:`Credentials`, whose ``repr`` masks them; nothing here
logs or raises with a secret in the message. oras-py's own lookup is not used: it
ignores ``$DOCKER_CONFIG`` and logs helper stderr (see :mod:`ommx_experiment.edges.remote`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV_DOMAIN = "OMMX_BASIC_AUTH_DOMAIN"
ENV_USERNAME = "OMMX_BASIC_AUTH_USERNAME"
ENV_PASSWORD = "OMMX_BASIC_AUTH_PASSWORD"
HELPER_TIMEOUT = 30.0
# Docker Hub's credentials are stored under its legacy index URL.
_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io", "docker.io")
_IDENTITY_TOKEN_USER = "<token>"


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and secret for one registry host, plus where they came from.

    ``password`` may be an identity (refresh) token when ``identity_token`` is True
    (Docker's ``"<token>"`` convention). ``repr``/``str`` never show the secret.
    """

    username: str
    password: str = field(repr=False)
    source: str = "unknown"
    identity_token: bool = False

    def basic_header(self) -> str:
        """The ``Authorization`` header value for HTTP Basic auth."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***', source={self.source!r})"

    __str__ = __repr__


def resolve_credentials(host: str) -> Credentials | None:
    """Credentials for ``host`` (``host[:port]``) following the module's lookup order, or None."""
    from_env = _from_env(host)
    if from_env is not None:
        return from_env
    return _from_docker_config(host, docker_config_path())


def docker_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json`` if ``DOCKER_CONFIG`` is set, else ``~/.docker/config.json``."""
    folder = os.environ.get("DOCKER_CONFIG")
    base = Path(folder).expanduser() if folder else Path.home() / ".docker"
    return base / "config.json"


def _from_env(host: str) -> Credentials | None:
    domain = os.environ.get(ENV_DOMAIN)
    username = os.environ.get(ENV_USERNAME)
    password = os.environ.get(ENV_PASSWORD)
    if not (domain and username and password is not None):
        return None
    if _normalise_key(domain) not in _host_keys(host):
        return None
    return Credentials(username, password, source=f"{ENV_DOMAIN}/{ENV_USERNAME}/{ENV_PASSWORD}")


def _from_docker_config(host: str, path: Path) -> Credentials | None:
    config = _read_config(path)
    if config is None:
        return None
    helpers = config.get("credHelpers")
    helper = _lookup(helpers, host) if isinstance(helpers, dict) else None
    if isinstance(helper, str) and helper:
        return _from_helper(helper, host)
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        found = _from_helper(store, host)
        if found is not None:
            return found
    auths = config.get("auths")
    entry = _lookup(auths, host) if isinstance(auths, dict) else None
    return _from_auth_entry(entry, f"{path} (auths)") if isinstance(entry, dict) else None


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("Ignoring unreadable Docker config %s: %s", path, type(exc).__name__)
        return None
    return data if isinstance(data, dict) else None


def _from_auth_entry(entry: dict[str, Any], source: str) -> Credentials | None:
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            username, sep, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            log.warning("Ignoring a malformed `auth` entry in %s", source)
            return None
        return Credentials(username, password, source=source) if sep else None
    plain_user, plain_password = entry.get("username"), entry.get("password")
    if isinstance(plain_user, str) and isinstance(plain_password, str) and plain_user:
        return Credentials(plain_user, plain_password, source=source)
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:
        return Credentials(_IDENTITY_TOKEN_USER, token, source=source, identity_token=True)
    return None


def _from_helper(name: str, host: str) -> Credentials | None:
    binary = f"docker-credential-{name}"
    server = "https://index.docker.io/v1/" if host in ("docker.io", "registry-1.docker.io") else host
    try:
        proc = subprocess.run(
            [binary, "get"], input=server.encode(), capture_output=True, timeout=HELPER_TIMEOUT, check=False
        )
    except FileNotFoundError:
        log.warning("Credential helper %s for %s not found on PATH", binary, host)
        return None
    except subprocess.TimeoutExpired:
        log.warning("Credential helper %s for %s timed out after %ss", binary, host, HELPER_TIMEOUT)
        return None
    if proc.returncode != 0:
        # stderr is not logged: helpers are third-party code and may echo what they read.
        log.info("Credential helper %s has no credentials for %s (exit %d)", binary, host, proc.returncode)
        return None
    try:
        payload = json.loads(proc.stdout)
        username, secret = str(payload["Username"]), str(payload["Secret"])
    except (ValueError, KeyError, TypeError):
        log.warning("Credential helper %s returned malformed output for %s", binary, host)
        return None
    source = f"credential helper {binary}"
    if username == _IDENTITY_TOKEN_USER:
        return Credentials(username, secret, source=source, identity_token=True)
    return Credentials(username, secret, source=source)


def _lookup(table: dict[str, Any], host: str) -> Any:
    keys = _host_keys(host)
    for key, value in table.items():
        if isinstance(key, str) and _normalise_key(key) in keys:
            return value
    return None


def _host_keys(host: str) -> set[str]:
    host = host.lower()
    if host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        return {_normalise_key(k) for k in _DOCKER_HUB_KEYS}
    return {host}


def _normalise_key(key: str) -> str:
    """``https://host:port/v1/`` → ``host:port`` (Docker config keys may be URLs)."""
    key = key.strip().lower()
    for scheme in ("https://", "http://"):
        if key.startswith(scheme):
            key = key[len(scheme) :]
    return key.split("/", 1)[0]
