"""The HTTP side of the OCI distribution API: one session per repository.

:class:`RegistryClient` owns the wire: URL building (:func:`registry_base_url`,
plain HTTP only for loopback hosts as OMMX), ``WWW-Authenticate`` challenges
(Bearer tokens, Basic, identity-token refresh), bounded retries with backoff
for transient failures, bounded reads, and the mapping of every failure onto
the :class:`~ommx_experiment.errors.RemoteArtifactError` tree with a message
naming the step, the image and the host. What to push or pull, and how it is
verified and published locally, is :mod:`ommx_experiment.edges.remote`'s business.

What oras-py does for us, and why not more
------------------------------------------
We use :func:`oras.auth.utils.parse_auth_header` to read ``WWW-Authenticate``
Bearer challenges, and ``requests`` (oras-py's own HTTP layer) for the wire.
We do not go through ``oras.provider.Registry`` because, measured here
(ecosystem notes §4): its ``do_request`` retries *any* exception for 131 s, so an
unreachable host cannot fail within seconds and programming errors look like
network errors; ``upload_manifest`` re-serialises the manifest (changing the
digest) and ``get_manifest`` returns a dict; ``put_upload`` reads whole blobs into
memory; ``download_blob`` verifies nothing; its credential lookup ignores
``$DOCKER_CONFIG`` and crashes on basic-auth registries with the default backend;
token requests carry no timeout; ``oras.container.Container`` validates nothing
and mis-splits repositories whose first path component contains a dot. Names are
therefore parsed by :mod:`ommx_experiment.engine.names` (OMMX-identical) and credentials
come from :mod:`ommx_experiment.edges.auth`.

The direct path
---------------
For a plain-HTTP loopback registry with no proxy applying, requests go over one keep-alive
:class:`http.client.HTTPConnection` per client (:class:`_Direct`; every transfer worker has
its own fork): ``requests`` costs about as much client CPU per request as the loopback
registry spends serving it, and a 2,000-blob transfer is 2,000-4,000 requests. Answers it
does not handle itself (a ``401`` challenge, a ``3xx`` redirect) send the request again
through ``requests``, which answers them as before; retries, timeouts and error messages
are the same on both paths (spec/remote.md §3).
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin, urlsplit

from .. import media_types as mt
from ..engine.oci import MAX_MANIFEST_BYTES
from ..errors import (
    InvalidRemoteArtifactError,
    RemoteArtifactAuthenticationError,
    RemoteArtifactAuthorizationError,
    RemoteArtifactError,
    RemoteArtifactNotFoundError,
    RemoteArtifactTransportError,
)
from .auth import Credentials, docker_config_path, resolve_credentials

if TYPE_CHECKING:
    from typing import TypeAlias

    import requests

    from ..engine.names import ImageName
    from .progress import Advance

__all__ = ["RegistryClient", "is_plain_http_host", "registry_base_url"]

_Response: TypeAlias = "requests.Response | _DirectResponse"

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 120.0
MAX_RETRIES = 2
BACKOFF_SECONDS = (0.25, 0.75)
CHUNK = 1 << 20
MAX_ERROR_BODY = 64 << 10
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
MANIFEST_ACCEPT = f"{mt.OCI_MANIFEST}, {mt.OCI_INDEX};q=0.5"
# Content types that are certainly not an OCI image manifest (others are judged by the body).
_NOT_OCI_MANIFEST = frozenset({
    mt.OCI_INDEX,
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
})
_UNSET: Any = object()



def is_plain_http_host(host: str) -> bool:
    """True for ``localhost``, ``127.0.0.0/8`` and ``[::1]`` (with any port): plain HTTP, as OMMX."""
    if host.startswith("["):
        hostname = host[1 : host.find("]")]
    else:
        hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def registry_base_url(domain: str) -> str:
    """``scheme://api-host`` for an image-name domain (``docker.io`` → ``registry-1.docker.io``)."""
    api_host = "registry-1.docker.io" if domain == "docker.io" else domain
    return f"{'http' if is_plain_http_host(domain) else 'https'}://{api_host}"


class RegistryClient:
    """One session on one repository: authentication, bounded retries, error mapping.

    ``credentials`` defaults to :func:`ommx_experiment.edges.auth.resolve_credentials` for
    the image's host, looked up on the first ``401``. Use as a context manager.
    """

    def __init__(self, image: ImageName, *, credentials: Credentials | None = _UNSET) -> None:
        self.image = image
        self.host = image.domain
        self.repo_url = f"{registry_base_url(image.domain)}/v2/{image.path}"
        self._credentials = credentials
        self._authorization: str | None = None
        self._requests: requests.Session | None = None
        self._direct = _Direct(image.domain) if _direct_applies(image.domain, self.repo_url) else None

    @property
    def _session(self) -> requests.Session:
        """The ``requests`` session, made (and ``requests`` imported, ~0.3 s) on first use: a
        transfer on the direct path may never need it."""
        if self._requests is None:
            import requests

            session = requests.Session()
            session.auth = _keep_headers  # never let ~/.netrc replace our Authorization header
            _read_environment_once(session, self.repo_url)
            self._requests = session
        return self._requests

    def fork(self) -> RegistryClient:
        """A client for another thread (requests sessions are not thread-safe) that starts with
        this client's credentials and token, so parallel transfers authenticate once."""
        other = RegistryClient(self.image, credentials=self._credentials)
        other._authorization = self._authorization
        return other

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._requests is not None:
            self._requests.close()
        if self._direct is not None:
            self._direct.close()

    def __repr__(self) -> str:
        return f"RegistryClient(image={str(self.image)!r})"

    # --- operations ------------------------------------------------------------------

    def blob_exists(self, digest: str) -> bool:
        """``HEAD`` the blob: True on 200, False on 404."""
        resp = self._send("HEAD", f"{self.repo_url}/blobs/{digest}", ok=(200, 404), step=f"check blob {digest}")
        resp.close()
        return resp.status_code == 200

    def upload_blob(self, digest: str, size: int, chunks: Callable[[], Iterable[bytes]]) -> None:
        """Upload one blob: ``POST`` an upload session, then one streaming ``PUT ?digest=``."""
        step = f"upload blob {digest}"
        start = self._send("POST", f"{self.repo_url}/blobs/uploads/", ok=(202,), step=step)
        start.close()
        location = start.headers.get("Location")
        if not location:
            raise RemoteArtifactError(f"Registry {self.host} gave no upload Location for {step} of {self.image}")
        url = urljoin(start.url, location)
        url += ("&" if "?" in url else "?") + "digest=" + quote(digest, safe="")
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        body: Callable[[], Any] = (lambda: b"") if size == 0 else (lambda: _SizedBody(chunks(), size))
        self._send("PUT", url, ok=(201,), step=step, headers=headers, body=body, retries=0).close()

    def put_manifest(self, reference: str, data: bytes) -> str | None:
        """``PUT`` manifest bytes verbatim; returns ``Docker-Content-Digest`` if sent."""
        resp = self._send(
            "PUT",
            f"{self.repo_url}/manifests/{reference}",
            ok=(200, 201),
            step=f"put manifest {reference}",
            headers={"Content-Type": mt.OCI_MANIFEST},
            body=lambda: data,
        )
        resp.close()
        return resp.headers.get("Docker-Content-Digest")

    def get_manifest(self, reference: str) -> tuple[bytes, str | None]:
        """The manifest bytes (at most 4 MiB) and the ``Docker-Content-Digest`` header."""
        step = f"get manifest {reference}"
        resp = self._send(
            "GET", f"{self.repo_url}/manifests/{reference}", ok=(200,), step=step, headers={"Accept": MANIFEST_ACCEPT},
            stream=True,
        )
        with resp:
            media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
            if media_type in _NOT_OCI_MANIFEST:
                raise InvalidRemoteArtifactError(
                    f"{self.image} on {self.host} is a {media_type}, not an OCI image manifest of an OMMX artifact"
                )
            data = b"".join(self._read(resp, MAX_MANIFEST_BYTES, step))
        return data, resp.headers.get("Docker-Content-Digest")

    def blob_chunks(self, digest: str, size: int, advance: Advance) -> Iterator[bytes]:
        """Stream a blob (unverified: the caller hashes); transport failures → TransportError."""
        step = f"download blob {digest}"
        resp = self._send("GET", f"{self.repo_url}/blobs/{digest}", ok=(200,), step=step, stream=True)
        with resp:
            for chunk in self._read(resp, size, step):
                advance(len(chunk))
                yield chunk

    # --- transport ---------------------------------------------------------------------

    def _read(self, resp: _Response, limit: int, step: str) -> Iterator[bytes]:
        broken: tuple[type[BaseException], ...] = (http.client.HTTPException, OSError)
        if not isinstance(resp, _DirectResponse):
            import requests

            broken = (requests.RequestException,)
        total = 0
        try:
            for chunk in resp.iter_content(CHUNK):
                total += len(chunk)
                if total > limit:
                    raise InvalidRemoteArtifactError(
                        f"{step} of {self.image} on {self.host}: more than the declared {limit} bytes"
                    )
                yield chunk
        except broken as exc:
            raise RemoteArtifactTransportError(
                f"{step} of {self.image}: connection to {self.host} broke after {total} bytes ({type(exc).__name__})"
            ) from exc

    def _send(
        self,
        method: str,
        url: str,
        *,
        ok: tuple[int, ...],
        step: str,
        headers: dict[str, str] | None = None,
        body: Callable[[], Any] | None = None,
        stream: bool = False,
        retries: int = MAX_RETRIES,
    ) -> _Response:
        attempt, authenticated = 0, False
        direct = self._direct if self._direct is not None and url.startswith(self._direct.prefix) else None
        while True:
            resp: _Response | None
            if direct is not None:
                resp = self._attempt_direct(direct, method, url, step, headers, body, attempt, retries)
            else:
                resp = self._attempt(method, url, step, headers, body, stream, attempt, retries)
            if resp is None:
                attempt += 1
                continue
            if direct is not None and (resp.status_code == 401 or 300 <= resp.status_code < 400):
                resp.close()  # challenges and redirects are requests' business: send it again there
                direct = None
                continue
            if resp.status_code == 401 and not authenticated:
                resp.close()
                self._authenticate(resp, step)
                authenticated = True
                continue
            if resp.status_code in TRANSIENT_STATUS and attempt < retries:
                resp.close()
                _backoff(attempt)
                attempt += 1
                continue
            if resp.status_code in ok:
                return resp
            raise self._error(resp, step)

    def _with_authorization(self, headers: dict[str, str] | None) -> dict[str, str]:
        """A copy of ``headers`` carrying the token or basic credentials earned so far."""
        sent = dict(headers or {})
        if self._authorization is not None:
            sent["Authorization"] = self._authorization
        return sent

    def _attempt(
        self,
        method: str,
        url: str,
        step: str,
        headers: dict[str, str] | None,
        body: Callable[[], Any] | None,
        stream: bool,
        attempt: int,
        retries: int,
    ) -> requests.Response | None:
        """One request; None means "retry after a transient connection failure"."""
        import requests

        sent = self._with_authorization(headers)
        try:
            return self._session.request(
                method, url, headers=sent, data=body() if body else None, stream=stream,
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            )
        except requests.ConnectTimeout as exc:  # the host already had CONNECT_TIMEOUT seconds: no retry
            raise RemoteArtifactTransportError(
                f"{step} of {self.image}: registry {self.host} did not accept a connection within {CONNECT_TIMEOUT} s"
            ) from exc
        except requests.TooManyRedirects as exc:  # a loop, not an unreachable host: no retry
            raise RemoteArtifactTransportError(
                f"{step} of {self.image}: registry {self.host} sent too many redirects: {_describe(exc)}"
            ) from exc
        except requests.RequestException as exc:
            if attempt < retries and isinstance(exc, (requests.ConnectionError, requests.Timeout)):
                log.debug("%s of %s: transient %s, retrying", step, self.image, type(exc).__name__)
                _backoff(attempt)
                return None
            raise RemoteArtifactTransportError(
                f"{step} of {self.image}: cannot reach registry {self.host} "
                f"after {attempt + 1} attempt(s): {_describe(exc)}"
            ) from exc

    def _attempt_direct(
        self,
        direct: _Direct,
        method: str,
        url: str,
        step: str,
        headers: dict[str, str] | None,
        body: Callable[[], Any] | None,
        attempt: int,
        retries: int,
    ) -> _DirectResponse | None:
        """:meth:`_attempt` over the keep-alive connection: the same retries and messages."""
        sent = self._with_authorization(headers)
        try:
            return direct.request(method, url, sent, body)
        except _ConnectTimeoutError as exc:
            raise RemoteArtifactTransportError(
                f"{step} of {self.image}: registry {self.host} did not accept a connection within {CONNECT_TIMEOUT} s"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            if attempt < retries:
                log.debug("%s of %s: transient %s, retrying", step, self.image, type(exc).__name__)
                _backoff(attempt)
                return None
            raise RemoteArtifactTransportError(
                f"{step} of {self.image}: cannot reach registry {self.host} "
                f"after {attempt + 1} attempt(s): {_describe(exc)}"
            ) from exc

    def _authenticate(self, challenge_resp: _Response, step: str) -> None:
        challenge = challenge_resp.headers.get("WWW-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        creds = self._creds()
        if scheme == "bearer":
            self._authorization = "Bearer " + self._fetch_token(challenge, creds, step)
        elif scheme == "basic" and creds is not None and not creds.identity_token:
            self._authorization = creds.basic_header()
        else:
            raise self._auth_error(step, creds)

    def _fetch_token(self, challenge: str, creds: Credentials | None, step: str) -> str:
        import requests
        from oras.auth.utils import parse_auth_header

        parsed = parse_auth_header(challenge)
        if not parsed.realm:
            raise RemoteArtifactAuthenticationError(f"Registry {self.host} sent a Bearer challenge without a realm")
        params = {k: v for k, v in (("service", parsed.service), ("scope", parsed.scope)) if v}
        realm_host = urlsplit(parsed.realm).netloc
        timeout = (CONNECT_TIMEOUT, READ_TIMEOUT)
        try:
            if creds is not None and creds.identity_token:
                form = {**params, "grant_type": "refresh_token", "refresh_token": creds.password,
                        "client_id": "ommx-experiment"}
                resp = self._session.post(parsed.realm, data=form, timeout=timeout)
            else:
                headers = {"Authorization": creds.basic_header()} if creds is not None else {}
                resp = self._session.get(parsed.realm, params=params, headers=headers, timeout=timeout)
        except requests.RequestException as exc:
            raise RemoteArtifactTransportError(
                f"{step} of {self.image}: token server {realm_host} unreachable: {_describe(exc)}"
            ) from exc
        with resp:
            if resp.status_code in (401, 403):
                raise self._auth_error(step, creds, where=f"token server {realm_host}")
            if resp.status_code != 200:
                raise RemoteArtifactAuthenticationError(
                    f"{step} of {self.image}: token server {realm_host} answered HTTP {resp.status_code}"
                )
            try:
                info = resp.json()
                token = info.get("token") or info.get("access_token")
            except (ValueError, AttributeError):
                token = None
        if not isinstance(token, str) or not token:
            raise RemoteArtifactAuthenticationError(f"Token server {realm_host} returned no token for {self.image}")
        return token

    def _creds(self) -> Credentials | None:
        if self._credentials is _UNSET:
            self._credentials = resolve_credentials(self.host)
        return self._credentials

    def _auth_error(self, step: str, creds: Credentials | None, where: str | None = None) -> RemoteArtifactError:
        where = where or f"registry {self.host}"
        if creds is None:
            return RemoteArtifactAuthenticationError(
                f"{step} of {self.image}: {where} requires authentication and no credentials were found "
                f"(set OMMX_BASIC_AUTH_DOMAIN/USERNAME/PASSWORD or log in via {docker_config_path()})"
            )
        return RemoteArtifactAuthenticationError(
            f"{step} of {self.image}: {where} rejected the credentials of user {creds.username!r} "
            f"from {creds.source}"
        )

    def _error(self, resp: _Response, step: str) -> RemoteArtifactError:
        status, codes = resp.status_code, _error_codes(resp)
        resp.close()
        detail = f"HTTP {status}" + (f" {codes}" if codes else "")
        if status == 404:
            return RemoteArtifactNotFoundError(f"{step} of {self.image}: not found on {self.host} ({detail})")
        if status == 401:
            return self._auth_error(step, self._creds())
        if status == 403:
            return RemoteArtifactAuthorizationError(
                f"{step} of {self.image}: registry {self.host} denied access ({detail})"
            )
        if status >= 500 or status == 429:
            return RemoteArtifactTransportError(
                f"{step} of {self.image}: registry {self.host} failed after retries ({detail})"
            )
        return RemoteArtifactError(f"{step} of {self.image}: registry {self.host} refused ({detail})")


class _SizedBody:
    """An iterable request body with a known length: requests sends ``Content-Length``,
    urllib3 sends each chunk as it comes (no whole-blob buffering)."""

    def __init__(self, chunks: Iterable[bytes], size: int) -> None:
        self._chunks = chunks
        self._size = size

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)


def _direct_applies(domain: str, url: str) -> bool:
    """True for a plain-HTTP loopback registry that no proxy serves, judged as ``requests``
    judges it (the proxy variables, ``NO_PROXY`` and its loopback rules)."""
    if not is_plain_http_host(domain):
        return False
    from urllib.request import getproxies

    if not getproxies():  # no proxy variable at all (requests would not even look at NO_PROXY)
        return True
    from requests.utils import get_environ_proxies, select_proxy

    return select_proxy(url, get_environ_proxies(url)) is None


class _ConnectTimeoutError(Exception):
    """The registry did not accept a connection within :data:`CONNECT_TIMEOUT` (not retried)."""


class _Connection(http.client.HTTPConnection):
    """An ``HTTPConnection`` with our connect timeout (5 s) and read timeout (120 s)."""

    def connect(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), CONNECT_TIMEOUT)
        except TimeoutError as exc:
            raise _ConnectTimeoutError(f"{self.host}:{self.port}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(READ_TIMEOUT)
        self.sock = sock


class _Direct:
    """One keep-alive connection to a plain-HTTP loopback registry (one per client, so one per
    transfer worker). A connection the server closed while it was idle fails the next request
    before any byte of an answer; that request is sent once more on a new connection."""

    def __init__(self, netloc: str) -> None:
        self.prefix = f"http://{netloc}/"
        self._conn = _Connection(netloc)
        self._open: _DirectResponse | None = None  # the answer not yet closed, if any

    def request(
        self, method: str, url: str, headers: dict[str, str], body: Callable[[], Any] | None
    ) -> _DirectResponse:
        target = url[len(self.prefix) - 1 :]
        if self._open is not None:  # an answer left unclosed: its rest would be read as the next answer
            self.drop()
        resent = False
        while True:
            reused = self._conn.sock is not None
            try:
                self._conn.request(method, target, body() if body is not None else None, headers)
                resp = self._conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.drop()
                if resent or not reused:
                    raise
                log.debug("%s %s: the idle connection was closed (%s); sending again", method, url, type(exc).__name__)
                resent = True
                continue
            except BaseException:
                self.drop()
                raise
            self._open = _DirectResponse(resp, url, self)
            return self._open

    def drop(self) -> None:
        """Close the connection (the next request opens a new one)."""
        self._open = None
        self._conn.close()

    def close(self) -> None:
        self.drop()


class _DirectResponse:
    """An answer on the direct path, with the parts of ``requests.Response`` that we use."""

    def __init__(self, resp: http.client.HTTPResponse, url: str, owner: _Direct) -> None:
        self._resp = resp
        self._owner = owner
        self.status_code = resp.status
        self.headers = resp.msg
        self.url = url

    def __enter__(self) -> _DirectResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def iter_content(self, size: int) -> Iterator[bytes]:
        """The body in pieces of at most ``size`` bytes; fewer bytes than ``Content-Length``
        raise ``http.client.IncompleteRead`` (``http.client`` itself would end quietly)."""
        resp = self._resp
        while chunk := resp.read(size):
            yield chunk
        if resp.length:
            raise http.client.IncompleteRead(b"", resp.length)

    def read_at_most(self, size: int) -> bytes:
        return self._resp.read(size)

    def close(self) -> None:
        """Release the connection for the next request: kept when the body was read to its
        end, closed otherwise (never a wait for the rest of a body nobody wants)."""
        resp, owner = self._resp, self._owner
        if owner._open is self:
            owner._open = None
            if not (resp.length == 0 or (resp.length is None and resp.isclosed())):  # bytes left unread
                owner.drop()
        resp.close()


def _read_environment_once(session: requests.Session, url: str) -> None:
    """Without proxy variables in the environment, take the CA bundle setting
    (``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``) now and stop ``requests`` from reading the
    environment again on every request (a scan of ``os.environ`` each: a third of its cost
    per request on a 2,000-blob transfer). With proxies configured every request still
    resolves them, ``NO_PROXY`` and redirects included, exactly as ``requests`` does."""
    from urllib.request import getproxies

    if getproxies():
        return
    session.verify = session.merge_environment_settings(url, {}, None, None, None)["verify"]
    session.trust_env = False


def _keep_headers(request: Any) -> Any:
    return request


def _backoff(attempt: int) -> None:
    time.sleep(BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)])


def _describe(exc: BaseException) -> str:
    # requests' messages name host, port and path; they never contain headers.
    text = str(exc)
    return f"{type(exc).__name__}: {text[:300]}"


def _error_codes(resp: _Response) -> str:
    """``CODE: message`` pairs from an OCI error body (bounded read), or ''."""
    import json

    try:
        if isinstance(resp, _DirectResponse):
            raw = resp.read_at_most(MAX_ERROR_BODY)
        elif getattr(resp, "_content_consumed", False) or resp.raw is None:
            raw = (resp.content or b"")[:MAX_ERROR_BODY]
        else:
            raw = resp.raw.read(MAX_ERROR_BODY, decode_content=True)
        errors = json.loads(raw).get("errors", [])
        parts = [f"{e.get('code', '?')}: {str(e.get('message', ''))[:200]}" for e in errors[:5] if isinstance(e, dict)]
    except Exception:  # noqa: BLE001 -- an unreadable error body must not hide the status
        return ""
    return "; ".join(parts)
