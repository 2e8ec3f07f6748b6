"""An opensearch-py client from flags with environment fallbacks, and the one place HTTP calls are retried."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ClusterError, SparsepackError

RETRY_STATUSES = (429, 502, 503, 504)


@dataclass
class ConnectionOptions:
    url: str = "http://localhost:9200"
    username: str | None = None
    password: str | None = None
    api_key: str | None = None
    ca_certs: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    insecure: bool = False
    aws_region: str | None = None
    aws_service: str = "es"
    timeout: float = 60.0
    retries: int = 5

    def __post_init__(self) -> None:
        check_url(self.url)

    @classmethod
    def from_env(cls, **flags: Any) -> ConnectionOptions:
        """Flags win; else OPENSEARCH_URL, OPENSEARCH_USERNAME, OPENSEARCH_PASSWORD, OPENSEARCH_API_KEY,
        OPENSEARCH_CA_CERTS, OPENSEARCH_CLIENT_CERT, OPENSEARCH_CLIENT_KEY, AWS_REGION."""
        env = {
            "url": os.environ.get("OPENSEARCH_URL"),
            "username": os.environ.get("OPENSEARCH_USERNAME"),
            "password": os.environ.get("OPENSEARCH_PASSWORD"),
            "api_key": os.environ.get("OPENSEARCH_API_KEY"),
            "ca_certs": os.environ.get("OPENSEARCH_CA_CERTS"),
            "client_cert": os.environ.get("OPENSEARCH_CLIENT_CERT"),
            "client_key": os.environ.get("OPENSEARCH_CLIENT_KEY"),
            "aws_region": os.environ.get("AWS_REGION"),
        }
        values: dict[str, Any] = {k: v for k, v in env.items() if v}
        values.update({k: v for k, v in flags.items() if v not in (None, "")})
        return cls(**values)

    def redacted(self) -> dict:
        """What may be printed or stored: never a secret."""
        auth = (
            "api-key"
            if self.api_key
            else "basic"
            if self.username
            else f"aws-sigv4:{self.aws_service}"
            if self.aws_region
            else "client-cert"
            if self.client_cert
            else "none"
        )
        return {"url": self.url, "auth": auth, "tls_verify": not self.insecure}


def check_url(url: str) -> None:
    """Bad input, refused before any connection: a URL needs http(s)://, a host, and a port in 1-65535."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SparsepackError(f"--url {url!r} needs a scheme and a host, e.g. https://search.example.com:9200")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        raise SparsepackError(f"--url {url!r}: the port is out of range; use 1-65535")


def build_client(opts: ConnectionOptions):
    from opensearchpy import OpenSearch

    if opts.username and opts.password is None:
        raise SparsepackError("--username given without a password; pass --password or set OPENSEARCH_PASSWORD")
    if bool(opts.client_cert) != bool(opts.client_key):
        raise SparsepackError("--client-cert and --client-key go together; pass both")
    for label, path in (
        ("--ca-certs", opts.ca_certs),
        ("--client-cert", opts.client_cert),
        ("--client-key", opts.client_key),
    ):
        if path and not os.path.exists(path):
            raise SparsepackError(f"{label} {path} does not exist")
    kwargs: dict[str, Any] = {
        "hosts": [opts.url],
        "timeout": opts.timeout,
        "max_retries": 0,
        "retry_on_timeout": False,
        "verify_certs": not opts.insecure,
        "ssl_show_warn": False,
    }
    # urllib3, not requests: requests lets REQUESTS_CA_BUNDLE silently override verify=False (and a chosen CA).
    if opts.url.startswith("https"):
        kwargs["use_ssl"] = True
    if opts.ca_certs:
        kwargs["ca_certs"] = opts.ca_certs
    if opts.client_cert:
        kwargs["client_cert"], kwargs["client_key"] = opts.client_cert, opts.client_key
    if opts.api_key:
        kwargs["headers"] = {"Authorization": f"ApiKey {opts.api_key}"}
    elif opts.username:
        kwargs["http_auth"] = (opts.username, opts.password)
    elif opts.aws_region:
        kwargs["http_auth"] = _aws_auth(opts)
    return OpenSearch(**kwargs)


def _aws_auth(opts: ConnectionOptions):
    if opts.aws_service not in ("es", "aoss"):
        raise SparsepackError(f"--aws-service {opts.aws_service!r}: use es (managed domains) or aoss (serverless)")
    try:
        import boto3
        from opensearchpy import Urllib3AWSV4SignerAuth
    except ImportError as exc:
        raise SparsepackError("AWS SigV4 needs boto3: pip install 'sparsepack[aws]'") from exc
    credentials = boto3.Session().get_credentials()
    if credentials is None:
        raise SparsepackError("no AWS credentials found; configure them (aws configure, env vars or an instance role)")
    return Urllib3AWSV4SignerAuth(credentials, opts.aws_region, opts.aws_service)


class Cluster:
    """Thin wrapper: every call goes through :meth:`call` (a typed opensearch-py method; :meth:`request` for a route
    by hand uses it too), which retries transient failures with backoff and turns the server's refusal into a
    ClusterError carrying the server's own reason."""

    def __init__(self, client, opts: ConnectionOptions, sleep: Callable[[float], None] = time.sleep):
        self.client = client
        self.opts = opts
        self._sleep = sleep
        self.retried = 0

    def call(
        self, what: str, fn: Callable[..., Any], *args: Any, ok_404: bool = False, retry: bool = True, **kwargs: Any
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` (a bound opensearch-py call) under sparsepack's one policy: transient failures
        (429/502/503/504, dropped connections) retried with backoff unless ``retry=False`` (a call that must not run
        twice), a 404 read as None when ``ok_404``, any other refusal a one-line ClusterError naming ``what``."""
        from opensearchpy import exceptions as ex

        attempts = self.opts.retries + 1 if retry else 1
        for attempt in range(attempts):
            try:
                return fn(*args, **kwargs)
            except ex.TransportError as exc:
                status = exc.status_code if isinstance(exc.status_code, int) else None
                if status == 404 and ok_404:
                    return None
                transient = (
                    status in RETRY_STATUSES or isinstance(exc, ex.ConnectionError) and not isinstance(exc, ex.SSLError)
                )
                if transient and attempt + 1 < attempts:
                    self.retried += 1
                    self.backoff(attempt)
                    continue
                raise _as_cluster_error(exc, what, self.opts) from exc
        raise AssertionError("unreachable")

    @property
    def ml(self):
        """opensearch-py's typed ML Commons calls (3.0+), to run through :meth:`call`."""
        return self.client.plugins.ml

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict | None = None,
        retry: bool = True,
        ok_404: bool = False,
    ) -> Any:
        """A route by hand, where opensearch-py's typed call cannot send what is needed (one kind left):
        - ``POST /_plugins/_ml/models/{id}/_deploy`` with ``{"node_ids": [...]}``: ``ml.deploy_model`` takes no body.
        Every other call of the registry goes through :meth:`call` with a typed method."""
        return self.call(
            f"{method} {path}",
            self.client.transport.perform_request,
            method,
            path,
            body=body,
            params=params,
            ok_404=ok_404,
            retry=retry,
        )

    def backoff(self, attempt: int) -> None:
        self._sleep(min(8.0, 0.25 * 2**attempt) * (0.5 + random.random()))

    def wait_for(self, check: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
        """Poll ``check`` until it returns something truthy; ``what`` names the wait in the timeout error."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"timed out after {timeout:.0f}s waiting for {what}; raise --timeout or check the cluster logs"
                )
            self._sleep(interval)

    def info(self) -> dict:
        return self.call("GET /", self.client.info)


def _as_cluster_error(exc, what: str, opts: ConnectionOptions) -> ClusterError:
    from opensearchpy import exceptions as ex

    if isinstance(exc, ex.SSLError):
        return ClusterError(
            f"TLS handshake with {opts.url} failed ({_short(exc.info)}); pass --ca-certs for a private CA, "
            f"or --insecure to skip verification"
        )
    if isinstance(exc, ex.ConnectionError):
        return ClusterError(
            f"cannot connect to {opts.url} ({_short(exc.info)}); check --url and that the cluster is up"
        )
    status = exc.status_code if isinstance(exc.status_code, int) else None
    if status == 401:
        return ClusterError(
            f"{opts.url} refused the credentials (401); check --username/--password or --api-key", status=status
        )
    if status == 403:
        return ClusterError(
            f"{what} is forbidden for this user (403): {_reason(exc)}; grant that permission to the "
            f"user's role (docs/secured-clusters.md: the sparsepack-release role lists all a release needs)",
            status=status,
        )
    return ClusterError(f"{what} failed with HTTP {exc.status_code}: {_reason(exc)}", status=status)


def _reason(exc) -> str:
    info = exc.info
    if isinstance(info, dict):
        err = info.get("error", info)
        if isinstance(err, dict):
            root = (err.get("root_cause") or [{}])[0]
            return str(root.get("reason") or err.get("reason") or err)[:400]
        return str(err)[:400]
    return _short(info or exc.error)


def _short(value) -> str:
    text = str(value).strip().splitlines()
    return text[0][:300] if text else "no detail"


def connect(opts: ConnectionOptions) -> Cluster:
    return Cluster(build_client(opts), opts)
