"""Numbers from the committed benchmark records, read when the documentation is built.

The documentation quotes no measured number by hand: each one names the JSON record under ``benchmarks/`` it comes
from and the path of the value inside it, and this extension looks the value up at build time. A record that
changes changes the page; a path that no longer resolves stops the build (``sphinx-build -W``).

Paths
    Keys separated by dots: ``tasks.pbmc3.methods.scvi.total``. A list is indexed by a number (``results.0``) or
    by a filter in brackets that selects its one element whose fields equal the given values
    (``rows[method=rlae_sc,n_cells=100000].seconds``; values are compared as text). Inside a table row,
    ``@key`` is the row's key (rows taken from a mapping), ``@index`` its position, and a path that starts with
    ``/`` is looked up from the top of the record instead of the row; after a key, ``@key`` and ``@index`` pick the
    element of that name or position (``/pooled_site_ari.@index``). ``*`` applies the rest of the path to every
    element of a list; ``@max``, ``@min``, ``@sum`` and ``@len`` reduce the list reached so far, and ``@flat`` joins
    a list of lists into one (``stages.*.peak_rss_gb.@max``).

Formats
    Python format specifications (``.3f``, ``,d``, ``.2e``), and three forms of their own: ``1-:SPEC`` writes a
    value close to 1 as ``1 - d`` with ``d`` in SPEC (``1-:.1e`` gives ``1 - 2.5e-12``); ``pct:SPEC`` writes
    ``100 x`` value followed by ``%``; ``time`` writes seconds as ``4 min 43 s`` (under a minute: ``27.8 s``).
    Without a format, floats take ``.3g``, integers ``,d`` and text is written as it is.

Markup
    ``:record:`integration.json:tasks.pbmc3.methods.scvi.total|.3f``` writes one value. The ``record-table``
    directive writes a table (see :class:`RecordTable`) whose caption states where its record came from: the date,
    commit, machine, CPU count, load and command stored in the record, and which of these it does not store.
    ``record-source`` writes that statement alone, as a paragraph.

:func:`resolve` and :func:`format_value` are also used by ``tests/test_docs.py`` to check the numbers quoted in
the README against the same records.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive, directives

RECORDS = Path(__file__).resolve().parents[2] / "benchmarks"

_SEGMENT = re.compile(r"\[([^\]]*)\]|([^.\[\]]+)")


class RecordError(LookupError):
    """A record, or a path inside it, that does not resolve."""


def load(name: str, root: Path = RECORDS) -> Any:
    """The parsed JSON record ``benchmarks/<name>`` (``name`` with or without ``.json``)."""
    path = root / (name if name.endswith(".json") else f"{name}.json")
    if not path.is_file():
        raise RecordError(f"no benchmark record {path}")
    return json.loads(path.read_text())


def segments(path: str) -> list[str]:
    """A path cut into keys; a filter keeps its brackets (``rows[method=x].seconds`` -> rows, [method=x], seconds)."""
    out, pos = [], 0
    while pos < len(path):
        if path[pos] == ".":
            pos += 1
            continue
        match = _SEGMENT.match(path, pos)
        if match is None:
            raise RecordError(f"cannot read the path {path!r} at {path[pos:]!r}")
        out.append(f"[{match.group(1)}]" if match.group(1) is not None else match.group(2))
        pos = match.end()
    return out


def _matches(item: Any, conditions: list[tuple[str, str]]) -> bool:
    return isinstance(item, dict) and all(k in item and str(item[k]) == v for k, v in conditions)


def resolve(record: Any, path: str, *, row: Any = None, key: Any = None, index: int | None = None) -> Any:
    """The value at ``path`` in ``record`` (see the module's docstring for the path syntax).

    ``row``, ``key`` and ``index`` are a table row, its key and its position: a path is then looked up in the row
    unless it starts with ``/``.
    """
    if path.startswith("/") or row is None:
        value, path = record, path.lstrip("/")
    else:
        value = row
    if path in ("", "@"):
        return value
    return _walk(value, segments(path), [], key, index)


def _walk(value: Any, segs: list[str], where: list[str], key: Any, index: int | None) -> Any:
    for n, seg in enumerate(segs):
        where = [*where, seg]
        here = ".".join(where)
        if seg == "*":
            if not isinstance(value, list):
                raise RecordError(f"{here}: * needs a list")
            rest = segs[n + 1 :]
            stop = next((i for i, s in enumerate(rest) if s in _REDUCE), len(rest))
            value = [_walk(item, rest[:stop], where, key, index) for item in value]
            return _walk(value, rest[stop:], where, key, index)
        if seg in ("@key", "@index"):
            pick = key if seg == "@key" else index
            if len(where) == 1:  # at the start of a path: the row's own key or position
                value = pick
            elif isinstance(value, dict) and pick in value:
                value = value[pick]
            elif isinstance(value, list) and isinstance(pick, int) and -len(value) <= pick < len(value):
                value = value[pick]
            else:
                raise RecordError(f"{here}: no element {pick!r}")
        elif seg in _REDUCE:
            if not isinstance(value, list) or not value:
                raise RecordError(f"{here}: {seg} needs a non-empty list")
            value = _REDUCE[seg](value)
        elif seg.startswith("["):
            conditions = [tuple(c.split("=", 1)) for c in seg[1:-1].split(",") if c]
            if not isinstance(value, list) or any(len(c) != 2 for c in conditions):
                raise RecordError(f"{here}: a filter [k=v,...] needs a list of mappings")
            found = [item for item in value if _matches(item, conditions)]
            if len(found) != 1:
                raise RecordError(f"{here}: {len(found)} elements match, not one")
            value = found[0]
        elif isinstance(value, list):
            if not re.fullmatch(r"-?\d+", seg):
                raise RecordError(f"{here}: a list takes a number or a filter, not {seg!r}")
            try:
                value = value[int(seg)]
            except IndexError:
                raise RecordError(f"{here}: the list has {len(value)} elements") from None
        elif isinstance(value, dict):
            if seg not in value:
                raise RecordError(f"{here}: no key {seg!r} (keys: {', '.join(map(str, value))})")
            value = value[seg]
        else:
            raise RecordError(f"{here}: {type(value).__name__} has no key {seg!r}")
    return value


_REDUCE = {"@max": max, "@min": min, "@len": len, "@sum": sum, "@flat": lambda v: [x for part in v for x in part]}


def select_rows(record: Any, path: str) -> list[tuple[Any, Any]]:
    """The ``(key, row)`` pairs of a table: the items of a mapping, or the elements of a list (keys: positions).

    A filter at the end of ``path`` keeps every element that matches, in order.
    """
    filt = None
    match = re.fullmatch(r"(.*)\[([^\]]*)\]", path)
    if match:
        path, filt = match.group(1), [tuple(c.split("=", 1)) for c in match.group(2).split(",") if c]
    value = resolve(record, path)
    if isinstance(value, dict) and filt is None:
        return list(value.items())
    if isinstance(value, list):
        rows = list(enumerate(value))
        if filt is not None:
            rows = [(i, item) for i, item in rows if _matches(item, filt)]
        if not rows:
            raise RecordError(f"{path}: no rows")
        return rows
    raise RecordError(f"{path}: rows need a list or a mapping")


def format_value(value: Any, spec: str | None = None) -> str:
    """``value`` written with ``spec`` (see the module's docstring)."""
    if value is None:
        return "none"
    if spec in (None, ""):
        if isinstance(value, bool) or isinstance(value, str):
            return str(value)
        if isinstance(value, int):
            return f"{value:,d}"
        if isinstance(value, float):
            return f"{value:.3g}"
        return str(value)
    if spec == "time":
        seconds = float(value)
        if seconds < 60:
            return f"{seconds:.1f} s"
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s"
    if spec.startswith("1-:"):
        return f"1 - {1.0 - float(value):{spec[3:]}}"
    if spec.startswith("pct:"):
        return f"{100.0 * float(value):{spec[4:]}}%"
    try:
        return format(value, spec)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"cannot write {value!r} with format {spec!r}: {exc}") from None


def parse_reference(text: str) -> tuple[str, str, str | None]:
    """``file.json:path|format`` -> (file, path, format)."""
    if ":" not in text:
        raise RecordError(f"{text!r}: expected FILE.json:PATH[|FORMAT]")
    name, rest = text.split(":", 1)
    path, _, spec = rest.partition("|")
    return name.strip(), path.strip(), (spec.strip() or None)


# --- where a record came from -------------------------------------------------------------------------------------

_CANDIDATES = {
    "date": ["date", "run.started", "started", "meta.date"],
    "commit": ["run.git.commit", "git.commit", "commit", "run.commit", "meta.commit"],
    "dirty": ["run.git.dirty", "git.dirty", "dirty", "run.dirty"],
    "machine": ["machine", "run.machine", "meta.machine"],
    "cpus": ["run.machine.cpu_count", "machine.cpu_count", "cpu_count", "meta.cpu_count"],
    "load": ["run.load_before", "load_before", "load", "meta.load"],
    "command": ["run.command", "command", "meta.command"],
}


def _first(record: Any, base: str | None, field: str) -> tuple[Any, str] | None:
    for cand in _CANDIDATES[field]:
        full = f"{base}.{cand}" if base else cand
        try:
            return resolve(record, full), full
        except RecordError:
            continue
        except Exception:  # noqa: BLE001 - a record of another shape simply lacks the field
            continue
    return None


def _machine_text(machine: Any) -> str:
    if isinstance(machine, dict):
        parts = [str(machine[k]) for k in ("cpu_model", "processor", "platform") if machine.get(k)]
        if "memory_total_gb" in machine:
            parts.append(f"{machine['memory_total_gb']} GB memory")
        if "python" in machine:
            parts.append(f"Python {machine['python']}")
        return ", ".join(parts)
    return str(machine)


def provenance(record: Any, name: str, base: str | None = None, extra: dict[str, str] | None = None) -> str:
    """A sentence saying what ``record`` stores about its run, and what it does not store.

    ``base`` is the path of a run's own entry inside the record (such as one task's ``run``); its fields are read
    there first. The machine and CPU count, which a record states once for all its runs, are read from the top of
    the record when the entry lacks them. ``extra`` maps a field to a path for records whose keys have other names.
    """
    extra = extra or {}
    found: dict[str, Any] = {}
    for field in _CANDIDATES:
        if field in extra:
            found[field] = resolve(record, extra[field])
            continue
        hit = _first(record, base, field)
        if hit is None and base and field in ("machine", "cpus"):
            hit = _first(record, None, field)
        if hit is not None:
            found[field] = hit[0]
    parts = [f"Record: benchmarks/{name}"]
    missing = []
    if "date" in found:
        parts.append(f"run {found['date']}")
    else:
        missing.append("date")
    if "commit" in found:
        dirty = " (with uncommitted changes)" if found.get("dirty") else ""
        parts.append(f"commit {str(found['commit'])[:12]}{dirty}")
    else:
        missing.append("commit")
    if "machine" in found:
        parts.append(f"machine: {_machine_text(found['machine'])}")
    else:
        missing.append("machine")
    if "cpus" in found:
        cpus = found["cpus"]
        parts.append(f"{cpus} CPUs" if isinstance(cpus, int) else f"CPUs: {cpus}")
    else:
        cores = re.search(r"(\d+) cores", str(found.get("machine", "")))
        if cores:
            parts.append(f"{cores.group(1)} CPU cores (as the machine string states)")
        else:
            missing.append("CPU count")
    load_value = found.get("load")
    if isinstance(load_value, list) and load_value:
        parts.append("load average " + " / ".join(f"{x:.2f}" for x in load_value) + " (1, 5, 15 min) at the start")
    elif load_value is not None:
        parts.append(f"load {load_value}")
    else:
        missing.append("load")
    if "command" in found:
        parts.append(f"command: {found['command']}")
    else:
        missing.append("command")
    text = "; ".join(parts) + "."
    if missing:
        whose = "this run's" if base else "its"
        text += f" The record does not store {whose} " + ", ".join(missing) + "."
    if "commit" in missing:
        text += " Without a commit, the code it measured cannot be identified; the current code may differ."
    return text


# --- Sphinx ---------------------------------------------------------------------------------------------------------


def _note(env, name: str) -> None:
    if env is not None:
        env.note_dependency(str(RECORDS / (name if name.endswith(".json") else f"{name}.json")))


def record_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """``:record:`FILE.json:PATH|FORMAT``` -> the value as text."""
    try:
        file, path, spec = parse_reference(text)
        value = format_value(resolve(load(file), path), spec)
    except RecordError as exc:
        msg = inliner.reporter.error(f"record: {exc}", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    _note(getattr(inliner.document.settings, "env", None), file)
    return [nodes.Text(value)], []


class RecordTable(Directive):
    """A table of values from one record.

    .. code-block:: rst

       .. record-table:: results.json
          :rows: rows[n_cells=100000]
          :run: tasks.pbmc3.run
          :title: Fit at 100k cells

          method = method
          seconds = seconds | .2f
          top-10 |cos| = min_abs_cos_top10 | 1-:.1e

    Each content line is ``HEADER = PATH | FORMAT``, a column (split at the last ``" = "`` and the last
    ``" | "``); ``PATH`` is looked up in each row (``@key``,
    ``@index``, ``/top.level.path``), and a row that lacks it shows a dash. ``:rows:`` is a list or a mapping;
    ``:run:`` the path of the run's own entry (for the caption); ``:title:`` the caption's first sentence.
    """

    required_arguments = 1
    has_content = True
    option_spec = {
        "rows": directives.unchanged_required,
        "run": directives.unchanged,
        "title": directives.unchanged,
        "date": directives.unchanged,
        "commit": directives.unchanged,
        "machine": directives.unchanged,
        "cpus": directives.unchanged,
        "load": directives.unchanged,
        "command": directives.unchanged,
    }

    def run(self):
        name = self.arguments[0]
        try:
            record = load(name)
            rows = select_rows(record, self.options["rows"])
            columns = []
            for line in self.content:
                if not line.strip():
                    continue
                header, sep, rest = line.rpartition(" = ")
                if not sep:
                    raise RecordError(f"column {line!r}: expected HEADER = PATH | FORMAT")
                path, _, spec = rest.rpartition(" | ") if " | " in rest else (rest, "", "")
                columns.append((header.strip(), path.strip(), spec.strip() or None))
            if not columns:
                raise RecordError("a record-table needs at least one column")
            body = []
            for index, (key, row) in enumerate(rows):
                cells = []
                for _, path, spec in columns:
                    try:
                        value = resolve(record, path, row=row, key=key, index=index)
                    except RecordError:
                        if path.startswith("/"):
                            raise
                        cells.append("–")
                        continue
                    cells.append(format_value(value, spec))
                body.append(cells)
            extra = {
                f: self.options[f]
                for f in ("date", "commit", "machine", "cpus", "load", "command")
                if f in self.options
            }
            caption = provenance(record, name, self.options.get("run"), extra)
        except RecordError as exc:
            return [self.state_machine.reporter.error(f"record-table {name}: {exc}", line=self.lineno)]
        _note(self.state.document.settings.env, name)
        title = self.options.get("title")
        return [build_table([c[0] for c in columns], body, f"{title}. {caption}" if title else caption)]


class RecordSource(Directive):
    """``.. record-source:: FILE.json`` (options ``:run:`` and the field paths of ``record-table``): the caption
    sentence alone, as a paragraph."""

    required_arguments = 1
    option_spec = {k: directives.unchanged for k in ("run", "date", "commit", "machine", "cpus", "load", "command")}

    def run(self):
        name = self.arguments[0]
        try:
            extra = {f: v for f, v in self.options.items() if f != "run"}
            text = provenance(load(name), name, self.options.get("run"), extra)
        except RecordError as exc:
            return [self.state_machine.reporter.error(f"record-source {name}: {exc}", line=self.lineno)]
        _note(self.state.document.settings.env, name)
        para = nodes.paragraph(classes=["record-source"])
        para += nodes.emphasis(text=text)
        return [para]


def build_table(headers: list[str], body: list[list[str]], caption: str) -> nodes.table:
    table = nodes.table(classes=["record-table"])
    table += nodes.title(text=caption)
    group = nodes.tgroup(cols=len(headers))
    table += group
    for _ in headers:
        group += nodes.colspec(colwidth=1)
    head = nodes.thead()
    group += head
    head += _row(headers)
    tbody = nodes.tbody()
    group += tbody
    for cells in body:
        tbody += _row(cells)
    return table


def _row(cells: list[str]) -> nodes.row:
    row = nodes.row()
    for text in cells:
        entry = nodes.entry()
        entry += nodes.paragraph(text=text)
        row += entry
    return row


def setup(app):
    app.add_role("record", record_role)
    app.add_directive("record-table", RecordTable)
    app.add_directive("record-source", RecordSource)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
