"""Register artifacts the cluster downloads itself: one build, hosted once, released to many clusters.

ML Commons' ``_register`` with a ``url`` makes the node fetch the zip, check it against
``model_content_hash_value`` and allow only URLs that ``plugins.ml_commons.trusted_url_regex`` finds a match in
(Java ``Matcher.find``: an unanchored search, so a regex must anchor itself to be narrow).
"""

from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.parse
import urllib.request

from ..errors import ClusterError, SparsepackError
from ..templates import render
from .connection import Cluster
from .preflight import Blocker, settings_fix

ML = "plugins.ml_commons."
SCHEMES = ("http", "https", "file", "ftp")


def check_base_url(base: str) -> str:
    """The base URL without its trailing slash; refused when it has no scheme ML Commons downloads from."""
    parsed = urllib.parse.urlparse(base)
    if parsed.scheme not in SCHEMES or not (parsed.netloc or parsed.scheme == "file"):
        raise SparsepackError(
            f"--artifact-base-url {base!r} is not a URL the cluster can download from; give "
            f"{'/'.join(SCHEMES)}://HOST/PATH where the package's zips are hosted"
        )
    return base.rstrip("/")


def artifact_url(base: str, artifact: dict) -> str:
    return f"{check_base_url(base)}/{urllib.parse.quote(artifact['file'])}"


def narrow_regex(base: str) -> str:
    """The narrowest trusted_url_regex admitting every artifact under ``base``: the escaped base URL, anchored."""
    return "^" + re.escape(check_base_url(base) + "/")


def url_blockers(settings: dict, urls: list[str], base: str) -> list[Blocker]:
    """What stops the cluster from registering these URLs, each naming the setting and the value to give it."""
    blockers = []
    if str(settings.get(ML + "allow_registering_model_via_url", "false")).lower() != "true":
        blockers.append(
            settings_fix(
                "url_registration_disabled",
                f"{ML}allow_registering_model_via_url is false: URL "
                f"registration is refused; set it to true (or run with --apply-settings)",
                allow_registering_model_via_url=True,
            )
        )
    regex = settings.get(ML + "trusted_url_regex")
    try:
        refused = [u for u in urls if regex is not None and not re.search(regex, u)]
    except re.error:
        refused = []  # a Java-only construct: the server judges it, and its refusal is reported verbatim
    if refused:
        blockers.append(
            settings_fix(
                "url_not_trusted",
                f"{ML}trusted_url_regex {regex!r} does not admit {refused[0]}; "
                f"set it to {narrow_regex(base)!r} (the narrowest that admits the package; or run "
                f"with --apply-settings)",
                trusted_url_regex=narrow_regex(base),
            )
        )
    return blockers


def register_from_url(
    cluster: Cluster, manifest: dict, artifact: dict, url: str, group_id: str, version: str, created, timeout: float
) -> str:
    """``_register`` by URL and wait for the task; a model the task created is recorded for rollback before any
    failure is raised, so nothing stays registered."""
    from .models import BASE, is_group_version_conflict, wait_task

    body = render(
        "register-url",
        manifest,
        version,
        role=artifact["role"],
        model_group_id=group_id,
        url=url,
        model_name=f"{manifest['name']}-{artifact['role']}",
    )
    for attempt in range(cluster.opts.retries + 1):
        try:
            task_id = cluster.call(f"POST {BASE}/models/_register", cluster.ml.register_model, body=body)["task_id"]
            break
        except ClusterError as exc:  # another run registering into the same group at this moment
            if not is_group_version_conflict(exc) or attempt == cluster.opts.retries:
                raise
            cluster.backoff(attempt)
    try:
        task = wait_task(cluster, task_id, timeout, f"registering {artifact['file']} from {url}")
    except ClusterError as exc:
        task = cluster.call(f"GET {BASE}/tasks/{task_id}", cluster.ml.get_task, task_id=task_id, ok_404=True) or {}
        if task.get("model_id"):
            created.model_ids.append(task["model_id"])
        raise ClusterError(f"{exc}{hash_detail(str(exc), artifact, url, timeout)}") from exc
    created.model_ids.append(task["model_id"])
    return task["model_id"]


def hash_detail(message: str, artifact: dict, url: str, timeout: float) -> str:
    """When the node says the content differs, name the artifact and both hashes (the one found at the URL is
    fetched from here)."""
    if not any(sign in message.lower() for sign in ("hash", "content changed")):  # 3.6/2.19 say "model content changed"
        return ""
    try:
        found = hosted_sha256(url, timeout)
    except (OSError, urllib.error.URLError) as exc:
        found = f"unknown (cannot fetch it from here: {exc})"
    return (
        f" | {artifact['file']}: the manifest says sha256 {artifact['sha256']}, the file at {url} has {found}; "
        f"upload the package's own zip there again"
    )


def hosted_sha256(url: str, timeout: float) -> str:
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - the user's own artifact URL
        while chunk := resp.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
