"""What uses a model: ingest pipelines (``sparse_encoding`` and any other processor's ``model_id``), search pipelines
(``neural_query_enricher`` default and per-field model ids), the indices whose default/final ingest pipeline or
default search pipeline is one of those, and the indices whose mapping names the model (a ``semantic`` field's
``model_id`` / ``search_model_id``: the node encodes with it on every write and query). ML Commons deletes a model a pipeline still names without a word, so
sparsepack asks here before it undeploys or deletes anything."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import ClusterError
from .connection import Cluster

# Keys whose string value is a model id, and the one key whose value (a field -> model id map) holds model ids.
MODEL_ID_KEYS = ("model_id", "default_model_id")
FIELD_MODEL_MAP_KEY = "neural_field_default_id"
INDEX_PIPELINE_SETTINGS = {
    "index.default_pipeline": "ingest",
    "index.final_pipeline": "ingest",
    "index.search.default_pipeline": "search",
}


@dataclass(frozen=True)
class Reference:
    kind: str  # "ingest_pipeline" | "search_pipeline" | "index"
    name: str
    model_id: str
    via: str | None = None  # for an index: "index.default_pipeline=prod-ingest"

    def describe(self) -> str:
        label = self.kind.replace("_", " ")
        return f"{label} {self.name} ({self.via})" if self.via else f"{label} {self.name}"

    def as_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "model_id": self.model_id, "via": self.via}


def rewrite_model_ids(body: Any, replace: Callable[[str], str]) -> Any:
    """A copy of ``body`` with every model id passed through ``replace``; every other field is kept as it is."""
    if isinstance(body, list):
        return [rewrite_model_ids(v, replace) for v in body]
    if not isinstance(body, dict):
        return body
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in MODEL_ID_KEYS and isinstance(value, str):
            out[key] = replace(value)
        elif key == FIELD_MODEL_MAP_KEY and isinstance(value, dict):
            out[key] = {f: replace(m) if isinstance(m, str) else m for f, m in value.items()}
        else:
            out[key] = rewrite_model_ids(value, replace)
    return out


def model_ids_in(body: Any) -> set[str]:
    """Every model id a pipeline body names, at any depth (foreach, on_failure and nested processors included)."""
    found: set[str] = set()

    def collect(model_id: str) -> str:
        found.add(model_id)
        return model_id

    rewrite_model_ids(body, collect)
    return found


def called_pipelines(body: Any) -> Iterator[str]:
    """Names of the pipelines an ingest pipeline hands documents to (the ``pipeline`` processor)."""
    if isinstance(body, list):
        for v in body:
            yield from called_pipelines(v)
    elif isinstance(body, dict):
        for key, value in body.items():
            if key == "pipeline" and isinstance(value, dict) and isinstance(value.get("name"), str):
                yield value["name"]
            yield from called_pipelines(value)


def ingest_pipelines(cluster: Cluster) -> dict[str, dict]:
    return cluster.call("GET /_ingest/pipeline", cluster.client.ingest.get_pipeline, ok_404=True) or {}


def search_pipelines(cluster: Cluster) -> dict[str, dict]:
    return cluster.call("GET /_search/pipeline", cluster.client.search_pipeline.get, ok_404=True) or {}


def index_pipeline_settings(cluster: Cluster) -> dict[str, dict[str, str]]:
    """index -> {setting: pipeline name} for the settings that run a pipeline on every request."""
    # "*,-.*": every index but the dot-prefixed system ones (reading those draws a deprecation warning on each call).
    names = ",".join(INDEX_PIPELINE_SETTINGS)
    res = (
        cluster.call(
            f"GET /*,-.*/_settings/{names}",
            cluster.client.indices.get_settings,
            index="*,-.*",
            name=names,
            params={"flat_settings": "true", "expand_wildcards": "open,closed"},
            ok_404=True,
        )
        or {}
    )
    out = {}
    for index, entry in res.items():
        chosen = {
            k: v
            for k, v in (entry.get("settings") or {}).items()
            if k in INDEX_PIPELINE_SETTINGS and v and v != "_none"
        }
        if chosen:
            out[index] = chosen
    return out


def index_mapping_models(cluster: Cluster) -> dict[str, dict[str, set[str]]]:
    """index -> {field path: model ids its mapping names}."""
    res = (
        cluster.call(
            "GET /*,-.*/_mapping",
            cluster.client.indices.get_mapping,
            index="*,-.*",
            params={"expand_wildcards": "open,closed"},
            ok_404=True,
        )
        or {}
    )
    out = {}
    for index, entry in res.items():
        fields = dict(_mapped_models((entry.get("mappings") or {}).get("properties") or {}))
        if fields:
            out[index] = fields
    return out


def _mapped_models(properties: dict, prefix: str = "") -> Iterator[tuple[str, set[str]]]:
    for name, spec in properties.items():
        if not isinstance(spec, dict):
            continue
        ids = {v for k in ("model_id", "search_model_id") if isinstance(v := spec.get(k), str)}
        if ids:
            yield prefix + name, ids
        yield from _mapped_models(spec.get("properties") or {}, f"{prefix}{name}.")


def _closure(pipelines: dict[str, dict]) -> dict[str, set[str]]:
    """pipeline -> the model ids it uses, including through the pipelines it calls."""
    direct = {name: model_ids_in(body) for name, body in pipelines.items()}
    calls = {name: set(called_pipelines(body)) for name, body in pipelines.items()}
    out = {}
    for name in pipelines:
        seen, todo, ids = set(), [name], set()
        while todo:
            cur = todo.pop()
            if cur in seen or cur not in pipelines:
                continue
            seen.add(cur)
            ids |= direct[cur]
            todo.extend(calls[cur])
        out[name] = ids
    return out


def find(cluster: Cluster, model_ids: set[str] | list[str]) -> list[Reference]:
    """Everything that would break if these models went away."""
    if not model_ids:
        return []
    return find_in(
        set(model_ids),
        ingest_pipelines(cluster),
        search_pipelines(cluster),
        index_pipeline_settings(cluster),
        index_mapping_models(cluster),
    )


def find_in(
    wanted: set[str],
    ingest: dict[str, dict],
    search: dict[str, dict],
    index_settings: dict[str, dict[str, str]],
    index_mappings: dict[str, dict[str, set[str]]] | None = None,
) -> list[Reference]:
    """:func:`find` on bodies already read (or about to be written, to ask what a change would leave in use)."""
    uses = {"ingest": _closure(ingest), "search": {n: model_ids_in(b) for n, b in search.items()}}
    refs = []
    for kind in ("ingest", "search"):
        for name, ids in sorted(uses[kind].items()):
            refs += [Reference(f"{kind}_pipeline", name, mid) for mid in sorted(ids & wanted)]
    for index, settings in sorted(index_settings.items()):
        for setting, pipeline in sorted(settings.items()):
            kind = INDEX_PIPELINE_SETTINGS[setting]
            for mid in sorted(uses[kind].get(pipeline, set()) & wanted):
                refs.append(Reference("index", index, mid, f"{setting}={pipeline}"))
    for index, fields in sorted((index_mappings or {}).items()):
        for path, ids in sorted(fields.items()):
            refs += [Reference("index", index, mid, f"mapping field {path}") for mid in sorted(ids & wanted)]
    return refs


def describe(refs: list[Reference]) -> str:
    by_model: dict[str, list[str]] = {}
    for ref in refs:
        by_model.setdefault(ref.model_id, []).append(ref.describe())
    return "; ".join(f"{mid} is used by {', '.join(users)}" for mid, users in by_model.items())


def refuse_if_used(cluster: Cluster, model_ids: set[str] | list[str], action: str) -> None:
    """Raise (exit 4) naming every user, before anything is changed, if any of the models is in use."""
    refs = find(cluster, model_ids)
    if refs:
        raise InUseError(action, refs)


class InUseError(ClusterError):
    def __init__(self, action: str, refs: list[Reference]):
        self.refs = refs
        super().__init__(
            f"refusing to {action}: {describe(refs)}; point those pipelines at another model first "
            f"(release --switch-pipelines NAME,... does it once the new version passes) or remove them"
        )
