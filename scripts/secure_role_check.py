"""Leave-one-out check of the sparsepack-release role on a running secured node (`sparsepack node start --secure`).

For each permission of sparsepack.node.secure.release_role(): the role without it, then a full release (new group) as
sparsepack-release. Prints which permissions a passing release needs (it fails without them) and which it does not
(used only by rollback, --clear-previous, undeploy/delete). The role is restored at the end.

    .venv/bin/python scripts/secure_role_check.py --port 9200 PACKAGE_DIR

--upgrade V2_PACKAGE_DIR: each case is an upgrade instead, as an admin's production would see it: PACKAGE_DIR released
(no smoke test), an ingest and a search pipeline put on it by the admin, then V2 released with --clear-previous
--switch-pipelines all. --only PERM (repeatable) limits the cases to those permissions.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from sparsepack.errors import SparsepackError
from sparsepack.node import secure
from sparsepack.node.rest import http_json
from sparsepack.node.state import cluster_dir, default_home
from sparsepack.registry import models
from sparsepack.registry.connection import ConnectionOptions, connect
from sparsepack.rollout.options import ReleaseOptions
from sparsepack.rollout.run import release
from sparsepack.templates import render


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("package")
    ap.add_argument("--port", type=int, default=9200)
    ap.add_argument("--upgrade", metavar="V2_PACKAGE_DIR")
    ap.add_argument("--only", action="append", default=[])
    args = ap.parse_args()
    cdir = cluster_dir(default_home(), args.port)
    creds = secure.load_credentials(cdir)
    if creds is None:
        raise SystemExit(f"no secured node on port {args.port} (no {secure.credentials_path(cdir)})")
    admin = secure.node_access(cdir)
    url = creds["url"]
    role_path = f"{url}/_plugins/_security/api/roles/{secure.RELEASE_ROLE}"
    conn = ConnectionOptions(
        url=url,
        username=secure.RELEASE_USER,
        password=creds["users"][secure.RELEASE_USER],
        ca_certs=creds["ca_certs"],
        retries=0,
    )
    admin_conn = ConnectionOptions(
        url=url, username=secure.ADMIN_USER, password=creds["users"][secure.ADMIN_USER], ca_certs=creds["ca_certs"]
    )
    full = secure.release_role()
    cases = [("cluster", p) for p in full["cluster_permissions"]]
    cases += [("index", a) for a in full["index_permissions"][0]["allowed_actions"]]
    cases = [c for c in cases if not args.only or c[1] in args.only]
    needed, not_needed = [], []
    try:
        for n, (kind, perm) in enumerate(cases):
            role = copy.deepcopy(full)
            if kind == "cluster":
                role["cluster_permissions"].remove(perm)
            else:
                role["index_permissions"][0]["allowed_actions"].remove(perm)
            http_json(role_path, "PUT", role, access=admin)
            # a fresh lease index each time, so its create and writes are exercised
            http_json(f"{url}/sparsepack-leases", "DELETE", access=admin) if _exists(url, admin) else None
            t0 = time.monotonic()
            try:
                if args.upgrade:
                    report = _upgrade(args.package, args.upgrade, conn, connect(admin_conn), f"role-check-{n}")
                else:
                    report = release(
                        args.package, conn, ReleaseOptions(group=f"role-check-{n}", progress=False, timeout=120)
                    )
                ok, why = report["passed"], report.get("error", "")
                if report.get("rollback", {}).get("left"):
                    why += f" [rollback left: {report['rollback']['left']}]"
            except SparsepackError as exc:
                ok, why = False, str(exc)
            (not_needed if ok else needed).append((perm, why))
            print(
                f"{'not needed' if ok else 'NEEDED    '}  {perm:55s} {time.monotonic() - t0:5.1f}s  {why[:150]}",
                flush=True,
            )
            _remove_groups(connect(admin_conn), f"role-check-{n}")
    finally:
        http_json(role_path, "PUT", full, access=admin)
    print(f"\n{len(needed)} needed by a passing release, {len(not_needed)} not: {[p for p, _ in not_needed]}")
    return 0


def _upgrade(v1_package: str, v2_package: str, conn, admin, group: str) -> dict:
    """v1 released by the same user (a permission a plain release needs fails there already), production pipelines
    put on it by the admin, then v2 switching them and removing v1."""
    v1 = release(v1_package, conn, ReleaseOptions(group=group, smoke=False, progress=False, timeout=120))
    if not v1["passed"]:
        return v1
    manifest, version = json.loads((Path(v1_package) / "manifest.json").read_text()), admin.info()["version"]["number"]
    model_id = v1["model_ids"]["document"]
    for kind in ("ingest", "search"):
        admin.request(
            "PUT",
            f"/_{kind}/pipeline/{group}-{kind}",
            body=render(f"{kind}-pipeline", manifest, version, model_id=model_id),
        )
    try:
        return release(
            v2_package,
            conn,
            ReleaseOptions(group=group, clear_previous=True, switch_pipelines=["all"], progress=False, timeout=120),
        )
    finally:
        for kind in ("ingest", "search"):
            admin.request("DELETE", f"/_{kind}/pipeline/{group}-{kind}", ok_404=True)


def _exists(url: str, admin) -> bool:
    try:
        http_json(f"{url}/sparsepack-leases", "HEAD", access=admin)
        return True
    except Exception:  # noqa: BLE001 - 404
        return False


def _remove_groups(admin, name: str) -> None:
    gid = models.find_group(admin, name)
    if gid:
        for m in models.models_in_group(admin, gid):
            models.delete(admin, m["model_id"], check_references=False)
        models.delete_group(admin, gid)


if __name__ == "__main__":
    sys.exit(main())
