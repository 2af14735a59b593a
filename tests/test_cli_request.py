"""``vizjax atlas``'s request, built once at the door (vizjax.cli.options.atlas_request): the
parsed arguments stay in the CLI, the run and the plan take the checked request and check
nothing again."""

import argparse
import ast
import dataclasses
from pathlib import Path

import pytest
import tiny_network

from vizjax import run
from vizjax.cli import build_parser
from vizjax.cli.options import AtlasRequest, atlas_request
from vizjax.errors import VizjaxError

PACKAGE = Path(__file__).resolve().parent.parent / "vizjax"
ARGS = ["atlas", "--layer", "block1_conv1", "--size", "32", "--steps", "2", "--batch", "2"]


def namespace_uses(source: str) -> list[str]:
    """Where a module's source imports argparse, reads ``args.``, or names a ``Namespace``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
            found.append(f"line {node.lineno}: import argparse")
        elif isinstance(node, ast.ImportFrom) and node.module == "argparse":
            found.append(f"line {node.lineno}: from argparse import")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "args" or node.attr == "Namespace":
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Name) and node.id == "Namespace":
            found.append(f"line {node.lineno}: Namespace")
    return found


def test_no_module_outside_the_cli_receives_the_parsed_arguments():
    outside = {
        str(f.relative_to(PACKAGE)): uses
        for f in sorted(PACKAGE.rglob("*.py"))
        if f.relative_to(PACKAGE).parts[0] != "cli"
        and (uses := namespace_uses(f.read_text(encoding="utf-8")))
    }
    assert outside == {}, f"the parsed arguments left vizjax/cli/: {outside}"
    # The check itself sees what it looks for (the CLI does use them).
    assert namespace_uses((PACKAGE / "cli" / "options.py").read_text(encoding="utf-8"))


def test_the_request_is_built_once_checked_and_frozen(tmp_path, tiny_weights):
    out = tmp_path / "a.h5"
    args = build_parser().parse_args(
        [*ARGS, "--layer", "block1_conv1", "--filters", "0,2,1,2", "--out", str(out)]
        + tiny_network.ARGS
    )
    req = atlas_request(args)
    assert isinstance(req, AtlasRequest) and not req.plan and not req.json
    assert req.job.coordinator is None and not req.job.auto
    r = req.run
    assert r.out == out and r.layers == ("block1_conv1",)  # the repeated layer once
    assert r.filters == "0,2,1,2" and r.wanted == {"block1_conv1": [0, 2, 1]}
    assert r.recipe.size == (32, 32) and r.recipe.steps == 2 and r.execution.batch == 2
    assert r.weights.name == tiny_network.NAME and r.start.shape == (32, 32, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.plan = True  # type: ignore[misc]
    assert not out.exists()  # building the request writes nothing


def test_a_bad_request_fails_at_the_door_in_one_line(tmp_path, tiny_weights):
    args = build_parser().parse_args(
        [*ARGS, "--filters", "0:999", "--out", str(tmp_path / "a.h5")] + tiny_network.ARGS
    )
    with pytest.raises(VizjaxError, match="goes past block1_conv1's"):
        atlas_request(args)
    assert list(tmp_path.iterdir()) == []


def test_the_run_and_the_plan_check_nothing_again(tmp_path, tiny_weights, monkeypatch):
    from vizjax.plan import make_plan

    args = build_parser().parse_args(
        [*ARGS, "--filters", "0:2", "--out", str(tmp_path / "a.h5"), "--quiet"] + tiny_network.ARGS
    )
    req = atlas_request(args)

    def climbed_back(*a, **k):
        raise AssertionError("a checked request was checked again")

    monkeypatch.setattr(run, "checked_request", climbed_back)
    monkeypatch.setattr(run, "parse_filters", climbed_back)
    assert [row["todo"] for row in make_plan(req.run)["layers"]] == [2]
    summary = run.run_request(req.run, quiet=True)
    assert summary["layers"]["block1_conv1"]["computed"] == 2
    # The Python API builds the same request itself (its public signature unchanged).
    with pytest.raises(AssertionError, match="checked again"):
        run.run_atlas(tmp_path / "b.h5", ["block1_conv1"], "0:2", req.run.recipe, tiny_weights)


def test_a_namespace_check_finds_what_it_looks_for():
    assert namespace_uses("import argparse\n") and namespace_uses("def f(a):\n    return args.x\n")
    assert namespace_uses("def f(a: argparse.Namespace): pass\n")
    assert not namespace_uses("def f(req):\n    return req.out\n")
    assert isinstance(build_parser().parse_args(["layers"]), argparse.Namespace)
