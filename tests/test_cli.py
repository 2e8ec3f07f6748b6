"""The command line itself: exit codes, flag names and their deprecated spellings, help texts, the lazy Python API,
and which commands keep torch out. No cluster here except the release example of the API."""

from __future__ import annotations

import argparse
import doctest
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import PORT_BASE, cluster_for, default_signals, drop_group

import sparsepack
from sparsepack import cli
from sparsepack.errors import ClusterError, LocalEnvironmentError, ParityError, QualityGateError, SparsepackError
from sparsepack.registry.references import InUseError

CLOSED_URL = f"http://127.0.0.1:{PORT_BASE + 148}"  # nothing listens there


def _raise(exc):
    def run(args):
        raise exc

    return run


def _sigterm(args):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # the handler raises long before this ends
    return 0


# (name, what the `render` command's run does instead, exit code)
FAULTS = [
    ("ok", lambda args: 0, 0),
    ("unexpected", _raise(RuntimeError("boom\nsecond line")), 1),
    ("bad input", _raise(SparsepackError("--set x: no such variable")), 2),
    ("parity", _raise(ParityError("document parity failed")), 3),
    ("quality gate", _raise(QualityGateError("no int8 variant passes", figures={"ndcg_at_10": 0.9})), 3),
    ("cluster", _raise(ClusterError("deploy failed with HTTP 503", status=503)), 4),
    ("model in use", _raise(InUseError("delete m1", [])), 4),
    ("local environment", _raise(LocalEnvironmentError("no Java 21 found")), 5),
    ("interrupted", _raise(KeyboardInterrupt()), 130),
    ("terminated", _sigterm, 130),
]


@pytest.mark.parametrize("name, fault, code", FAULTS, ids=[f[0] for f in FAULTS])
def test_exit_codes(monkeypatch, capsys, name, fault, code):
    monkeypatch.delenv("SPARSEPACK_DEBUG", raising=False)
    monkeypatch.setattr(cli.render, "run", fault)
    assert cli.main(["render", "cluster-settings"]) == code
    lines = capsys.readouterr().err.splitlines()
    if code == 1:
        assert lines == [
            "sparsepack: unexpected error: RuntimeError: boom (rerun with SPARSEPACK_DEBUG=1 for the traceback)"
        ]
    elif code in (2, 3, 4, 5):
        assert len(lines) == 1 and lines[0].startswith("sparsepack: error: "), lines
    elif code == 130:
        assert lines == ["sparsepack: interrupted"]


def test_debug_shows_the_traceback(monkeypatch, capsys):
    monkeypatch.setenv("SPARSEPACK_DEBUG", "1")
    monkeypatch.setattr(cli.render, "run", _raise(RuntimeError("boom")))
    assert cli.main(["render", "cluster-settings"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "raise exc" in err


def test_real_commands_exit_0_and_2(capsys):
    assert cli.main(["render", "cluster-settings", "--opensearch-version", "3.6"]) == 0
    assert "persistent" in json.loads(capsys.readouterr().out)
    assert cli.main(["render", "no-such-template"]) == 2
    assert "unknown template 'no-such-template'" in capsys.readouterr().err


def test_signal_handler_is_restored(monkeypatch):
    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(cli.render, "run", lambda args: 0)
    cli.main(["render", "cluster-settings"])
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_local_node_that_does_not_come_up_is_exit_5(monkeypatch, capsys):
    """The node code raises ClusterError for a start timeout today; a local start failing is this machine's problem."""
    from sparsepack.node import lifecycle as cluster

    def slow_start(*args, **kwargs):
        raise ClusterError("OpenSearch not up after 1s (not healthy); raise --timeout on a busy machine")

    monkeypatch.setattr(cluster, "start", slow_start)
    assert cli.main(["node", "start", "--port", str(PORT_BASE + 147), "--timeout", "1"]) == 5
    assert "OpenSearch not up after 1s" in capsys.readouterr().err


def test_node_count_is_checked_before_anything_starts(monkeypatch, capsys):
    from sparsepack.node import lifecycle as cluster

    monkeypatch.setattr(cluster, "start", _raise(AssertionError("must not start")))
    assert cli.main(["node", "start", "--node-count", "9"]) == 2
    assert "--node-count 9: use 1 to 4" in capsys.readouterr().err


def test_flag_hint_from_the_errors_parameter(monkeypatch, capsys):
    monkeypatch.setattr(
        cli.render, "run", _raise(SparsepackError("target version 'x' is not MAJOR.MINOR", parameter="target_version"))
    )
    assert cli.main(["render", "cluster-settings"]) == 2
    assert capsys.readouterr().err.strip().endswith("(flag --opensearch-version)")
    monkeypatch.setattr(
        cli.render, "run", _raise(SparsepackError("use --opensearch-version 3.6", parameter="target_version"))
    )
    cli.main(["render", "cluster-settings"])
    assert "(flag" not in capsys.readouterr().err  # already named: not twice


# (argv with the old spelling, dest, value, new spelling)
ALIASES = [
    (["package", "m", "-o", "o", "--opensearch", "3.x"], "opensearch_version", "3.x", "--opensearch-version"),
    (["release", "t", "--opensearch", "2.x"], "opensearch_version", "2.x", "--opensearch-version"),
    (["render", "x", "--target-version", "3.0"], "opensearch_version", "3.0", "--opensearch-version"),
    (["node", "start", "--version", "2.19.6"], "opensearch_version", "2.19.6", "--opensearch-version"),
    (["demo", "--version", "2.19.6"], "opensearch_version", "2.19.6", "--opensearch-version"),
    (["node", "start", "--nodes", "2"], "node_count", 2, "--node-count"),
    (["package", "m", "-o", "o", "--verify-devices", "cpu"], "devices", "cpu", "--devices"),
    (["release", "t", "--verify-devices", "cpu"], "devices", "cpu", "--devices"),
]


@pytest.mark.parametrize("argv, dest, value, new", ALIASES, ids=[" ".join(a[0][:2] + a[0][-2:-1]) for a in ALIASES])
def test_deprecated_spellings_work_and_warn(capsys, argv, dest, value, new):
    args = cli.build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    old = argv[-2]
    assert capsys.readouterr().err.splitlines() == [
        f"sparsepack: warning: {old} is deprecated; use {new} (the old spelling goes in the next release)"
    ]
    renamed = cli.build_parser().parse_args([new if a == old else a for a in argv])
    assert getattr(renamed, dest) == value and capsys.readouterr().err == ""


def test_top_level_version_is_sparsepacks(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"sparsepack {sparsepack.__version__}"


def test_defaults():
    parse = cli.build_parser().parse_args
    assert parse(["render", "x"]).opensearch_version == "3.6"  # the newest line with artifacts, and the one tested
    assert parse(["node", "start"]).node_count == 1
    assert parse(["release", "t", "--nodes", "a,b"]).nodes == "a,b"  # release: node ids, unchanged
    assert parse(["package", "m", "-o", "o"]).devices == "auto"


# OpenSearch ids are URL-safe base64: some start with '-' (a full-suite run drew one and `smoke --document-model ID`
# exited 2 with "expected one argument").
DASH_ID, DASH_ID_2 = "-lvhwX5QBcDXfuE8S-Vd", "-Q2bWmZ4BcDXfuE8xU1a"
DASH_CASES = [
    (["smoke", "p", "--document-model", DASH_ID, "--query-model", DASH_ID_2, "--json"], "document_model", DASH_ID),
    (["smoke", "p", "--document-model", DASH_ID, "--query-model", DASH_ID_2, "--json"], "query_model", DASH_ID_2),
    (["smoke", "p", "--doc", DASH_ID], "document_model", DASH_ID),  # argparse's abbreviation of the flag
    (["migrate", "docs", "--document-model", DASH_ID, "--query-model", DASH_ID_2], "document_model", DASH_ID),
    (["undeploy", DASH_ID, "plain-id", "--url", "http://x"], "model_ids", [DASH_ID, "plain-id"]),
    (["delete", "plain-id", "--url", "http://x", DASH_ID], "model_ids", ["plain-id", DASH_ID]),
    (["release", "p", "--password", "-s3cret", "--url", "http://x"], "password", "-s3cret"),
    (["render", "query", "--set", "model_id=-x", "--set", "size=3"], "set", ["model_id=-x", "size=3"]),
]


@pytest.mark.parametrize("argv, dest, value", DASH_CASES, ids=[f"{c[0][0]}-{c[1]}" for c in DASH_CASES])
def test_ids_that_start_with_a_dash_are_values(argv, dest, value):
    assert getattr(cli.parse_args(argv), dest) == value
    assert getattr(cli.parse_args([a.replace(DASH_ID, DASH_ID[1:]) for a in argv]), dest) == (
        [v.replace(DASH_ID, DASH_ID[1:]) for v in value]
        if isinstance(value, list)
        else value.replace(DASH_ID, DASH_ID[1:])
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["smoke", "p", "--document-model", "--json"], "argument --document-model: expected one argument"),
        (["undeploy", "a", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["smoke", "p", "--document-model"], "argument --document-model: expected one argument"),
    ],
)
def test_a_missing_value_or_a_mistyped_flag_is_still_an_error(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        cli.parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_dash_id_reaches_the_command():
    """The installed command line, end to end: the id gets past argparse to the cluster call (here a closed port)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sparsepack",
            "undeploy",
            DASH_ID,
            "--url",
            "http://127.0.0.1:9",
            "--request-timeout",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode not in (0, 2) and "usage:" not in proc.stderr, proc.stderr
    assert "127.0.0.1:9" in proc.stderr


def test_quantize_int8_alone_packages_onnx(monkeypatch, capsys, tmp_path):
    from sparsepack.packaging import input_checks, package

    calls = []
    monkeypatch.setattr(input_checks, "check_model_source", lambda model: None)
    monkeypatch.setattr(package, "package", lambda model, out, **kw: calls.append(kw) or {"stub": True})
    assert cli.main(["package", "m", "-o", str(tmp_path / "p"), "--quantize", "int8", "--json"]) == 0
    assert calls[-1]["artifact_format"] == "onnx" and calls[-1]["quantize"] == "int8"
    assert "--quantize int8 builds an ONNX artifact: packaging with --format onnx" in capsys.readouterr().err
    cli.main(["package", "m", "-o", str(tmp_path / "p"), "--quantize", "int8", "--format", "both"])
    assert calls[-1]["artifact_format"] == "both"
    cli.main(["package", "m", "-o", str(tmp_path / "p")])
    assert calls[-1]["artifact_format"] == "torchscript" and calls[-1]["quantize"] is None


def test_list_group_is_a_name_and_group_id_an_id(monkeypatch, capsys):
    from sparsepack.cli import models as list_cmd
    from sparsepack.registry import index_models, models

    seen = []
    monkeypatch.setattr(list_cmd, "connect", lambda args: "cluster")
    monkeypatch.setattr(models, "find_group", lambda cl, name: {"my-group": "G1"}.get(name))
    monkeypatch.setattr(models, "get_group", lambda cl, gid: {"name": "old"} if gid == "G2" else None)
    monkeypatch.setattr(models, "list_models", lambda cl, group: seen.append(group) or [])
    monkeypatch.setattr(index_models, "index_provenance", lambda cl: {})
    assert cli.main(["list", "--group", "my-group"]) == 0 and seen[-1] == "G1"
    assert cli.main(["list", "--group-id", "G7"]) == 0 and seen[-1] == "G7"
    assert capsys.readouterr().err == ""
    assert cli.main(["list", "--group", "G2"]) == 0 and seen[-1] == "G2"  # an id the old way: still works, warns
    assert "--group with a model group id is deprecated; use --group-id" in capsys.readouterr().err
    assert cli.main(["list", "--group", "nope"]) == 2
    assert "no model group named 'nope'" in capsys.readouterr().err


def test_list_shows_which_model_each_index_holds(monkeypatch, capsys):
    from sparsepack.cli import models as list_cmd
    from sparsepack.registry import index_models, models

    row = {"model_id": "M2", "state": "DEPLOYED", "function_name": "SPARSE_ENCODING", "name": "pkg", "version": "2"}
    monkeypatch.setattr(list_cmd, "connect", lambda args: "cluster")
    monkeypatch.setattr(models, "list_models", lambda cl, group: [{**row, "loaded": "loaded on 1 of 1 node"}])
    mappings = {
        "docs-v2": {"_meta": {"sparsepack": {"document_model": {"model_id": "M2"}, "migrated_from": "docs-v1"}}},
        "docs-v1": {"properties": {"body": {"type": "semantic", "model_id": "M1"}}},
        "plain": {"properties": {"text": {"type": "text"}}},
    }
    monkeypatch.setattr(
        index_models,
        "index_provenance",
        lambda cl: {i: f for i, m in mappings.items() if (f := index_models.recorded_models(m))},
    )
    assert cli.main(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["vector_indices"] == ["docs-v2"]
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "docs-v2  M2 (pkg v2; recorded in _meta)" in out
    assert "docs-v1  M1 (a model not on this cluster; recorded in semantic field)" in out
    assert "plain" not in out


def _walk(parser: argparse.ArgumentParser, path: str):
    for action in parser._actions:
        yield path, action
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")


def test_every_option_has_one_line_help():
    missing = []
    for path, action in _walk(cli.build_parser(), "sparsepack"):
        text = action.help
        if not text or text == argparse.SUPPRESS or "\n" in text or len(text) > 120:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}: {text!r}")
    assert missing == []


def test_python_dash_m_sparsepack():
    proc = subprocess.run([sys.executable, "-m", "sparsepack", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"sparsepack {sparsepack.__version__}"
    proc = subprocess.run([sys.executable, "-m", "sparsepack.cli", "render", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown template" in proc.stderr


def test_api_names_are_lazy():
    code = (
        "import sys, sparsepack; before = 'torch' in sys.modules; sparsepack.render; sparsepack.Manifest; "
        "print(before, 'torch' in sys.modules, sorted(sparsepack.__all__))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.split(" ", 2)[:2] == ["False", "False"], proc.stdout + proc.stderr
    assert "'Manifest', '__version__', 'package', 'release', 'render', 'verify'" in proc.stdout
    with pytest.raises(AttributeError):
        sparsepack.no_such_name  # noqa: B018


def _run_examples(names, globs):
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for name in names:
        test = parser.get_doctest(sparsepack.EXAMPLES[name], globs, f"sparsepack.{name}", None, 0)
        result = runner.run(test, clear_globs=False)
        assert result.failed == 0, f"the example of sparsepack.{name} fails"
        globs.update(test.globs)  # a DocTest runs on a copy: hand what it defined to the next example


def test_api_examples(model_factory, tmp_path):
    globs = {
        "sparsepack": sparsepack,
        "model_dir": str(model_factory("bert-if-log1p")),
        "out_dir": str(tmp_path / "pkg"),
    }
    _run_examples(["package", "verify", "Manifest", "render"], globs)
    assert set(sparsepack.EXAMPLES) == set(sparsepack.__all__) - {"__version__"}


@pytest.mark.cluster
def test_api_release_example(node_3x, package_factory):
    manifest, root = package_factory("bert-if-log1p")
    try:
        _run_examples(
            ["release"], {"sparsepack": sparsepack, "out_dir": str(root), "manifest": manifest, "cluster_url": node_3x}
        )
    finally:
        drop_group(cluster_for(node_3x), "api-example")


TORCH_PROBE = textwrap.dedent("""
    import json, sys
    argv = json.loads(sys.argv[1])
    from sparsepack.cli import main
    rc = main(argv)
    print(json.dumps({"rc": rc, "torch": "torch" in sys.modules}))
""")


@pytest.mark.parametrize("command", ["serve", "render", "preflight", "list", "migrate", "doctor"])
def test_command_does_not_import_torch(command, package_factory):
    _, root = package_factory("bert-if-log1p")
    argv = {
        "serve": ["serve", str(root), "--port", str(PORT_BASE + 146)],
        "render": ["render", "ingest-pipeline", "--manifest", str(root), "--set", "model_id=m"],
        "preflight": ["preflight", "--url", CLOSED_URL, "--manifest", str(root)],
        "list": ["list", "--url", CLOSED_URL, "--group", "g"],
        "migrate": ["migrate", "docs", "--document-model", "m", "--url", CLOSED_URL],
        "doctor": ["doctor", "--url", CLOSED_URL],
    }[command]
    proc = subprocess.Popen(
        [sys.executable, "-c", TORCH_PROBE, json.dumps(argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,  # a suite run in the background hands its children an ignored SIGINT
    )
    try:
        if command == "serve":  # serves until interrupted: Ctrl-C once it is up, its imports all done
            assert proc.stdout.readline().startswith("serving "), proc.stderr.read()
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["rc"] in (0, 4, 130), err  # 4: nothing listens at CLOSED_URL, after the command's imports
    assert result["torch"] is False


def test_a_model_id_the_cluster_does_not_have_is_named_as_such():
    """`smoke --document-model` with a wrong id once said "stored as None but loaded on 0 of 0 nodes; deploy it again"."""
    from sparsepack.registry.deployment import Deployment, NotLoadedError

    message = str(NotLoadedError(Deployment("-NoSuchModelAbCdEf12", None), "smoke test of the document model"))
    assert message == (
        "smoke test of the document model: no model -NoSuchModelAbCdEf12 on this cluster; check the id (`sparsepack list`)"
    )
    stored = str(NotLoadedError(Deployment("m1", "DEPLOYED"), "smoke"))
    assert "stored as DEPLOYED" in stored and "deploy it again" in stored
