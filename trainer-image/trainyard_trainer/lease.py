"""The job's Lease, from inside a worker: one HTTPS request per call with the pod's own
ServiceAccount token, no Kubernetes client library.

The operator creates the Lease ``<job>-progress`` and grants the pod's ServiceAccount ``get`` and
``patch`` on that one object (a Role with ``resourceNames``). Rank 0 renews it with its progress
(:mod:`trainyard_trainer.progress`); worker 0's launcher notes its start; the other workers'
launchers read worker 0's pod IP from it while their DNS cannot resolve worker 0 yet. Each writer
owns one annotation, and a JSON merge patch changes only the keys it names: no read-modify-write,
no conflict with the operator's own writes.

The local runtime has no apiserver: ``TRAINYARD_PROGRESS_DIR`` names a directory that stands in for
the Lease, one file per annotation (``progress.json``, ``launcher.json``), each replaced atomically.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import ssl
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from .contract import ENV_PROGRESS_DIR, ENV_PROGRESS_LEASE, LOCAL_LEASE_FILES

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Another directory with `token` and `ca.crt` (tests, or a token mounted elsewhere).
ENV_SERVICE_ACCOUNT_DIR = "TRAINYARD_SERVICE_ACCOUNT_DIR"
REQUEST_TIMEOUT_SECONDS = 5.0


# How long a worker treats the Lease as not made yet (404, or 403 before its RoleBinding): the
# operator makes it once worker 0 has its pod IP, which is about when the trainers start.
LEASE_WAIT_SECONDS = 60.0


class LeaseError(Exception):
    """A request to the Lease failed; the message says how (the apiserver's own words when it answered)
    and ``status`` the HTTP status, if the apiserver answered."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def not_made_yet(self) -> bool:
        """The Lease, or the RoleBinding that lets this pod read it, is not there (yet)."""
        return self.status in (403, 404)


def micro_time(t: float | None = None) -> str:
    """A Kubernetes MicroTime (RFC 3339, microseconds, UTC): ``2026-01-01T12:00:00.123456Z``."""
    when = datetime.fromtimestamp(time.time() if t is None else t, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseClient:
    """``get`` and ``patch`` of one Lease through the apiserver at ``server`` (``https://host:port``)."""

    def __init__(self, namespace: str, name: str, server: str, *, token_file: str, ca_file: str | None,
                 timeout: float = REQUEST_TIMEOUT_SECONDS):
        self.namespace, self.name = namespace, name
        self.token_file, self.ca_file, self.timeout = token_file, ca_file, timeout
        url = urlsplit(server)
        if url.scheme != "https" or not url.hostname:
            raise ValueError(f"the apiserver must be https://host[:port], not {server!r}")
        self.host, self.port = url.hostname, url.port or 443
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self._conn: http.client.HTTPSConnection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LeaseClient({self.namespace}/{self.name} at {self.host}:{self.port})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LeaseClient | None:
        """The pod's Lease client (``TRAINYARD_PROGRESS_LEASE=<namespace>/<name>``, the apiserver from
        ``KUBERNETES_SERVICE_HOST``/``_PORT``, the ServiceAccount's token and CA), or None."""
        env = os.environ if env is None else env
        ref = env.get(ENV_PROGRESS_LEASE) or ""
        namespace, _, name = ref.partition("/")
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT") or "443"
        if not (namespace and name and host):
            return None
        sa = Path(env.get(ENV_SERVICE_ACCOUNT_DIR) or SERVICE_ACCOUNT_DIR)
        ca = sa / "ca.crt"
        server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        return cls(namespace, name, server, token_file=str(sa / "token"), ca_file=str(ca) if ca.exists() else None)

    # -- requests
    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=ctx)
        return self._conn

    def _request(self, method: str, body: bytes | None = None, content_type: str = "application/json") -> dict:
        try:
            token = Path(self.token_file).read_text().strip()  # re-read: projected tokens are rotated
        except OSError as e:
            raise LeaseError(f"no ServiceAccount token: {e}") from None
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
                   "User-Agent": "trainyard-trainer"}
        if body is not None:
            headers["Content-Type"] = content_type
        with self._lock:
            for retry in (True, False):  # a kept-alive connection the server closed: once more, anew
                conn = self._connection()
                try:
                    conn.request(method, self.path + "?fieldManager=trainyard-trainer" if body else self.path, body,
                                 headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    break
                except (OSError, http.client.HTTPException) as e:
                    with contextlib.suppress(Exception):
                        conn.close()
                    self._conn = None
                    if not retry or isinstance(e, TimeoutError | ssl.SSLError):
                        raise LeaseError(f"{method} {self.path}: {type(e).__name__}: {e}") from None
        if not 200 <= resp.status < 300:
            try:
                message = json.loads(data)["message"]
            except (ValueError, KeyError, TypeError):
                message = data[:200].decode(errors="replace")
            raise LeaseError(f"{method} {self.path}: {resp.status} {resp.reason}: {message}", resp.status)
        try:
            return json.loads(data)
        except ValueError:
            return {}

    def get(self) -> dict:
        return self._request("GET")

    def annotations(self) -> dict[str, str]:
        return dict((self.get().get("metadata") or {}).get("annotations") or {})

    def patch(self, annotations: Mapping[str, str], *, holder: str | None = None, renew: bool = False) -> dict:
        """Sets these annotations (a JSON merge patch: other keys stay as they are); with ``renew``,
        also ``spec.renewTime`` (now) and ``spec.holderIdentity``, as a lease holder renews."""
        body: dict = {"metadata": {"annotations": dict(annotations)}}
        if renew:
            body["spec"] = {"renewTime": micro_time(), **({"holderIdentity": holder} if holder else {})}
        return self._request("PATCH", json.dumps(body).encode(), "application/merge-patch+json")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None


class LeaseDir:
    """The local runtime's stand-in for the Lease: one file per annotation, replaced atomically."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"LeaseDir({self.directory})"

    def annotations(self) -> dict[str, str]:
        out = {}
        for key, file in LOCAL_LEASE_FILES.items():
            with contextlib.suppress(OSError):
                out[key] = (self.directory / file).read_text()
        return out

    def patch(self, annotations: Mapping[str, str], *, holder: str | None = None, renew: bool = False) -> dict:
        self.directory.mkdir(parents=True, exist_ok=True)
        for key, value in annotations.items():
            file = LOCAL_LEASE_FILES.get(key)
            if file is None:
                continue
            path = self.directory / file
            tmp = path.with_name(f".{file}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                tmp.write_text(value)
                os.replace(tmp, path)
            except OSError as e:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise LeaseError(f"writing {path}: {e}") from None
        return {}

    def close(self) -> None:
        pass


def lease_from_env(env: Mapping[str, str] | None = None) -> LeaseClient | LeaseDir | None:
    """The Lease this worker reports to: the pod's (TRAINYARD_PROGRESS_LEASE), the local stand-in
    (TRAINYARD_PROGRESS_DIR), or None when the operator gave neither."""
    env = os.environ if env is None else env
    if env.get(ENV_PROGRESS_DIR):
        return LeaseDir(env[ENV_PROGRESS_DIR])
    return LeaseClient.from_env(env)
