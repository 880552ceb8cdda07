"""Parameter defaults read from :mod:`rlae_sc.params` and :mod:`rlae_sc.settings` when the documentation is built.

``:default:`ClusterParams.resolution``` writes the default of that field, as the command line shows it
(``none`` for None, integers with thousands separators), and ``:default:`settings.block_size``` that of a
session setting, so the guide cannot state a default the code does not have. A name that does not exist stops
the build.
"""

from __future__ import annotations

import dataclasses

from docutils import nodes


def default_text(name: str) -> str:
    """The default of ``Class.field`` of :mod:`rlae_sc.params`, or of ``settings.name``, written for a reader."""
    from rlae_sc import params
    from rlae_sc.settings import Settings

    cls_name, _, field_name = name.partition(".")
    if cls_name == "settings":
        if field_name not in Settings.NAMES:
            raise LookupError(f"no setting {field_name!r} (settings: {', '.join(Settings.NAMES)})")
        return written(getattr(Settings(), field_name))
    cls = getattr(params, cls_name, None)
    if cls is None or not dataclasses.is_dataclass(cls):
        raise LookupError(f"rlae_sc.params has no parameter class {cls_name!r}")
    found = {f.name: f for f in dataclasses.fields(cls)}
    if field_name not in found:
        raise LookupError(f"{cls_name} has no field {field_name!r} (fields: {', '.join(found)})")
    return written(found[field_name].default)


def written(value) -> str:
    """A default as the command line shows it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,d}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def default_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    try:
        value = default_text(text.strip())
    except LookupError as exc:
        msg = inliner.reporter.error(f"default: {exc}", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    return [nodes.literal(text=value)], []


def setup(app):
    app.add_role("default", default_role)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
