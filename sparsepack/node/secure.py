"""A secured local node: the OpenSearch security plugin with TLS on HTTP and transport, certificates from a private CA
generated here (openssl, nothing fetched), internal users with generated passwords and the least-privilege role
``sparsepack-release``.

The security index is initialised offline from the YAML files written here (``allow_default_init_securityindex``),
so no securityadmin run is needed. The YAML files are written as JSON (a subset of YAML).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path

from ..errors import LocalEnvironmentError, SparsepackError

CREDENTIALS_FILE = "credentials.json"
TLS_DIR = "tls"
ADMIN_USER = "admin"
RELEASE_USER = "sparsepack-release"
RELEASE_ROLE = "sparsepack-release"
# Backend role of the release user: the one ``release --access-mode restricted --backend-roles`` names by default.
RELEASE_BACKEND_ROLE = "sparsepack-release"

NODE_DN = "CN=sparsepack-node,OU=node,O=sparsepack"
ADMIN_DN = "CN=sparsepack-admin,OU=admin,O=sparsepack"
CA_SUBJECT = "/O=sparsepack/CN=sparsepack local CA"

# ML Commons' indices, protected the way the plugin's demo configuration does: only the admin certificate reads them
# directly; users go through the ML APIs.
ML_SYSTEM_INDICES = [
    ".plugins-ml-config",
    ".plugins-ml-connector",
    ".plugins-ml-model-group",
    ".plugins-ml-model",
    ".plugins-ml-task",
    ".plugins-ml-controller",
    ".plugins-ml-agent",
    ".plugins-ml-memory-meta",
    ".plugins-ml-memory-message",
    ".plugins-ml-conversation-meta",
    ".plugins-ml-conversation-interactions",
    ".plugins-ml-stop-words",
    ".opendistro-job-scheduler-lock",
]

# What `sparsepack release` needs, found by testing on the secured node: scripts/secure_role_check.py removes each
# permission in turn and runs a full release. Every one below fails a release without it, except those marked
# (rollback) or (upgrades): they serve a failed run's rollback, --clear-previous, undeploy/delete, a finished lease's
# reuse, and the release of a new version into a group that holds others (tests/test_secure.py runs those paths).
# Printed in docs/secured-clusters.md ready for roles.yml.
RELEASE_CLUSTER_PERMISSIONS = [
    "cluster:monitor/main",  # the version
    "cluster:monitor/nodes/info",  # preflight: plugins and ML nodes
    "cluster:monitor/nodes/stats",  # preflight: memory thresholds
    "cluster:monitor/state",  # preflight: cluster settings
    "cluster:admin/opensearch/ml/model_groups/search",
    "cluster:admin/opensearch/ml/register_model_group",
    "cluster:admin/opensearch/ml/model_groups/get",  # (rollback) a finished group lease is reused if the group exists
    "cluster:admin/opensearch/ml/model_groups/delete",  # (rollback) a group this run created
    "cluster:admin/opensearch/ml/models/get",
    "cluster:admin/opensearch/ml/models/search",
    "cluster:admin/opensearch/ml/register_model_meta",
    "cluster:admin/opensearch/ml/upload_model_chunk",
    "cluster:admin/opensearch/ml/deploy_model",
    "cluster:admin/opensearch/ml/deploy_model_on_nodes",  # the deploy task fans out in the caller's name
    "cluster:admin/opensearch/ml/undeploy_model",  # (rollback) --clear-previous, undeploy
    "cluster:admin/opensearch/ml/undeploy_models",  # (rollback) the REST _undeploy action
    "cluster:admin/opensearch/ml/models/delete",  # (rollback) --clear-previous, delete
    "cluster:admin/opensearch/ml/tasks/get",
    "cluster:admin/opensearch/ml/tasks/search",  # where a model was last deployed: names a lost node
    "cluster:admin/opensearch/ml/predict",
    "cluster:admin/opensearch/ml/profile/nodes",  # preflight: free model slots per node
    "indices:data/write/bulk",  # a single-document write runs as a bulk: checked cluster-wide
    "cluster:admin/ingest/pipeline/get",  # (upgrades) which pipelines use a previous version
    "cluster:admin/search/pipeline/get",
    "cluster:admin/ingest/pipeline/put",  # the smoke test's temporary pipelines
    "cluster:admin/ingest/pipeline/delete",
    "cluster:admin/search/pipeline/put",
    "cluster:admin/search/pipeline/delete",
    "cluster:admin/ingest/pipeline/simulate",  # --switch-pipelines: a switched ingest pipeline is simulated
]
# The smoke test's temporary indices (sparsepack-smoke-*) and the lease index (sparsepack-leases).
RELEASE_INDEX_PERMISSIONS = [
    {
        "index_patterns": ["sparsepack-*"],
        "allowed_actions": [
            "indices:admin/create",
            "indices:admin/delete",
            "indices:admin/refresh*",
            "indices:data/read/get",
            "indices:data/read/search",
            "indices:data/write/index",
            "indices:data/write/bulk*",
            "indices:data/write/delete",
        ],
    },  # (rollback) a failed run frees its leases at once
    # (upgrades) read-only: every index's default/final pipeline settings and the models its mapping names
    # (semantic fields, _meta provenance), so no version an index uses is removed
    {"index_patterns": ["*"], "allowed_actions": ["indices:monitor/settings/get", "indices:admin/mappings/get"]},
]


def release_role() -> dict:
    return {"cluster_permissions": list(RELEASE_CLUSTER_PERMISSIONS), "index_permissions": RELEASE_INDEX_PERMISSIONS}


@dataclass(frozen=True)
class Access:
    """How the node module itself talks to a secured node (health checks, settings): admin over verified TLS."""

    ca_certs: str
    username: str
    password: str

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_certs)

    def headers(self) -> dict[str, str]:
        token = b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


def credentials_path(cdir: Path) -> Path:
    return cdir / CREDENTIALS_FILE


def load_credentials(cdir: Path) -> dict | None:
    path = credentials_path(cdir)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def node_access(cdir: Path) -> Access | None:
    creds = load_credentials(cdir)
    if creds is None:
        return None
    return Access(creds["ca_certs"], ADMIN_USER, creds["users"][ADMIN_USER])


def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise LocalEnvironmentError(
            "node start --secure needs the openssl command to generate certificates; apt-get install openssl"
        )
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LocalEnvironmentError(f"openssl {args[0]} failed: {proc.stderr.strip().splitlines()[-1:]}")


_LEAF_EXT = """basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
"""


def _leaf(tls: Path, name: str, subject: str, san: str | None) -> None:
    """``name``.pem / ``name``-key.pem (PKCS#8, as the plugin requires) signed by the CA."""
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", f"{name}-key.pem", cwd=tls)
    _openssl("req", "-new", "-key", f"{name}-key.pem", "-subj", subject, "-out", f"{name}.csr", cwd=tls)
    (tls / f"{name}.ext").write_text(_LEAF_EXT + (f"subjectAltName={san}\n" if san else ""))
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "825",
        "-sha256",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.pem",
        cwd=tls,
    )
    (tls / f"{name}.csr").unlink()
    (tls / f"{name}.ext").unlink()


def generate_tls(tls: Path) -> None:
    """A private CA, the node certificate (127.0.0.1/localhost, server + client auth for transport), the admin
    certificate and a client certificate for the release user; written to a temp dir, then renamed."""
    tls.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tls-", dir=tls.parent))
    try:
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "ca-key.pem", cwd=work)
        _openssl(
            "req",
            "-x509",
            "-new",
            "-key",
            "ca-key.pem",
            "-sha256",
            "-days",
            "3650",
            "-subj",
            CA_SUBJECT,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "ca.pem",
            cwd=work,
        )
        _leaf(work, "node", "/O=sparsepack/OU=node/CN=sparsepack-node", "IP:127.0.0.1,DNS:localhost")
        _leaf(work, "admin", "/O=sparsepack/OU=admin/CN=sparsepack-admin", None)
        _leaf(work, RELEASE_USER, f"/O=sparsepack/OU=client/CN={RELEASE_USER}", None)
        for key in work.glob("*key.pem"):
            key.chmod(0o600)
        shutil.rmtree(tls, ignore_errors=True)
        work.rename(tls)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _hash(password: str) -> str:
    try:
        import bcrypt
    except ImportError as exc:
        raise SparsepackError(
            "node start --secure needs the bcrypt package to hash passwords: pip install bcrypt"
        ) from exc
    # $2b$ and $2y$ are the same algorithm; the plugin's own hash tool writes $2y$.
    return "$2y$" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(12)).decode()[4:]


def prepare(cdir: Path, url: str, reuse: bool) -> dict:
    """Certificates and credentials of the cluster folder: kept when the cluster's data is kept (its security index
    holds those passwords), generated otherwise. Writes the 0600 credentials file."""
    tls = cdir / TLS_DIR
    creds = load_credentials(cdir) if reuse else None
    if creds is None or not (tls / "ca.pem").exists():
        generate_tls(tls)
        creds = {
            "url": url,
            "ca_certs": str(tls / "ca.pem"),
            "users": {ADMIN_USER: secrets.token_urlsafe(24), RELEASE_USER: secrets.token_urlsafe(24)},
        }
    path = credentials_path(cdir)
    fd, tmp = tempfile.mkstemp(dir=cdir, prefix=".credentials-")
    with os.fdopen(fd, "w") as out:  # mkstemp creates it 0600
        json.dump(creds, out, indent=2)
    os.replace(tmp, path)
    return creds


def _security_files(creds: dict) -> dict[str, dict]:
    meta = lambda kind: {"_meta": {"type": kind, "config_version": 2}}  # noqa: E731
    return {
        "internal_users.yml": {
            **meta("internalusers"),
            ADMIN_USER: {
                "hash": _hash(creds["users"][ADMIN_USER]),
                "reserved": True,
                "backend_roles": ["admin"],
                "description": "sparsepack admin",
            },
            RELEASE_USER: {
                "hash": _hash(creds["users"][RELEASE_USER]),
                "reserved": False,
                "backend_roles": [RELEASE_BACKEND_ROLE],
                "description": "sparsepack release (least privilege)",
            },
        },
        "roles.yml": {**meta("roles"), RELEASE_ROLE: {"reserved": False, **release_role()}},
        "roles_mapping.yml": {
            **meta("rolesmapping"),
            "all_access": {"reserved": False, "backend_roles": ["admin"], "users": [ADMIN_USER]},
            RELEASE_ROLE: {"reserved": False, "users": [RELEASE_USER]},
        },
        "config.yml": {
            **meta("config"),
            "config": {
                "dynamic": {
                    "http": {"anonymous_auth_enabled": False},
                    "authc": {
                        "clientcert_auth_domain": {
                            "http_enabled": True,
                            "transport_enabled": False,
                            "order": 0,
                            "http_authenticator": {
                                "type": "clientcert",
                                "config": {"username_attribute": "cn"},
                                "challenge": False,
                            },
                            "authentication_backend": {"type": "noop"},
                        },
                        "basic_internal_auth_domain": {
                            "http_enabled": True,
                            "transport_enabled": True,
                            "order": 1,
                            "http_authenticator": {"type": "basic", "challenge": True},
                            "authentication_backend": {"type": "intern"},
                        },
                    },
                }
            },
        },
    }


def configure_node(conf: Path, cdir: Path, creds: dict) -> list[str]:
    """Copy the node's certificates into its config folder, write the security configuration; returns the
    opensearch.yml lines."""
    tls = cdir / TLS_DIR
    for name in ("node.pem", "node-key.pem", "ca.pem"):
        shutil.copyfile(tls / name, conf / name)
    (conf / "node-key.pem").chmod(0o600)
    secdir = conf / "opensearch-security"
    secdir.mkdir(exist_ok=True)
    for name, body in _security_files(creds).items():
        (secdir / name).write_text(json.dumps(body, indent=1) + "\n")
    indices = ", ".join(f'"{i}"' for i in ML_SYSTEM_INDICES)
    return [
        "plugins.security.ssl.transport.pemcert_filepath: node.pem",
        "plugins.security.ssl.transport.pemkey_filepath: node-key.pem",
        "plugins.security.ssl.transport.pemtrustedcas_filepath: ca.pem",
        "plugins.security.ssl.transport.enforce_hostname_verification: false",
        "plugins.security.ssl.http.enabled: true",
        "plugins.security.ssl.http.pemcert_filepath: node.pem",
        "plugins.security.ssl.http.pemkey_filepath: node-key.pem",
        "plugins.security.ssl.http.pemtrustedcas_filepath: ca.pem",
        "plugins.security.ssl.http.clientauth_mode: OPTIONAL",
        "plugins.security.allow_default_init_securityindex: true",
        f'plugins.security.authcz.admin_dn: ["{ADMIN_DN}"]',
        f'plugins.security.nodes_dn: ["{NODE_DN}"]',
        'plugins.security.restapi.roles_enabled: ["all_access"]',
        "plugins.security.system_indices.enabled: true",
        f"plugins.security.system_indices.indices: [{indices}]",
        "plugins.ml_commons.model_access_control_enabled: true",
    ]


def protect(cdir: Path) -> None:
    """After the cluster folder was handed to the service user: the CA key and the credentials stay the caller's."""
    uid, gid = os.getuid(), os.getgid()
    for path in (credentials_path(cdir), cdir / TLS_DIR / "ca-key.pem"):
        if path.exists():
            os.chown(path, uid, gid)
            path.chmod(0o600)
