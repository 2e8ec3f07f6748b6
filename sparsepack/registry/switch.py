"""Move ingest and search pipelines from the previous versions of a model to the new one, in place (every other field
kept), prove each still works (ingest ``_simulate``; a test query through the search pipeline), and put every
pipeline back as it was if any check fails."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ClusterError, SparsepackError
from ..packaging.batteries import DOCUMENT_BATTERY
from . import deployment, references
from .connection import Cluster
from .index_models import index_provenance
from .predict import predict
from .references import model_ids_in, rewrite_model_ids
from .smoke import PREDICT_TOLERANCE, compare_maps

SAMPLE_TEXT = "OpenSearch finds documents with a neural sparse query over rank features."
PLACEHOLDER = "<new version>"
KINDS = ("ingest", "search")


@dataclass
class Change:
    kind: str  # "ingest" | "search"
    name: str
    before: dict
    after: dict
    verified: dict = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "changed": self.changed,
            "model_ids": {"before": sorted(model_ids_in(self.before)), "after": sorted(model_ids_in(self.after))},
            "before": self.before,
            "after": self.after,
            "verified": self.verified,
        }


def read_pipelines(cluster: Cluster) -> dict[str, dict[str, dict]]:
    return {"ingest": references.ingest_pipelines(cluster), "search": references.search_pipelines(cluster)}


def select(cluster: Cluster, requested: list[str], old_ids: set[str], current_ids: set[str]) -> list[tuple[str, str]]:
    """(kind, name) of the pipelines to switch, checked before anything is created. ``all``: every pipeline that names
    a previous version. A named pipeline must name a previous version, or already the new one (a re-run)."""
    pipes = read_pipelines(cluster)
    uses_old = [(k, n) for k in KINDS for n, body in sorted(pipes[k].items()) if model_ids_in(body) & old_ids]
    if requested == ["all"]:
        return uses_old
    chosen = []
    for name in requested:
        kinds = [k for k in KINDS if name in pipes[k]]
        if not kinds:
            raise SparsepackError(
                f"--switch-pipelines: no ingest or search pipeline is named {name!r}; "
                f"see GET _ingest/pipeline and GET _search/pipeline for the names"
            )
        hits = [(k, name) for k in kinds if (k, name) in uses_old or model_ids_in(pipes[k][name]) & current_ids]
        if not hits:
            used = sorted(set().union(*(model_ids_in(pipes[k][name]) for k in kinds))) or ["no model"]
            raise SparsepackError(
                f"--switch-pipelines: pipeline {name!r} uses {', '.join(used)}, not a version in this "
                f"model group ({', '.join(sorted(old_ids)) or 'no previous version'}); leave it out"
            )
        chosen += hits
    return chosen


def left_in_use(cluster: Cluster, old_ids: set[str], selected: list[tuple[str, str]]) -> list[references.Reference]:
    """What would still use the previous versions once the selected pipelines are switched."""
    pipes = read_pipelines(cluster)
    for kind, name in selected:
        pipes[kind][name] = rewrite_model_ids(pipes[kind][name], lambda m: PLACEHOLDER if m in old_ids else m)
    return references.find_in(old_ids, pipes["ingest"], pipes["search"], references.index_pipeline_settings(cluster))


class MixedVectorsError(ClusterError):
    """Switching would write (or query with) one model's vectors into an index another model's vectors fill.
    ``mixed``: per index, its documents, the model its vectors come from and the pipeline that would switch."""

    def __init__(self, mixed: list[dict]):
        self.mixed = mixed
        first = mixed[0]
        super().__init__(
            f"refusing to switch pipelines: index {first['index']} holds {first['documents']} document(s) encoded by "
            f"{', '.join(first['vector_model_ids'])} (per {first['recorded_in']}) and {first['kind']} pipeline "
            f"{first['pipeline']} would mix in another model"
            + (f" (and {len(mixed) - 1} more index(es))" if len(mixed) > 1 else "")
            + "; move such an index to the new model with `sparsepack migrate ALIAS --document-model NEW_ID` "
            "(re-encodes every document), or leave the pipeline out, or accept mixed vectors explicitly",
            parameter="allow_mixed_vectors",
        )


def mixed_vector_indices(cluster: Cluster, selected: list[tuple[str, str]], new_ids: set[str]) -> list[dict]:
    """The indices with documents that run a selected pipeline (default/final ingest, default search) and whose
    vectors come from a model not in ``new_ids``: the one their ``_meta.sparsepack`` or semantic field records, else
    the models of the ingest pipelines that wrote them."""
    chosen = set(selected)
    if not chosen:
        return []
    pipes = read_pipelines(cluster)
    recorded = index_provenance(cluster)
    out = []
    for index, settings in sorted(references.index_pipeline_settings(cluster).items()):
        hits = [
            (references.INDEX_PIPELINE_SETTINGS[s], p)
            for s, p in sorted(settings.items())
            if (references.INDEX_PIPELINE_SETTINGS[s], p) in chosen
        ]
        if not hits:
            continue
        if index in recorded and recorded[index].get("document_model_id"):
            holders, source = {recorded[index]["document_model_id"]}, "its _meta.sparsepack"
        else:
            ingest = [p for s, p in settings.items() if references.INDEX_PIPELINE_SETTINGS[s] == "ingest"]
            holders = set().union(set(), *(model_ids_in(pipes["ingest"].get(p, {})) for p in ingest))
            source = f"ingest pipeline {', '.join(ingest)}" if ingest else ""
        if not holders or holders <= new_ids:
            continue
        documents = cluster.call(f"GET /{index}/_count", cluster.client.count, index=index)["count"]
        if documents:
            kind, name = hits[0]
            out.append(
                {
                    "index": index,
                    "documents": documents,
                    "vector_model_ids": sorted(holders),
                    "recorded_in": source,
                    "kind": kind,
                    "pipeline": name,
                }
            )
    return out


def switch(
    cluster: Cluster, selected: list[tuple[str, str]], old_ids: set[str], new_ids: dict[str, str]
) -> list[Change]:
    """Point each selected pipeline at the new version and verify it; on any failure, restore them all and raise."""
    target = {"ingest": new_ids["document"], "search": new_ids.get("query", new_ids["document"])}
    pipes = read_pipelines(cluster)
    changes: list[Change] = []
    try:
        for kind, name in selected:
            before = pipes[kind].get(name)
            if before is None:
                raise ClusterError(f"{kind} pipeline {name} was removed while the release ran; re-run without it")
            change = Change(kind, name, before, rewrite_model_ids(before, _replacing(old_ids, target[kind])))
            changes.append(change)
            if change.changed:
                _put(cluster, kind, name, change.after)
            try:
                change.verified = (
                    verify_ingest(cluster, name, change.after)
                    if kind == "ingest"
                    else verify_search(cluster, name, change.after, target["search"])
                )
            except ClusterError as exc:
                raise ClusterError(
                    f"{kind} pipeline {name} fails on the new version, every pipeline put back as it was: {exc}"
                ) from exc
    except BaseException:
        restore(cluster, changes)
        raise
    return changes


def restore(cluster: Cluster, changes: list[Change]) -> list[str]:
    """Put the previous bodies back (never raises); return what could not be restored."""
    left = []
    for change in reversed(changes):
        if change.changed:
            try:
                _put(cluster, change.kind, change.name, change.before)
            except Exception as exc:  # noqa: BLE001 - restore the rest
                left.append(f"{change.kind} pipeline {change.name}: {exc}")
    return left


def _replacing(old_ids: set[str], new_id: str) -> Callable[[str], str]:
    return lambda model_id: new_id if model_id in old_ids else model_id


def _put(cluster: Cluster, kind: str, name: str, body: dict) -> None:
    put = cluster.client.ingest.put_pipeline if kind == "ingest" else cluster.client.search_pipeline.put
    cluster.call(f"PUT /_{kind}/pipeline/{name}", put, id=name, body=body)


def _field_maps(body: Any, processor: str | None = None):
    """(processor type, field_map) for every processor with a field_map, at any depth."""
    if isinstance(body, list):
        for v in body:
            yield from _field_maps(v, processor)
    elif isinstance(body, dict):
        if isinstance(body.get("field_map"), dict):
            yield processor, body["field_map"]
        for key, value in body.items():
            yield from _field_maps(value, key if isinstance(value, dict) else processor)


def field_map_leaves(field_map: dict, prefix: str = ""):
    """(input path, output path) pairs; a nested map reads and writes inside the object it names."""
    for key, value in field_map.items():
        if isinstance(value, dict):
            yield from field_map_leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", f"{prefix}{value}"


def _set_path(doc: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    doc.setdefault(last, value)


def _get_path(doc: Any, path: str):
    if isinstance(doc, dict) and path in doc:
        return doc[path]
    for part in path.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def verify_ingest(cluster: Cluster, name: str, body: dict) -> dict:
    """``_simulate`` one document: no error, and every ``sparse_encoding`` output field filled."""
    doc: dict = {}
    outputs, produced = [], set()
    for processor, fmap in _field_maps(body):
        for src, dst in field_map_leaves(fmap):
            if src not in produced:  # a field an earlier processor writes (a text_chunking output) is left to it
                _set_path(doc, src, SAMPLE_TEXT)
            produced.add(dst)
            if processor == "sparse_encoding":
                outputs.append(dst)
    res = cluster.call(
        f"POST /_ingest/pipeline/{name}/_simulate",
        cluster.client.ingest.simulate,
        id=name,
        body={"docs": [{"_source": doc}]},
    )
    result = (res.get("docs") or [{}])[0]
    if "error" in result:
        err = result["error"]
        raise ClusterError(f"_simulate failed: {err.get('reason', err) if isinstance(err, dict) else err}")
    source = (result.get("doc") or {}).get("_source") or {}
    filled = {dst: bool(_get_path(source, dst)) for dst in outputs}
    if not outputs or not all(filled.values()):
        raise ClusterError(f"_simulate left the sparse_encoding output empty ({json.dumps(filled)})")
    return {"simulate": "passed", "document": doc, "output_fields": sorted(filled)}


def verify_search(cluster: Cluster, name: str, body: dict, query_model: str) -> dict:
    """A neural_sparse query without a model id through the pipeline, on a one-document temporary index holding the
    new model's own encoding of the query text: it must find that document."""
    enricher_fields = [
        f
        for mapping in _values_of(body, references.FIELD_MODEL_MAP_KEY)
        for f, m in mapping.items()
        if m == query_model
    ]
    field_name = (
        "text_sparse" if any(_values_of(body, "default_model_id")) or not enricher_fields else enricher_fields[0]
    )
    vector = predict(cluster, query_model, [SAMPLE_TEXT])[0]
    doc = {k: v for k, v in vector.items() if v > 0 and k.isalnum()} or {k: v for k, v in vector.items() if v > 0}
    index = f"sparsepack-switch-check-{uuid.uuid4().hex[:8]}"
    try:
        cluster.call(
            f"PUT /{index}",
            cluster.client.indices.create,
            index=index,
            body={
                "settings": {"number_of_shards": 1, "number_of_replicas": 0},
                "mappings": {"properties": {field_name: {"type": "rank_features"}}},
            },
        )
        cluster.call(
            f"PUT /{index}/_doc/1",
            cluster.client.index,
            index=index,
            id=1,
            body={field_name: doc},
            params={"refresh": "true"},
        )
        query = {"query": {"neural_sparse": {field_name: {"query_text": SAMPLE_TEXT}}}}
        hits = cluster.call(
            f"POST /{index}/_search", cluster.client.search, index=index, body=query, params={"search_pipeline": name}
        )["hits"]["hits"]
    finally:
        cluster.call(f"DELETE /{index}", cluster.client.indices.delete, index=index, ok_404=True)
    if not hits or hits[0]["_score"] <= 0:
        raise ClusterError(f"a neural_sparse query on {field_name} through it found nothing")
    return {"test_query": "passed", "field": field_name, "query_text": SAMPLE_TEXT, "score": hits[0]["_score"]}


def _values_of(body: Any, key: str):
    if isinstance(body, list):
        for v in body:
            yield from _values_of(v, key)
    elif isinstance(body, dict):
        for k, v in body.items():
            if k == key:
                yield v
            else:
                yield from _values_of(v, key)


def compare_versions(cluster: Cluster, changes: list[Change], new_document_model: str) -> dict:
    """The new document model vs each previous one the switched ingest pipelines used, on the parity battery (its long
    text shows a different truncation). Documents already indexed keep the old vectors when these differ."""
    old = sorted(
        {m for c in changes if c.kind == "ingest" and c.changed for m in model_ids_in(c.before)} - {new_document_model}
    )
    if not old:
        return {}
    new = predict(cluster, new_document_model, DOCUMENT_BATTERY)
    out = {}
    for model_id in old:
        dep = deployment.read(cluster, model_id)
        if not dep.usable:
            out[model_id] = {
                "compared": False,
                "same_output": None,
                "reason": f"{model_id} is stored as {dep.stored_state} and {dep.summary()}",
            }
            continue
        cmp = compare_maps(predict(cluster, model_id, DOCUMENT_BATTERY), new, PREDICT_TOLERANCE)
        out[model_id] = {
            "compared": True,
            "same_output": cmp["passed"],
            "identical_token_sets": cmp["identical_token_sets"],
            "texts": cmp["texts"],
            "max_abs_diff": cmp["max_abs_diff"],
        }
    return out


def reindex_warning(cluster: Cluster, changes: list[Change], comparison: dict) -> str | None:
    """None when every previous version was shown to give the same output; else how to re-encode old documents."""
    differ = {m: c for m, c in comparison.items() if not c["same_output"]}
    if not differ:
        return None
    switched = [c.name for c in changes if c.kind == "ingest" and c.changed]
    pipes = read_pipelines(cluster)
    new_ids = set().union(*(model_ids_in(c.after) for c in changes if c.kind == "ingest"))
    indices = sorted(
        {
            (r.name, r.via.split("=", 1)[1])
            for r in references.find_in(new_ids, pipes["ingest"], {}, references.index_pipeline_settings(cluster))
            if r.kind == "index" and r.via
        }
    )
    how = "; ".join(
        f'POST _reindex {{"source": {{"index": "{idx}"}}, "dest": {{"index": "{idx}-v2", "pipeline": "{pipe}"}}}} '
        f"(then move your alias), or in place POST {idx}/_update_by_query?pipeline={pipe}"
        for idx, pipe in indices
    ) or (
        f'POST _reindex with "dest": {{"index": NEW, "pipeline": "{switched[0]}"}}, or POST INDEX/_update_by_query?'
        f"pipeline={switched[0]}"
    )
    why = "; ".join(
        f"{m}: "
        + (
            f"identical token sets on {c['identical_token_sets']}/{c['texts']} texts, max |d| {c['max_abs_diff']:.3g}"
            if c["compared"]
            else c["reason"]
        )
        for m, c in differ.items()
    )
    return (
        f"documents indexed before the switch hold the previous version's vectors and the new version's output "
        f"differs ({why}); re-encode them through the pipeline: {how}"
    )
