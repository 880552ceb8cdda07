"""The Snakemake config's JSON schema, generated from the parameter model (:mod:`rlae_sc.params`).

Every option's type, bounds, choices and default are written here from its field, so that a default is
written once; the layout of the config (datasets, queries, federations and the stages' sections) is this
module's. ``python -m rlae_sc.schema > workflow/schemas/config.schema.yaml`` writes the committed schema;
``tests/test_params.py`` checks that the two agree.
"""

from __future__ import annotations

import sys
import typing
from dataclasses import fields

import yaml

from rlae_sc.params import STAGES, WORDS, FederationParams, LabelParams, MappingParams, ReadParams, Stage

JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", type(None): "null"}
BOUNDS = {"at_least": "minimum", "above": "exclusiveMinimum", "at_most": "maximum", "below": "exclusiveMaximum"}
NAME = {"pattern": "^[A-Za-z0-9_.-]+$"}  # the names of datasets, queries and federations (used in file paths)
SECTIONS = ("preprocess", "train", "passes", "cluster")  # the stages' sections, shared through $defs
EMBEDDING_FORMATS = ("h5ad", "zarr")  # the cluster stage's output, results/<dataset>/embedding.<format>
INLINE = ("items", "propertyNames")  # keywords whose schema stays on its property's line

HEADER = """\
# Generated from rlae_sc/params.py by `python -m rlae_sc.schema > workflow/schemas/config.schema.yaml`;
# edit the parameter model, not this file (tests/test_params.py checks that the two agree).
"""


def field_schema(cls: type[Stage], name: str) -> dict:
    """The JSON schema of the field ``name`` of ``cls``: its choices (``enum``) or its types, bounds and words
    (``pattern``), and its default."""
    f = next(f for f in fields(cls) if f.name == name)
    if f.metadata["choices"] is not None:
        return {"enum": list(f.metadata["choices"]), "default": f.default}
    hint = typing.get_type_hints(cls)[name]
    types = [JSON_TYPES[kind] for kind in (typing.get_args(hint) or (hint,))]
    out = {"type": types[0] if len(types) == 1 else types}
    out |= {BOUNDS[b]: value for b, value in f.metadata["bounds"].items() if value is not None}
    if name in WORDS:
        out["pattern"] = "^" + "|".join(WORDS[name]) + "$"
    return out | {"default": f.default}


def properties(cls: type[Stage], *, exclude: tuple[str, ...] = ()) -> dict:
    """The schemas of the fields of ``cls`` (less ``exclude``), by config key."""
    return {f.metadata["key"] or f.name: field_schema(cls, f.name) for f in fields(cls) if f.name not in exclude}


def section(props: dict) -> dict:
    """An object of ``props`` and nothing else."""
    return {"type": "object", "additionalProperties": False, "properties": props}


def named(entry: dict, *, at_least: int = 0) -> dict:
    """An object of named entries, each ``entry`` (at least ``at_least`` of them)."""
    out = {"type": "object", "minProperties": at_least} if at_least else {"type": "object"}
    return out | {"propertyNames": NAME, "additionalProperties": entry}


def refs(*names: str) -> dict:
    """References to the stages' sections ``names`` in ``$defs``."""
    return {name: {"$ref": f"#/$defs/{name}"} for name in names}


def schema() -> dict:
    """The config's schema, as a dict."""
    dataset = {"path": {"type": "string"}} | properties(ReadParams) | properties(LabelParams, exclude=("truth_key",))
    query = {"path": {"type": "string"}, "reference": {"type": "string"}}
    query |= properties(ReadParams, exclude=("input_kind",)) | properties(LabelParams, exclude=("label_key",))
    federation = {
        "sites": {"type": "array", "minItems": 2, "items": {"type": "string"}},
        "secure": {"type": "boolean"},
    }
    federation |= properties(LabelParams, exclude=("truth_key",)) | {"layer": field_schema(ReadParams, "layer")}
    federation |= properties(FederationParams) | refs("preprocess", "train", "cluster")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": "rlae-sc workflow configuration. The defaults are those of rlae_sc/params.py; they document "
        "the library's, which apply to keys left out (Snakemake does not fill them in).",
        "type": "object",
        "additionalProperties": False,
        "required": ["datasets"],
        "$defs": {name: section(properties(STAGES[name])) for name in SECTIONS},
        "properties": {
            "datasets": named(section(dataset | refs(*SECTIONS)) | {"required": ["path"]}, at_least=1),
            "queries": named(section(query) | {"required": ["path", "reference"]}),
            "federation": named(section(federation) | {"required": ["sites"]}),
            **refs(*SECTIONS),
            "mapping": section(properties(MappingParams)),
            "embedding_format": {"enum": list(EMBEDDING_FORMATS), "default": EMBEDDING_FORMATS[0]},
        },
    }


def schema_text() -> str:
    """The schema as the committed YAML file: nested blocks down to each property, which is one flow-style line."""
    return HEADER + _block(schema(), 0)


def _block(value: dict, indent: int) -> str:
    """``value`` as YAML block mappings down to the schemas that hold no other (each one flow-style line)."""
    lines = []
    for key, item in value.items():
        head = " " * indent + _scalar(key) + ":"
        if isinstance(item, dict) and any(isinstance(v, dict) for k, v in item.items() if k not in INLINE):
            lines.append(head + "\n" + _block(item, indent + 2))
        else:
            lines.append(head + " " + _scalar(item) + "\n")
    return "".join(lines)


def _scalar(value) -> str:
    """``value`` as one line of flow-style YAML."""
    return (
        yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=sys.maxsize).strip().removesuffix("\n...")
    )


if __name__ == "__main__":
    sys.stdout.write(schema_text())
