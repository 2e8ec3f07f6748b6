"""The real security plugin (OpenSearch 2.19.1, `node start --secure`): TLS, users, roles, model access control.

One secured node for the module, always stopped. Passwords go to the CLI through OPENSEARCH_PASSWORD, never argv, and
every test checks they are not printed."""

import json
import os
import secrets
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import PORT_BASE, local_cluster

from sparsepack.node import secure
from sparsepack.node.rest import http_json
from sparsepack.node.state import cluster_dir
from sparsepack.registry import models
from sparsepack.registry.connection import ConnectionOptions, connect
from sparsepack.templates import render

PORT_SECURE = PORT_BASE + 40


class Secured:
    def __init__(self, state):
        self.url = state.url
        self.cdir = cluster_dir(Path(state.home), PORT_SECURE)
        self.creds = secure.load_credentials(self.cdir)
        self.ca = self.creds["ca_certs"]
        self.admin = secure.node_access(self.cdir)

    def password(self, user=secure.RELEASE_USER):
        return self.creds["users"][user]

    def admin_call(self, method, path, body=None):
        return http_json(self.url + path, method, body, timeout=30, access=self.admin)

    def as_user(self, user, password):
        return connect(ConnectionOptions(url=self.url, username=user, password=password, ca_certs=self.ca, retries=0))

    def add_user(self, name, backend_roles, roles):
        password = secrets.token_urlsafe(18)
        self.admin_call(
            "PUT",
            f"/_plugins/_security/api/internalusers/{name}",
            {"password": password, "backend_roles": backend_roles, "opendistro_security_roles": roles},
        )
        return password

    def group_ids(self, name):
        res = self.admin_call("POST", "/_plugins/_ml/model_groups/_search", {"query": {"term": {"name.keyword": name}}})
        return [h["_id"] for h in res["hits"]["hits"]]

    def models_named_in(self, group):
        admin = connect(
            ConnectionOptions(url=self.url, username="admin", password=self.password("admin"), ca_certs=self.ca)
        )
        return [m for gid in self.group_ids(group) for m in models.models_in_group(admin, gid)]


@pytest.fixture(scope="module")
def secured():
    with local_cluster("2.19.1", PORT_SECURE, secure=True, heap="768m", timeout=480) as state:
        yield Secured(state)


def cli(*args, password=None, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENSEARCH_")}
    if password is not None:
        env["OPENSEARCH_PASSWORD"] = password
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "sparsepack.cli", *args], capture_output=True, text=True, env=env)


def assert_no_secret(proc, *secrets_):
    for s in secrets_:
        assert s not in proc.stdout + proc.stderr


def one_line_error(proc, code=4):
    assert proc.returncode == code, proc.stderr[-2000:]
    errors = [l for l in proc.stderr.splitlines() if l.startswith("sparsepack:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


def test_credentials_file_status_and_tls(secured):
    path = secure.credentials_path(secured.cdir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(secured.creds) == {"url", "ca_certs", "users"}
    assert secured.creds["url"] == f"https://127.0.0.1:{PORT_SECURE}" and Path(secured.ca).exists()
    assert set(secured.creds["users"]) == {"admin", "sparsepack-release"}
    assert stat.S_IMODE((secured.cdir / "tls" / "ca-key.pem").stat().st_mode) == 0o600
    proc = cli("node", "status", "--port", str(PORT_SECURE))
    status = json.loads(proc.stdout)
    assert proc.returncode == 0 and status["healthy"] and status["credentials_file"] == str(path)
    assert_no_secret(proc, *secured.creds["users"].values())
    # TLS only: plain HTTP gets no answer, anonymous HTTPS the plugin's 401
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{PORT_SECURE}/", timeout=10).read()
    anonymous = secure.Access(secured.ca, "", "")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(secured.url, timeout=10, context=anonymous.context())
    assert err.value.code == 401


def test_release_as_least_privilege_user_passes_smoke(secured, package_factory, tmp_path):
    pkg = package_factory("bert-if-log1p")[1]
    proc = cli(
        "release",
        str(pkg),
        "--url",
        secured.url,
        "--username",
        secure.RELEASE_USER,
        "--ca-certs",
        secured.ca,
        "--group",
        "secure-release",
        "--json",
        "--report",
        str(tmp_path / "r.json"),
        password=secured.password(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["passed"] and report["connection"]["tls_verify"] is True
    assert all(step["passed"] for step in report["steps"].values())
    assert {"smoke_predict", "smoke_retrieval"} <= set(report["steps"])
    assert_no_secret(proc, *secured.creds["users"].values())
    assert not any(v in (tmp_path / "r.json").read_text() for v in secured.creds["users"].values())
    deployed = {m["model_id"]: m["model_state"] for m in secured.models_named_in("secure-release")}
    assert set(report["model_ids"].values()) == set(deployed) and set(deployed.values()) == {"DEPLOYED"}


def test_clear_previous_as_least_privilege_user(secured, package_factory):
    """The permissions marked (rollback) in the role: undeploy and delete another version of the group."""
    before = {m["model_id"] for m in secured.models_named_in("secure-release")}
    assert before, "runs after test_release_as_least_privilege_user_passes_smoke"
    proc = cli(
        "release",
        str(package_factory("bert-bi-relu")[1]),
        "--url",
        secured.url,
        "--username",
        secure.RELEASE_USER,
        "--ca-certs",
        secured.ca,
        "--group",
        "secure-release",
        "--clear-previous",
        "--json",
        password=secured.password(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert sorted(report["steps"]["clear_previous"]["removed"]) == sorted(before)
    left = {m["model_id"] for m in secured.models_named_in("secure-release")}
    assert left == set(report["model_ids"].values()) and not left & before


def test_switch_pipelines_as_least_privilege_user(secured, package_factory):
    """--clear-previous --switch-pipelines all as sparsepack-release: production pipelines move to the new version
    (simulated and test-queried in the user's name), then the old version is removed; no 403 on the way."""
    before = {m["model_id"] for m in secured.models_named_in("secure-release")}
    assert len(before) == 1, "runs after test_clear_previous_as_least_privilege_user (one bert-bi-relu model)"
    old = before.pop()
    manifest = package_factory("bert-bi-relu")[0]
    ingest, search = "secure-prod-ingest", "secure-prod-search"
    secured.admin_call(
        "PUT", f"/_ingest/pipeline/{ingest}", render("ingest-pipeline", manifest, "2.19.1", model_id=old)
    )
    secured.admin_call(
        "PUT", f"/_search/pipeline/{search}", render("search-pipeline", manifest, "2.19.1", model_id=old)
    )
    try:
        proc = cli(
            "release",
            str(package_factory("bert-if-log1p")[1]),
            "--url",
            secured.url,
            "--username",
            secure.RELEASE_USER,
            "--ca-certs",
            secured.ca,
            "--group",
            "secure-release",
            "--clear-previous",
            "--switch-pipelines",
            "all",
            "--json",
            password=secured.password(),
        )
        assert proc.returncode == 0 and "(403)" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
        report = json.loads(proc.stdout)
        new = report["model_ids"]
        changes = {(c["kind"], c["name"]): c for c in report["steps"]["switch_pipelines"]["pipelines"]}
        assert set(changes) == {("ingest", ingest), ("search", search)}
        assert changes[("ingest", ingest)]["verified"]["simulate"] == "passed"
        assert changes[("search", search)]["verified"]["test_query"] == "passed"
        ingest_body = secured.admin_call("GET", f"/_ingest/pipeline/{ingest}")[ingest]
        search_body = secured.admin_call("GET", f"/_search/pipeline/{search}")[search]
        assert ingest_body["processors"][0]["sparse_encoding"]["model_id"] == new["document"]
        assert search_body["request_processors"][0]["neural_query_enricher"]["default_model_id"] == new["query"]
        assert report["steps"]["clear_previous"]["removed"] == [old]
        left = {m["model_id"] for m in secured.models_named_in("secure-release")}
        assert left == set(new.values()) and old not in left
        assert_no_secret(proc, *secured.creds["users"].values())
    finally:
        secured.admin_call("DELETE", f"/_search/pipeline/{search}")
        secured.admin_call("DELETE", f"/_ingest/pipeline/{ingest}")


def test_wrong_password_gets_the_plugins_401(secured, package_factory):
    wrong = "Wr0ng-" + secrets.token_urlsafe(12)
    proc = cli(
        "release",
        str(package_factory("bert-if-log1p")[1]),
        "--url",
        secured.url,
        "--username",
        secure.RELEASE_USER,
        "--ca-certs",
        secured.ca,
        "--group",
        "secure-wrong-password",
        password=wrong,
    )
    line = one_line_error(proc)
    assert "refused the credentials (401)" in line
    assert_no_secret(proc, wrong, *secured.creds["users"].values())
    assert secured.group_ids("secure-wrong-password") == []


def test_no_ca_is_a_tls_error_naming_ca_certs(secured, package_factory):
    proc = cli(
        "release",
        str(package_factory("bert-if-log1p")[1]),
        "--url",
        secured.url,
        "--username",
        secure.RELEASE_USER,
        "--group",
        "secure-no-ca",
        password=secured.password(),
    )
    line = one_line_error(proc)
    assert "TLS handshake" in line and "--ca-certs" in line and "CERTIFICATE_VERIFY_FAILED" in line
    assert_no_secret(proc, *secured.creds["users"].values())
    assert secured.group_ids("secure-no-ca") == []
    # the explicit opt-out still reaches the cluster
    insecure = cli(
        "preflight", "--url", secured.url, "--username", secure.RELEASE_USER, "--insecure", password=secured.password()
    )
    assert insecure.returncode == 0, insecure.stderr


def test_user_without_ml_permissions_stops_at_preflight_naming_it(secured, package_factory):
    secured.admin_call(
        "PUT",
        "/_plugins/_security/api/roles/monitor-only",
        {"cluster_permissions": ["cluster:monitor/*"], "index_permissions": []},
    )
    password = secured.add_user("no-ml", [], ["monitor-only"])
    proc = cli(
        "release",
        str(package_factory("bert-if-log1p")[1]),
        "--url",
        secured.url,
        "--username",
        "no-ml",
        "--ca-certs",
        secured.ca,
        "--group",
        "secure-no-ml",
        password=password,
    )
    line = one_line_error(proc)
    assert "preflight" in line and "(403)" in line and "no permissions for [cluster:admin/opensearch/ml/" in line
    assert_no_secret(proc, password)
    assert secured.group_ids("secure-no-ml") == []


def test_user_without_the_lease_index_stops_before_creating_anything(secured, package_factory):
    """The real plugin's 403 on sparsepack-leases (tests/test_concurrency.py emulates it for the unsecured nodes)."""
    role = secure.release_role()
    role["index_permissions"] = [p for p in role["index_permissions"] if p["index_patterns"] != ["sparsepack-*"]]
    secured.admin_call("PUT", "/_plugins/_security/api/roles/no-leases", role)
    password = secured.add_user("no-leases", [], ["no-leases"])
    proc = cli(
        "release",
        str(package_factory("bert-if-log1p")[1]),
        "--url",
        secured.url,
        "--username",
        "no-leases",
        "--ca-certs",
        secured.ca,
        "--group",
        "secure-no-leases",
        password=password,
    )
    line = one_line_error(proc)
    assert "register" in line and "sparsepack-leases (403)" in line and "indices:data/write/index" in line
    assert_no_secret(proc, password)
    assert secured.group_ids("secure-no-leases") == []


def test_client_certificate_authenticates_as_its_cn(secured):
    tls = secured.cdir / "tls"
    cert, key = tls / f"{secure.RELEASE_USER}.pem", tls / f"{secure.RELEASE_USER}-key.pem"
    proc = cli(
        "preflight",
        "--url",
        secured.url,
        "--ca-certs",
        secured.ca,
        "--client-cert",
        str(cert),
        "--client-key",
        str(key),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    cl = connect(ConnectionOptions(url=secured.url, ca_certs=secured.ca, client_cert=str(cert), client_key=str(key)))
    info = cl.request("GET", "/_plugins/_security/authinfo")
    assert info["user_name"] == secure.RELEASE_USER and info["roles"] == [secure.RELEASE_ROLE]


def test_release_with_a_client_certificate_and_no_password(secured, package_factory):
    """The whole release, smoke test included, authenticated by the sparsepack-release certificate alone."""
    tls = secured.cdir / "tls"
    cert, key = tls / f"{secure.RELEASE_USER}.pem", tls / f"{secure.RELEASE_USER}-key.pem"
    proc = cli(
        "release",
        str(package_factory("bert-if-log1p")[1]),
        "--url",
        secured.url,
        "--ca-certs",
        secured.ca,
        "--client-cert",
        str(cert),
        "--client-key",
        str(key),
        "--group",
        "secure-client-cert",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["passed"] and report["connection"] == {"url": secured.url, "auth": "client-cert", "tls_verify": True}
    assert {"smoke_predict", "smoke_retrieval"} <= set(report["steps"])
    assert all(step["passed"] for step in report["steps"].values())
    group = secured.admin_call("GET", f"/_plugins/_ml/model_groups/{secured.group_ids('secure-client-cert')[0]}")
    assert group["owner"]["name"] == secure.RELEASE_USER  # the certificate's CN is who registered it
    deployed = {m["model_id"]: m["model_state"] for m in secured.models_named_in("secure-client-cert")}
    assert set(deployed) == set(report["model_ids"].values()) and set(deployed.values()) == {"DEPLOYED"}
    assert_no_secret(proc, *secured.creds["users"].values())


def test_restricted_model_hidden_from_users_without_the_backend_role(secured, package_factory):
    proc = cli(
        "release",
        str(package_factory("bert-if-log1p")[1]),
        "--url",
        secured.url,
        "--username",
        secure.RELEASE_USER,
        "--ca-certs",
        secured.ca,
        "--group",
        "secure-restricted",
        "--json",
        "--access-mode",
        "restricted",
        "--backend-roles",
        secure.RELEASE_BACKEND_ROLE,
        password=secured.password(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc_id = json.loads(proc.stdout)["model_ids"]["document"]
    group = secured.admin_call("GET", f"/_plugins/_ml/model_groups/{secured.group_ids('secure-restricted')[0]}")
    assert group["access"] == "restricted" and group["backend_roles"] == [secure.RELEASE_BACKEND_ROLE]

    # same ML permissions, another backend role
    other = secured.as_user("other-team", secured.add_user("other-team", ["other-team"], [secure.RELEASE_ROLE]))
    for method, path in (("GET", f"/_plugins/_ml/models/{doc_id}"), ("POST", f"/_plugins/_ml/models/{doc_id}/_deploy")):
        with pytest.raises(Exception) as err:
            other.request(method, path)
        assert "(403)" in str(err.value) and "privilege" in str(err.value)
    hits = other.request("POST", "/_plugins/_ml/models/_search", body={"query": {"ids": {"values": [doc_id]}}})
    assert hits["hits"]["total"]["value"] == 0

    releaser = secured.as_user(secure.RELEASE_USER, secured.password())
    assert releaser.request("GET", f"/_plugins/_ml/models/{doc_id}")["model_state"] == "DEPLOYED"
    task_id = releaser.request("POST", f"/_plugins/_ml/models/{doc_id}/_deploy")["task_id"]
    assert models.wait_task(releaser, task_id, 120, "the releaser's deploy")["state"] == "COMPLETED"
    hits = releaser.request("POST", "/_plugins/_ml/models/_search", body={"query": {"ids": {"values": [doc_id]}}})
    assert hits["hits"]["total"]["value"] == 1


def test_public_and_private_groups(secured):
    releaser = secured.as_user(secure.RELEASE_USER, secured.password())
    other = secured.as_user("other-team-2", secured.add_user("other-team-2", ["other-team"], [secure.RELEASE_ROLE]))
    version = releaser.info()["version"]["number"]
    for mode, visible in (("public", True), ("private", False)):
        created = models.Created()
        gid, new = models.ensure_group(releaser, f"secure-{mode}", version, created, mode)
        assert new and created.group_id == gid
        assert secured.admin_call("GET", f"/_plugins/_ml/model_groups/{gid}")["access"] == mode
        seen = other.request("GET", f"/_plugins/_ml/model_groups/{gid}", ok_404=True) if visible else None
        if visible:
            assert seen["name"] == f"secure-{mode}"
        else:
            with pytest.raises(Exception) as err:
                other.request("GET", f"/_plugins/_ml/model_groups/{gid}")
            assert "(403)" in str(err.value)
        models.rollback(releaser, created)
        assert secured.group_ids(f"secure-{mode}") == []


def test_access_mode_variants_of_the_feature_table_do_their_job(secured):
    """The model-group variants the acceptance test can only see refused without the security plugin, on the secured
    node: public is seen by another team, private by its owner alone, restricted by its backend role only."""
    from sparsepack.templates.versions import FEATURES

    variants = [v for t, v in FEATURES["model_group"].variants if t == "model-group" and v.get("access_mode")]
    assert {v["access_mode"] for v in variants} == {"public", "private", "restricted"}
    roles = sorted({r for v in variants for r in v.get("backend_roles") or []})
    owner = secured.as_user("acc-owner", secured.add_user("acc-owner", roles, [secure.RELEASE_ROLE]))
    member = secured.as_user("acc-member", secured.add_user("acc-member", roles, [secure.RELEASE_ROLE]))
    outsider = secured.as_user("acc-outsider", secured.add_user("acc-outsider", ["other-team"], [secure.RELEASE_ROLE]))
    version = owner.info()["version"]["number"]
    for values in variants:
        mode = values["access_mode"]
        body = render("model-group", None, version, group_name=f"t-access-{mode}", **values)
        gid = owner.request("POST", "/_plugins/_ml/model_groups/_register", body=body)["model_group_id"]
        try:
            assert secured.admin_call("GET", f"/_plugins/_ml/model_groups/{gid}")["access"] == mode
            assert owner.request("GET", f"/_plugins/_ml/model_groups/{gid}")["name"] == f"t-access-{mode}"
            sees = {
                "public": {"member": True, "outsider": True},
                "private": {"member": False, "outsider": False},
                "restricted": {"member": True, "outsider": False},
            }[mode]
            for who, user in (("member", member), ("outsider", outsider)):
                if sees[who]:
                    assert user.request("GET", f"/_plugins/_ml/model_groups/{gid}")["name"] == f"t-access-{mode}", (
                        mode,
                        who,
                    )
                else:
                    with pytest.raises(Exception) as err:
                        user.request("GET", f"/_plugins/_ml/model_groups/{gid}")
                    assert "(403)" in str(err.value), (mode, who, str(err.value))
        finally:
            models.delete_group(owner, gid)
