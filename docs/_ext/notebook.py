"""Jupyter notebooks as pages, executed when the documentation is built.

A ``.ipynb`` source is run from the top with ``nbclient`` (a fresh ``python3`` kernel, in a scratch directory), and
its cells become the page: markdown through ``markdown-it-py`` (its headings become the page's sections, so the
notebook's first heading is the page title), code as highlighted Python, and each cell's outputs below it (text,
PNG images inlined, HTML as it is). A cell that raises fails the build with the cell's number and error.

Configuration (``conf.py`` or ``sphinx-build -D``):

``notebook_execute``
    ``True`` (default). ``False`` renders the stored outputs instead, and says so on the page.
``notebook_execution_dir``
    Where the kernel runs (its working directory), and where the executed notebook is written as
    ``<name>.executed.ipynb``; empty (default): a temporary directory, removed after the run.
"""

from __future__ import annotations

import html
import re
import tempfile
from pathlib import Path

import nbformat
from docutils import nodes
from markdown_it import MarkdownIt
from sphinx.parsers import Parser
from sphinx.util import logging

logger = logging.getLogger(__name__)

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def execute(notebook, workdir: Path, name: str, timeout: int = 600) -> str | None:
    """Run ``notebook`` in place in ``workdir``; the error of the first failing cell, or None."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    try:
        client.execute()
    except CellExecutionError as exc:
        return str(exc)
    finally:
        nbformat.write(notebook, workdir / f"{name}.executed.ipynb")
    return None


class NotebookParser(Parser):
    supported = ("jupyter_notebook",)

    def parse(self, inputstring: str, document: nodes.document) -> None:
        config = document.settings.env.config
        name = Path(document["source"]).stem
        notebook = nbformat.reads(inputstring, as_version=4)
        executed = config.notebook_execute
        if isinstance(executed, str):  # from sphinx-build -D
            executed = executed.strip().lower() not in ("", "0", "false", "no", "off")
        if executed:
            target = config.notebook_execution_dir
            if target:
                Path(target).mkdir(parents=True, exist_ok=True)
                error = execute(notebook, Path(target), name)
            else:
                with tempfile.TemporaryDirectory(prefix="rlae-sc-docs-") as tmp:
                    error = execute(notebook, Path(tmp), name)
            if error:
                logger.warning(
                    f"{name}.ipynb: a cell failed when the notebook was executed:\n{ANSI.sub('', error)}",
                    location=document["source"],
                )
        NotebookRenderer(document, executed).render(notebook)


class NotebookRenderer:
    """Cells to docutils nodes, with markdown headings as nested sections."""

    def __init__(self, document: nodes.document, executed: bool):
        self.document = document
        self.executed = executed
        self.md = MarkdownIt("commonmark").enable("table")
        self.stack: list[tuple[int, nodes.Element]] = [(0, document)]

    @property
    def here(self) -> nodes.Element:
        return self.stack[-1][1]

    def render(self, notebook) -> None:
        note_done = False
        for number, cell in enumerate(notebook.cells, start=1):
            if cell.cell_type == "markdown":
                self.markdown(cell.source)
            elif cell.cell_type == "code":
                self.code(cell, number)
            if not note_done and len(self.stack) > 1:  # under the title
                self.here.append(self.provenance_note())
                note_done = True

    def provenance_note(self) -> nodes.paragraph:
        text = (
            "This page is docs/tutorial.ipynb, executed from the top when the documentation was built; the "
            "outputs below are that run's."
            if self.executed
            else "This page shows the outputs stored in docs/tutorial.ipynb (not executed in this build)."
        )
        para = nodes.paragraph(classes=["notebook-note"])
        para += nodes.emphasis(text=text)
        return para

    def markdown(self, source: str) -> None:
        tokens = self.md.parse(source)
        pending: list = []
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            if tok.type == "heading_open":
                self.flush(pending)
                pending = []
                level = int(tok.tag[1])
                inline = tokens[i + 1]
                self.open_section(level, inline)
                i += 3  # heading_open, inline, heading_close
                continue
            pending.append(tok)
            i += 1
        self.flush(pending)

    def flush(self, tokens: list) -> None:
        if tokens:
            body = self.md.renderer.render(tokens, self.md.options, {})
            if body.strip():
                self.here.append(nodes.raw("", body, format="html"))

    def open_section(self, level: int, inline) -> None:
        while len(self.stack) > 1 and self.stack[-1][0] >= level:
            self.stack.pop()
        title_text = inline.content
        section = nodes.section(ids=[nodes.make_id(title_text)], names=[nodes.fully_normalize_name(title_text)])
        title = nodes.title()
        for child in inline.children or []:
            if child.type == "code_inline":
                title += nodes.literal(text=child.content)
            elif child.type in ("text", "softbreak"):
                title += nodes.Text(child.content or " ")
        section += title
        self.here.append(section)
        self.document.note_implicit_target(section, section)
        self.stack.append((level, section))

    def code(self, cell, number: int) -> None:
        block = nodes.literal_block(cell.source, cell.source, language="python", classes=["notebook-input"])
        self.here.append(block)
        for output in cell.get("outputs", []):
            self.output(output, number)

    def output(self, output, number: int) -> None:
        kind = output.get("output_type")
        if kind == "stream":
            text = ANSI.sub("", output.get("text", ""))
            self.here.append(
                nodes.literal_block(text, text, language="none", classes=[f"notebook-{output.get('name')}"])
            )
        elif kind in ("execute_result", "display_data"):
            data = output.get("data", {})
            if "image/png" in data:
                src = "".join(data["image/png"].split())
                alt = html.escape(data.get("text/plain", f"output of cell {number}"))
                self.here.append(
                    nodes.raw(
                        "",
                        f'<img class="notebook-output" alt="{alt}" src="data:image/png;base64,{src}"/>',
                        format="html",
                    )
                )
            elif "text/html" in data:
                self.here.append(nodes.raw("", data["text/html"], format="html"))
            elif "text/plain" in data:
                text = data["text/plain"]
                self.here.append(nodes.literal_block(text, text, language="none", classes=["notebook-result"]))
        elif kind == "error":
            text = ANSI.sub("", "\n".join(output.get("traceback", [])))
            self.here.append(nodes.literal_block(text, text, language="none", classes=["notebook-error"]))


def setup(app):
    app.add_config_value("notebook_execute", True, "env")
    app.add_config_value("notebook_execution_dir", "", "env")
    app.add_source_suffix(".ipynb", "jupyter_notebook")
    app.add_source_parser(NotebookParser)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
