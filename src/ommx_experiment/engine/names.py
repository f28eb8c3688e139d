"""Image names, parsed and canonicalised exactly as OMMX 3 does.

OMMX follows the OCI distribution reference grammar with Docker Hub
normalisation: ``alpine`` → ``docker.io/library/alpine:latest``, a missing tag
becomes ``latest``, ``registry-1.docker.io/`` and ``index.docker.io/`` are
rewritten to ``docker.io/``, uppercase repository components are invalid.
In SQLite a ref is ``name`` = ``host[:port]/repository`` and ``reference`` = the
digest if there is one, else the tag.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from ..errors import InvalidImageNameError

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_PATH_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
# OMMX 3 (oci-spec's reference parser) rejects bracketed IPv6 hosts: so do we.
_DOMAIN_RE = re.compile(rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
# OMMX accepts only these algorithms, each with its exact hex length.
_DIGEST_HEX_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}
_NAME_MAX = 255

DEFAULT_DOMAIN = "docker.io"
_DOCKER_ALIASES = ("registry-1.docker.io", "index.docker.io")
ANONYMOUS_TAG_RE = re.compile(r"[0-9]{8}T[0-9]{6}-[0-9a-f]{12}")
LOCAL_SUFFIX = ".ommx.local"


@dataclass(frozen=True, slots=True)
class ImageName:
    """A canonical image reference.

    ``repository`` (``host[:port]/path``) and ``reference`` (digest, else tag)
    are the two columns of OMMX's ``refs`` table; ``str()`` is the canonical
    string OMMX prints and stores in ``org.opencontainers.image.ref.name``.
    """

    domain: str
    path: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, value: object) -> ImageName:
        """Parse and canonicalise; ``InvalidImageNameError`` (a ValueError) if invalid."""
        if isinstance(value, ImageName):
            return value
        if not isinstance(value, str):
            raise InvalidImageNameError(f'Invalid image reference "{value!r}": not a string')
        return _parse(value)

    @classmethod
    def from_row(cls, name: str, reference: str) -> ImageName:
        """Rebuild from a ``refs`` row (``name``, ``reference``)."""
        joiner = "@" if ":" in reference else ":"
        return _parse(f"{name}{joiner}{reference}")

    @property
    def repository(self) -> str:
        """``host[:port]/path``: the ``refs.name`` column."""
        return f"{self.domain}/{self.path}"

    @property
    def reference(self) -> str:
        """The digest if present, else the tag: the ``refs.reference`` column."""
        return self.digest if self.digest is not None else (self.tag or "latest")

    @property
    def is_local(self) -> bool:
        """True for hosts ending in ``.local`` (anonymous, checkpoint): never pushed."""
        host = self.domain.rsplit(":", 1)[0] if not self.domain.startswith("[") else self.domain
        return host.endswith(".local")

    def with_tag(self, tag: str) -> ImageName:
        return _parse(f"{self.repository}:{tag}")

    def __str__(self) -> str:
        out = self.repository
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out


def _invalid(value: str, why: str) -> InvalidImageNameError:
    return InvalidImageNameError(f'Invalid image reference "{value}": {why}')


def _parse(value: str) -> ImageName:
    if not value:
        raise _invalid(value, "repository name must have at least one component")
    rest, digest = value, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST_RE.fullmatch(digest):
            raise _invalid(value, "invalid digest format")
        algorithm, hex_part = digest.split(":", 1)
        if algorithm not in _DIGEST_HEX_LEN:
            raise _invalid(value, "unsupported digest algorithm")
        if len(hex_part) != _DIGEST_HEX_LEN[algorithm]:
            raise _invalid(value, "invalid checksum digest length")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise _invalid(value, "invalid tag format")
    domain, path = _split_domain(rest)
    # The grammar's domain is optional: ``a_b.com/x`` is not a valid host but the whole
    # string is a valid path, and the split then still takes ``a_b.com`` as the host (as OMMX).
    if not _DOMAIN_RE.fullmatch(domain) and not _PATH_RE.fullmatch(f"{domain}/{path}"):
        raise _invalid(value, "invalid reference format")
    if path.lower() != path:
        raise _invalid(value, "repository name must be lowercase")
    if not _PATH_RE.fullmatch(path):
        raise _invalid(value, "invalid reference format")
    if len(path) > _NAME_MAX:  # OMMX bounds the path after normalisation, not the host
        raise _invalid(value, f"repository name must not be more than {_NAME_MAX} characters")
    if tag is None and digest is None:
        tag = "latest"
    return ImageName(domain, path, tag, digest)


def _split_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    first = name[:i] if i != -1 else ""
    if i == -1 or (not any(c in first for c in ".:") and first != "localhost" and first.lower() == first):
        domain, rest = DEFAULT_DOMAIN, name
    else:
        domain, rest = first, name[i + 1 :]
    if domain in _DOCKER_ALIASES:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in rest:
        rest = f"library/{rest}"
    return domain, rest


# --- names derived from the registry id -----------------------------------------


def _local_host(registry_id: str) -> str:
    return f"{registry_id[:8]}{LOCAL_SUFFIX}"


def _anonymous_tag(now: datetime | None = None) -> str:
    stamp = (now or datetime.now()).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:12]}"


def anonymous_experiment_name(registry_id: str) -> ImageName:
    """``<id8>.ommx.local/experiment:<YYYYMMDDTHHMMSS>-<nonce12>`` (local time, as OMMX)."""
    return ImageName(_local_host(registry_id), "experiment", _anonymous_tag(), None)


def anonymous_artifact_name(registry_id: str) -> ImageName:
    """``<id8>.ommx.local/anonymous:<YYYYMMDDTHHMMSS>-<nonce12>``."""
    return ImageName(_local_host(registry_id), "anonymous", _anonymous_tag(), None)


def checkpoint_repository(registry_id: str) -> str:
    """The repository holding this registry's checkpoint slots."""
    return f"{_local_host(registry_id)}/checkpoint"


def checkpoint_name(registry_id: str, requested: ImageName) -> ImageName:
    """``<id8>.ommx.local/checkpoint:<sha256 hex of the canonical requested name>``."""
    tag = hashlib.sha256(str(requested).encode("utf-8")).hexdigest()
    return ImageName(_local_host(registry_id), "checkpoint", tag, None)


def is_anonymous(name: ImageName, *, experiments: bool = True) -> bool:
    """Whether ``name`` has the shape of an anonymous ref (any registry prefix), as OMMX's pruning."""
    if name.tag is None or not ANONYMOUS_TAG_RE.fullmatch(name.tag):
        return False
    host_ok = re.fullmatch(r"[0-9a-f]{8}" + re.escape(LOCAL_SUFFIX), name.domain) is not None
    kinds = ("anonymous", "experiment") if experiments else ("anonymous",)
    return host_ok and name.path in kinds
