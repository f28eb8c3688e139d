"""A throw-away loopback OCI registry (CNCF distribution, Debian ``docker-registry``).

The registry listens on ``127.0.0.1:<free port>`` with filesystem storage in a
test-owned folder and ``delete.enabled``; optionally behind htpasswd basic auth.
It is started with ``Popen`` and stopped by its PID (terminate, then wait).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

AUTH_USERNAME = "alice"
AUTH_PASSWORD = "s3cret"


class RegistryUnavailableError(RuntimeError):
    """A tool the loopback registry needs is not installed, or it did not come up."""


@dataclass(frozen=True, slots=True)
class OciRegistry:
    """A running loopback registry. ``username``/``password`` are ``None`` without auth."""

    host: str
    url: str
    username: str | None
    password: str | None
    data_dir: Path
    log_path: Path
    pid: int

    @property
    def creds(self) -> str | None:
        """``user:password`` as skopeo's ``--creds`` wants it, or ``None`` without auth."""
        if self.username is None or self.password is None:
            return None
        return f"{self.username}:{self.password}"


def require_executable(name: str) -> Path:
    """The path of ``name`` on ``PATH``; ``RegistryUnavailableError`` naming the Debian package if absent."""
    found = shutil.which(name)
    if found is None:
        package = {"htpasswd": "apache2-utils"}.get(name, name)
        raise RegistryUnavailableError(f"`{name}` not found on PATH (Debian package {package}; run `make bootstrap`)")
    return Path(found)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_htpasswd(workdir: Path) -> Path:
    htpasswd = require_executable("htpasswd")
    out = subprocess.run(
        [str(htpasswd), "-Bbn", AUTH_USERNAME, AUTH_PASSWORD], capture_output=True, text=True, check=True
    ).stdout
    path = workdir / "htpasswd"
    path.write_text(out)
    return path


def _write_config(workdir: Path, port: int, htpasswd: Path | None) -> Path:
    auth = f"auth: {{htpasswd: {{realm: basic-realm, path: {htpasswd}}}}}\n" if htpasswd else ""
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn, accesslog: {disabled: true}}\n"
        f"storage: {{filesystem: {{rootdirectory: {workdir / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}, secret: loopback-test-secret}}\n" + auth
    )
    return config


def _is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/", timeout=1) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # up, and asking for credentials
    except OSError:
        return False


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RegistryUnavailableError(
                f"docker-registry exited with {proc.returncode} before serving {url}: {log_path.read_text()[-2000:]}"
            )
        if _is_ready(url):
            return
        time.sleep(0.05)
    raise RegistryUnavailableError(f"docker-registry did not answer {url}/v2/ within {timeout}s; see {log_path}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _start_once(exe: Path, workdir: Path, htpasswd: Path | None, timeout: float) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    config = _write_config(workdir, port, htpasswd)
    log_path = workdir / "registry.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [str(exe), "serve", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        _wait_ready(proc, f"http://127.0.0.1:{port}", log_path, timeout)
    except BaseException:
        _stop(proc)
        raise
    return proc, port


@contextmanager
def running_registry(workdir: Path, *, auth: bool = False, timeout: float = 15) -> Iterator[OciRegistry]:
    """Start a loopback registry storing into ``workdir/data``; stop it on exit.

    Retries with a fresh port when the chosen one was taken between probing and binding.
    Raises ``RegistryUnavailableError`` when ``docker-registry`` (or ``htpasswd`` for
    ``auth``) is missing or the server does not become ready.
    """
    exe = require_executable("docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    htpasswd = _write_htpasswd(workdir) if auth else None
    for attempt in range(3):
        try:
            proc, port = _start_once(exe, workdir, htpasswd, timeout)
            break
        except RegistryUnavailableError:
            if attempt == 2:
                raise
    try:
        yield OciRegistry(
            host=f"127.0.0.1:{port}",
            url=f"http://127.0.0.1:{port}",
            username=AUTH_USERNAME if auth else None,
            password=AUTH_PASSWORD if auth else None,
            data_dir=workdir / "data",
            log_path=workdir / "registry.log",
            pid=proc.pid,
        )
    finally:
        _stop(proc)
