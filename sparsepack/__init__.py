"""sparsepack: get OpenSearch neural sparse models into production.

The Python API is five names, imported on first use (``import sparsepack`` loads no ML library)::

    sparsepack.package   trace a SparseEncoder into ML Commons zips with a manifest and parity proofs
    sparsepack.verify    re-prove a package's artifacts against its source model on this machine
    sparsepack.render    the JSON body a cluster call needs, from a template gated by OpenSearch version
    sparsepack.release   preflight, register, deploy and smoke-test a package (or a model) on a cluster
    sparsepack.Manifest  a package's validated manifest
"""

__version__ = "0.1.0"

# Public name -> (module, attribute): where each lives today. Moving one means editing this table only.
_API = {
    "package": ("sparsepack.packaging.package", "package"),
    "verify": ("sparsepack.packaging.verify", "verify_package"),
    "render": ("sparsepack.templates", "render"),
    "release": ("sparsepack.rollout.run", "release"),
    "Manifest": ("sparsepack.contract.manifest", "Manifest"),
}

__all__ = ["__version__", *_API]

# One runnable example per name (the test suite runs each; ``release`` against a real cluster). Globals the examples
# expect: model_dir (a SparseEncoder folder), out_dir (a fresh path), cluster_url.
EXAMPLES = {
    "package": """
>>> import sparsepack
>>> manifest = sparsepack.package(model_dir, out_dir, log=lambda message: None)
>>> manifest["parity"]["document"]["max_abs_diff"] <= manifest["parity"]["document"]["tolerance"]
True
""",
    "verify": """
>>> report = sparsepack.verify(out_dir)
>>> report["passed"], report["devices"][0]
(True, 'cpu')
""",
    "Manifest": """
>>> from sparsepack.contract.package_dir import load_package
>>> loaded = load_package(out_dir)
>>> isinstance(loaded, sparsepack.Manifest), loaded.name == manifest["name"]
(True, True)
""",
    "render": """
>>> body = sparsepack.render("ingest-pipeline", manifest, "3.6", model_id="abc")
>>> body["processors"][-1]["sparse_encoding"]["model_id"]
'abc'
""",
    "release": """
>>> from sparsepack.registry.connection import ConnectionOptions
>>> from sparsepack.rollout.options import ReleaseOptions
>>> report = sparsepack.release(out_dir, ConnectionOptions(url=cluster_url), ReleaseOptions(group="api-example", progress=False))
>>> report["passed"], "document" in report["model_ids"]
(True, True)
""",
}

__doc__ += "\nExamples:\n" + "".join(EXAMPLES.values())


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'sparsepack' has no attribute {name!r}")
    import importlib

    module, attribute = _API[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # resolved once
    return value


def __dir__():
    return sorted([*globals(), *_API])
