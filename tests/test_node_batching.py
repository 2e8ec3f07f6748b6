"""What a document artifact receives from the node when the ingest processor batches: a probe artifact writes the
shape of its input into its output, and the stored vectors say how ML Commons called it. The package's proofs check
one document per call and a padded batch; this pins which of the two the node really does (docs/templates.md)."""

import io
import zipfile
from typing import Dict  # noqa: UP035  (TorchScript's type annotations)

import torch
from conftest import cluster_for, conn, drop_group, with_document_module
from torch import Tensor

from sparsepack.contract.formats import for_format
from sparsepack.packaging.parity import DjlStyleTokenizer
from sparsepack.rollout.options import ReleaseOptions
from sparsepack.rollout.run import release
from sparsepack.templates import render

BATCH, PADDED, OWN = 5, 6, 7  # vocabulary ids whose weights carry the input's batch size, padded and real length


class ShapeProbe(torch.nn.Module):
    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.slots = [BATCH, PADDED, OWN]

    def forward(self, inputs: Dict[str, Tensor]) -> Dict[str, Tensor]:  # noqa: UP006
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        out = torch.zeros(ids.shape[0], self.vocab_size)
        out[:, self.slots[0]] = float(ids.shape[0])
        out[:, self.slots[1]] = float(ids.shape[1])
        out[:, self.slots[2]] = mask.sum(dim=1).float()
        return {"output": out}


def test_the_node_calls_the_artifact_once_per_document_even_with_batch_size(node_3x, package_factory, tmp_path):
    import json

    manifest, cached = package_factory("bert-if-log1p")
    pkg = tmp_path / "probe"
    tokenizer = with_document_module(cached, manifest, pkg, lambda tok: ShapeProbe(len(tok["model"]["vocab"])))
    doc = next(a for a in manifest["artifacts"] if a["role"] == "document" and a["file"].endswith(".zip"))
    with zipfile.ZipFile(pkg / doc["file"]) as zf:
        probe = torch.jit.load(io.BytesIO(zf.read(next(n for n in zf.namelist() if n.endswith(".pt")))))
    padded = {
        "input_ids": torch.ones(2, 9, dtype=torch.long),
        "attention_mask": torch.tensor([[1] * 9, [1] * 4 + [0] * 5]),
    }
    assert probe(padded)["output"][:, [BATCH, PADDED, OWN]].tolist() == [[2, 9, 9], [2, 9, 4]]  # it would show a batch
    cl = cluster_for(node_3x)
    group = "test-node-batching"
    report = release(str(pkg), conn(node_3x), ReleaseOptions(group=group, smoke=False, progress=False, timeout=300))
    try:
        assert report["passed"], report.get("error")
        view = for_format(manifest, "torchscript")
        model_id = report["model_ids"]["document"]
        pipe, index = "test-node-batching-ingest", "test-node-batching"
        cl.request(
            "PUT",
            f"/_ingest/pipeline/{pipe}",
            body=render("ingest-pipeline", view, "3.6", model_id=model_id, batch_size=8),
        )
        cl.request("PUT", f"/{index}", body=render("index-mapping", view, "3.6", ingest_pipeline=pipe))
        words = [w for w in tokenizer["model"]["vocab"] if w.isalpha() and len(w) > 2][:40]
        texts = [" ".join(words[: 2 + 3 * i]) for i in range(12)]  # 12 lengths, so a padded batch would show
        lines = []
        for i, text in enumerate(texts):
            lines += [json.dumps({"index": {"_index": index, "_id": str(i)}}), json.dumps({"text": text})]
        res = cl.request("POST", "/_bulk", body="\n".join(lines) + "\n", params={"refresh": "true"})
        assert not res["errors"], res["items"][:2]
        hits = cl.request("POST", f"/{index}/_search", body={"size": 20})["hits"]["hits"]
        assert len(hits) == len(texts)
        token = {i: t for t, i in tokenizer["model"]["vocab"].items()}
        tok = DjlStyleTokenizer(tokenizer)
        seen = []
        for hit in hits:
            vector = hit["_source"]["text_sparse"]
            shape = (vector[token[BATCH]], vector[token[PADDED]], vector[token[OWN]])
            own = len(tok.ids(texts[int(hit["_id"])]))
            seen.append(shape)
            assert shape == (1.0, float(own), float(own)), (hit["_id"], shape, own)
        assert len({s[1] for s in seen}) == len(texts)  # each its own length: nothing padded to a batch maximum
    finally:
        cl.request("DELETE", "/test-node-batching", ok_404=True)
        cl.request("DELETE", "/_ingest/pipeline/test-node-batching-ingest", ok_404=True)
        drop_group(cl, group)
