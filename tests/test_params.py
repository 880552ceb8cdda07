"""The parameter model (rlae_sc/params.py) is the one source of every stage's defaults: the config, the schema
and the command line agree with it, and the modules that only need a key name stay free of torch."""

import subprocess
import sys
import typing
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from rlae_sc import params as P
from rlae_sc.cli import build_parser
from rlae_sc.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", type(None): "null"}


def key(f) -> str:
    return f.metadata["key"] or f.name


def schema_sections() -> list[tuple[str, type, dict]]:
    """(where, class, schema properties) of every place the schema describes a stage's parameters."""
    props = SCHEMA["properties"]
    dataset = props["datasets"]["additionalProperties"]["properties"]
    query = props["queries"]["additionalProperties"]["properties"]
    federation = props["federation"]["additionalProperties"]["properties"]
    out = [(name, cls, SCHEMA["$defs"][name]["properties"]) for name, cls in P.STAGES.items() if name != "mapping"]
    out.append(("mapping", P.MappingParams, props["mapping"]["properties"]))
    read = {f.name for f in fields(P.ReadParams)}
    out.append(("datasets.<name>", P.ReadParams, {k: v for k, v in dataset.items() if k in read}))
    out.append(("queries.<name>", P.ReadParams, {k: v for k, v in query.items() if k in read}))
    out.append(("federation.<name>", P.FederationParams, {"timeout": federation["timeout"]}))
    return out


@pytest.mark.parametrize("section", list(P.STAGES))
def test_config_sections_hold_every_parameter_at_its_default(section):
    cls = P.STAGES[section]
    assert {key(f): f.default for f in fields(cls)} == CONFIG[section]


@pytest.mark.parametrize(("where", "cls", "props"), schema_sections(), ids=lambda x: x if isinstance(x, str) else "")
def test_schema_agrees_with_the_parameter_model(where, cls, props):
    hints = typing.get_type_hints(cls)
    by_key = {key(f): f for f in fields(cls)}
    if cls is not P.ReadParams:  # a dataset or query entry holds the reader options among others
        assert set(props) == set(by_key), where
    for name, prop in props.items():
        f = by_key[name]
        assert prop["default"] == f.default, f"{where}.{name}"
        if f.metadata["choices"] is not None:
            assert tuple(prop["enum"]) == f.metadata["choices"], f"{where}.{name}"
            continue
        kinds = typing.get_args(hints[f.name]) or (hints[f.name],)
        allowed = {prop["type"]} if isinstance(prop["type"], str) else set(prop["type"])
        assert {JSON_TYPES[k] for k in kinds} == allowed, f"{where}.{name}"


def test_the_committed_schema_is_the_generated_one():
    """workflow/schemas/config.schema.yaml is written by ``python -m rlae_sc.schema`` from the parameter model, so
    that a default, a bound or a choice is written once; regenerate it after changing a field."""
    from rlae_sc.schema import schema_text

    assert (ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text() == schema_text()


def test_the_label_options_are_the_parameter_model_s():
    """``--label-key`` and ``--truth-key`` are generated from :class:`~rlae_sc.params.LabelParams` wherever they are
    taken, and parse to its fields."""
    args = build_parser().parse_args(["map", "q.h5ad", "--model", "m", "--reference", "r", "--out-dir", "o"])
    assert P.given(args, P.LabelParams) == {}
    words = P.as_flags({"label_key": "cell type", "truth_key": "cell_type"}, P.LabelParams)
    assert words == ["--label-key", "cell type", "--truth-key", "cell_type"]
    args = build_parser().parse_args(["map", "q.h5ad", "--model", "m", "--reference", "r", "--out-dir", "o", *words])
    assert P.given(args, P.LabelParams) == {"label_key": "cell type", "truth_key": "cell_type"}
    for command in (["run", "c.h5ad", "--out", "o"], ["cluster", "d.h5ad", "--out", "e", "--metrics", "m"]):
        assert P.given(build_parser().parse_args([*command, *words[:2]]), P.LabelParams) == {"label_key": "cell type"}


def test_every_option_parses_to_its_field():
    """The words :func:`as_flags` writes for non-default values parse back, through the generated options,
    to the same values; options left out are absent, so the library's defaults apply."""
    changed = {
        P.PreprocessParams: {"min_genes": 50, "max_pct_mito": None, "target_sum": 1e4, "hvg_flavor": "seurat"},
        P.TrainParams: {"n_components": 7, "lam": 2.5, "trace_metrics": False, "batch_size": 64, "solver": "gha"},
        P.PassParams: {"streaming": True, "dask": "tcp://127.0.0.1:8786"},
        P.ReadParams: {"layer": "spliced", "input_kind": "log_normalized", "var_names": "gene_ids"},
    }
    words = [w for cls, values in changed.items() for w in P.as_flags(values, cls)]
    assert "--lambda" in words and "--streaming" in words
    args = build_parser().parse_args(["run", "counts.h5ad", "--out", "out", *words])
    for cls, values in changed.items():
        assert P.given(args, cls) == values
    assert P.given(build_parser().parse_args(["run", "counts.h5ad", "--out", "out"]), *changed) == {}


def test_unknown_names_and_values_are_named():
    with pytest.raises(InputError, match="unknown train parameter.*n_comps"):
        P.TrainParams.of({"n_comps": 5}, source="test")
    with pytest.raises(InputError, match="unknown solver 'sgd'.*tied_exact, gd"):
        P.TrainParams.of(solver="sgd")
    with pytest.raises(InputError, match="unknown parameter.*resolution"):
        P.split({"resolution": 1.0}, P.ReadParams, P.PassParams)


def test_each_algorithm_has_one_name():
    from rlae_sc.params import RULES, SOLVER, SOLVERS

    assert SOLVER not in RULES and len(set(SOLVERS)) == len(SOLVERS)
    assert P.TrainParams.of(solver="tied_ridge").solver == "tied_ridge"  # the rule, once called tied_exact too


def imports_torch(module: str) -> bool:
    """Whether importing ``module`` on its own (the package's ``__init__`` skipped, whatever it imports)
    brings torch in, with everything it imports."""
    code = (
        "import sys, types\n"
        f"pkg = types.ModuleType('rlae_sc'); pkg.__path__ = [{str(ROOT / 'rlae_sc')!r}]\n"
        "sys.modules['rlae_sc'] = pkg\n"
        f"import {module}\n"
        "print('torch' in sys.modules)\n"
    )
    return (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "True"
    )


@pytest.mark.parametrize(
    ("module", "torch"),
    [
        ("rlae_sc.params", False),
        ("rlae_sc.keys", False),
        ("rlae_sc.cluster", False),
        ("rlae_sc.mapping", False),
        ("rlae_sc.plots", False),
        ("rlae_sc.model", False),  # the model loads, saves and embeds without torch
        ("rlae_sc.engine", False),  # the pass engine, its executors, rows and settings
        ("rlae_sc.settings", False),
        ("rlae_sc.train", True),  # the check itself sees torch where it is imported
    ],
)
def test_modules_that_need_a_key_name_do_not_import_torch(module, torch):
    assert imports_torch(module) == torch


def test_the_package_the_cli_and_the_pipeline_import_no_stage_library_until_used():
    code = (
        "import sys\n"
        "import rlae_sc, rlae_sc.cli, rlae_sc.pipeline\n"
        "print(sorted(m for m in ('torch', 'scanpy', 'umap', 'faiss', 'matplotlib') if m in sys.modules))\n"
        "print(all(getattr(rlae_sc, name) is not None for name in rlae_sc.__all__), 'torch' in sys.modules)\n"
        "names = dir(rlae_sc)\n"
        "print(rlae_sc.read_model is rlae_sc.load_model, callable(rlae_sc.preprocess), len(set(names)) == len(names))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:3] == ["[]", "True True", "True True True"]


def test_every_command_line_argument_has_help():
    import argparse

    from rlae_sc.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {action.dest}"
        for name, parser in sub.choices.items()
        for action in parser._actions
        if not action.help and not isinstance(action, argparse._HelpAction)
    ]
    assert not missing, missing


def test_namespaces_show_only_their_public_functions():
    import rlae_sc as rl

    assert dir(rl.tl) == ["embed", "rlae"] and dir(rl.pp) == ["recipe"] and dir(rl.get) == ["model"]
    assert all(not name.startswith("_") and callable(getattr(rl.pl, name)) for name in rl.pl.__all__)


@pytest.mark.parametrize(
    ("function", "cls", "only", "renamed"),
    [
        ("pp.recipe", P.PreprocessParams, None, {}),
        ("pp.recipe", P.ReadParams, ("input_kind",), {}),  # the one reader option preprocessing reads
        ("tl.rlae", P.TrainParams, None, {"n_components": "n_comps"}),  # scanpy's name, as pp.pca's
    ],
)
def test_public_functions_take_each_field_as_a_keyword_with_its_default(function, cls, only, renamed):
    """As scanpy checks its own signatures: every field of the stage is a keyword-only parameter of the function,
    of the field's type and with its default, and nothing is left to ``**kwargs``."""
    import inspect

    import rlae_sc as rl

    namespace, name = function.split(".")
    fn = getattr(getattr(rl, namespace), name)
    signature, hints, types = inspect.signature(fn), typing.get_type_hints(fn), typing.get_type_hints(cls)
    for f in (f for f in fields(cls) if only is None or f.name in only):
        parameter = signature.parameters[renamed.get(f.name, f.name)]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, (function, f.name)
        assert parameter.default == f.default and hints[parameter.name] == types[f.name], (function, f.name)
    assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
