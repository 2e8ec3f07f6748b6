"""Render a template into a JSON body: defaults, the manifest's names and artifact, the checks, then Jinja."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta

from ..contract.manifest import Manifest
from ..contract.naming import default_group_name
from ..errors import SparsepackError
from .catalog import TEMPLATES
from .checks import check_access_mode, check_field_type, check_prune, check_query, check_two_phase
from .versions import DEFAULT_TARGET, features_for, fmt, line_of, parse_version, require

CHUNK_SIZE = 10_000_000  # ML Commons' upload_chunk limit


def _environment(template_dir: str | Path | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if template_dir:
        if not Path(template_dir).is_dir():
            raise SparsepackError(f"--template-dir {template_dir} is not a directory")
        loaders.append(jinja2.FileSystemLoader(str(template_dir)))
    loaders.append(jinja2.FileSystemLoader(str(resources.files("sparsepack") / "templates")))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters["drop_none"] = lambda mapping: {k: v for k, v in mapping.items() if v is not None}
    return env


def template_variables(name: str, template_dir: str | Path | None = None) -> list[str]:
    env = _environment(template_dir)
    source = env.loader.get_source(env, f"{name}.json.j2")[0]
    tree = env.parse(source)
    # A {% set %} inside an {% if %} counts as undeclared for jinja's meta; it is the template's own, not an input.
    assigned = {a.target.name for a in tree.find_all(jinja2.nodes.Assign) if isinstance(a.target, jinja2.nodes.Name)}
    return sorted(meta.find_undeclared_variables(tree) - assigned)


def list_templates(template_dir: str | Path | None = None) -> list[dict]:
    return [
        {
            "name": n,
            "description": s.description,
            "variables": template_variables(n, template_dir),
            "defaults": {k: v for k, v in s.defaults.items() if v is not None},
        }
        for n, s in TEMPLATES.items()
    ]


def _pick_artifact(manifest: dict, role: str) -> dict:
    for art in manifest.get("artifacts", []):
        if art["role"] == role:
            return art
    roles = [a["role"] for a in manifest.get("artifacts", [])]
    raise SparsepackError(
        f"the manifest has no {role!r} artifact (it has {roles}); use role={roles[0] if roles else 'document'}"
    )


def render(
    name: str,
    manifest: Manifest | dict | None,
    target_version: str = DEFAULT_TARGET,
    template_dir: str | Path | None = None,
    **values: Any,
) -> dict:
    if name not in TEMPLATES:
        raise SparsepackError(f"unknown template {name!r}; `sparsepack render --list` shows {', '.join(TEMPLATES)}")
    spec = TEMPLATES[name]
    version = parse_version(target_version)
    for feature in spec.requires:
        require(feature, version)
    context: dict[str, Any] = {**spec.defaults, **values}
    for key, feature in spec.value_features.items():
        if context.get(key):
            require(feature, version)
    # the templates read the manifest as JSON data
    manifest = (manifest.to_dict() if isinstance(manifest, Manifest) else manifest) or {}
    if manifest.get("name"):
        context["model_name"] = context.get("model_name") or manifest["name"]
        context["group_name"] = context.get("group_name") or default_group_name(manifest["name"])
    context.setdefault("model_name", None)
    if context.get("model_description") is None and manifest:
        context["model_description"] = (
            f"{manifest['mode']} neural sparse model {manifest['name']} packaged by sparsepack"
        )
    if context.get("group_description") is None and "group_description" in context:
        context["group_description"] = "neural sparse models packaged by sparsepack"
    if spec.uses_artifact:
        if not manifest:
            raise SparsepackError(f"template {name} needs --manifest OUT/manifest.json")
        line = line_of(version)
        if line not in manifest.get("compatible_opensearch", []):
            raise SparsepackError(
                f"the package's TorchScript does not load on OpenSearch {line} "
                f"(compatible: {', '.join(manifest.get('compatible_opensearch', [])) or 'none'}); "
                f"re-package with eager attention or target another version"
            )
        art = _pick_artifact(manifest, context["role"])
        context["artifact"] = art
        context["total_chunks"] = max(1, math.ceil(art["size_bytes"] / CHUNK_SIZE))
    if name in ("index-mapping", "query"):
        check_field_type(name, context, manifest, version)
    if name == "model-group":
        check_access_mode(context.get("access_mode"), context.get("backend_roles"))
    if name == "query":
        check_query(context, manifest, version)
    if name == "ingest-pipeline" and context.get("prune_type"):
        check_prune(context["prune_type"], context["prune_ratio"])
    if name == "search-pipeline" and context.get("two_phase"):
        check_two_phase(context)
    context["features"] = features_for(version)
    context["target_version"] = fmt(version)
    context["manifest"] = manifest
    declared = template_variables(name, template_dir)
    missing = [k for k in declared if k not in context] + [k for k in spec.required if context.get(k) is None]
    if missing:
        raise SparsepackError(f"template {name} needs {', '.join(missing)}; pass --set {missing[0]}=...")
    env = _environment(template_dir)
    try:
        text = env.get_template(f"{name}.json.j2").render(**context)
    except jinja2.UndefinedError as exc:
        raise SparsepackError(f"template {name}: {exc.message}; pass it with --set NAME=VALUE") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SparsepackError(
            f"template {name} rendered invalid JSON ({exc.msg} at line {exc.lineno}); fix the template"
        ) from exc


def parse_set_values(pairs: list[str]) -> dict[str, Any]:
    """``--set key=value``: values are JSON when they parse (numbers, true, {...}), else strings."""
    out = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SparsepackError(f"--set {pair!r} is not KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def write_package_bodies(out_dir: Path, manifest: dict, target_version: str = DEFAULT_TARGET) -> None:
    """Next to each zip: its register-meta and model-config JSON for the default target; listed in the manifest."""
    if line_of(parse_version(target_version)) not in manifest["compatible_opensearch"]:
        return
    for art in manifest["artifacts"]:
        stem = art["file"].removesuffix(".zip")
        files = {}
        for template in ("register-meta", "model-config"):
            body = render(template, manifest, target_version, role=art["role"])
            path = out_dir / f"{stem}.{template}.json"
            path.write_text(json.dumps(body, indent=2) + "\n")
            files[template] = path.name
        art["bodies"] = {"target_version": target_version, **files}
