"""mkdocs hooks of the documentation site (docs/mkdocs.yml): what the pages show that is read from
the code at build time, so it cannot drift from it.

- ``<!-- cli-reference -->`` becomes the ``--help`` of ``vizjax`` and of every subcommand, from
  the argparse parser itself (:func:`vizjax.cli.parser.build_parser`).
- ``<!-- api-reference -->`` becomes one mkdocstrings block per public name of the ``vizjax``
  package (its lazy ``_EXPORTS`` table), documented from the module that defines it; a module's
  block elsewhere (the modules page) leaves those names out, so each has one page.
- The pictures under ``bench/`` (``bench/figures/``, the sheets in ``bench/results/``) are
  served at their repository paths, so a page links ``bench/figures/<name>.png`` (they stay where
  the scripts write them; nothing is copied into docs/).
"""

from __future__ import annotations

import os
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent


def on_files(files, config):
    for png in sorted((ROOT / "bench").rglob("*.png")):
        if not any(part.startswith(".") for part in png.relative_to(ROOT).parts):  # no venvs
            uri = png.relative_to(ROOT).as_posix()
            files.append(File.generated(config, uri, abs_src_path=str(png)))
    return files


def cli_reference() -> str:
    """Markdown: the help of ``vizjax`` and of each of its commands, as argparse prints it."""
    import argparse

    from vizjax.cli.parser import build_parser

    os.environ["COLUMNS"] = "80"  # argparse wraps to the terminal: the page's width, every build
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    parts = ["## vizjax", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, command in sub.choices.items():
        parts += [f"## vizjax {name}", "", "```text", command.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def api_reference() -> str:
    """Markdown: a mkdocstrings block for each public name of ``vizjax``, from where it lives."""
    import vizjax

    parts = []
    for name, module in vizjax._EXPORTS.items():
        parts += [f"::: vizjax.{module}.{name}", ""]
    return "\n".join(parts)


def without_exports(markdown: str) -> str:
    """Each ``::: vizjax.MODULE`` block with an ``options:`` line gets ``filters`` that leave out
    the private names and the names the API page documents (``vizjax._EXPORTS``)."""
    import vizjax

    out = []
    module = None
    for line in markdown.splitlines():
        out.append(line)
        if line.startswith("::: vizjax."):
            module = line.removeprefix("::: vizjax.").strip()
        elif line.strip() == "options:" and module is not None:
            names = [n for n, m in vizjax._EXPORTS.items() if m == module]
            rules = ", ".join(f'"!^{n}$"' for n in ["_", *names]).replace('"!^_$"', '"!^_"')
            out.append(f"{line[: len(line) - len(line.lstrip())]}  filters: [{rules}]")
            module = None
    return "\n".join(out)


def on_page_markdown(markdown, page, config, files):
    if "<!-- cli-reference -->" in markdown:
        markdown = markdown.replace("<!-- cli-reference -->", cli_reference())
    if "<!-- api-reference -->" in markdown:
        markdown = markdown.replace("<!-- api-reference -->", api_reference())
    if "<!-- modules-reference -->" in markdown:
        markdown = without_exports(markdown)
    return markdown
