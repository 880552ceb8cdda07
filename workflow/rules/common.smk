import math
import os
import shlex
import sys

from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)  # this checkout's rlae_sc, as the rules run it (RLAE below)
from rlae_sc.params import (  # noqa: E402
    STAGES,
    FederationParams,
    LabelParams,
    MappingParams,
    PassParams,
    ReadParams,
    config_flags,
)
from rlae_sc.report import FIGURES  # noqa: E402  the report's figures, named once
from rlae_sc.schema import EMBEDDING_FORMATS  # noqa: E402


validate(config, schema="../schemas/config.schema.yaml", set_default=False)  # its defaults document the library's

DATASETS = list(config["datasets"])
# the cluster stage's output, read by the report and by map: an .h5ad file, or a zarr store (a directory)
EMBEDDING_FORMAT = config.get("embedding_format", EMBEDDING_FORMATS[0])
EMBEDDING = f"results/{{dataset}}/embedding.{EMBEDDING_FORMAT}"
QUERIES = list(config.get("queries", {}))
for _query, _entry in config.get("queries", {}).items():
    if _entry["reference"] not in DATASETS:
        raise ValueError(
            f"config: query {_query!r} names reference {_entry['reference']!r}, which is not under datasets "
            f"(datasets: {', '.join(DATASETS)}). Use one of those names."
        )
# The rlae-sc command, run from this checkout: works in the project's virtualenv and in the
# rule's conda environment (workflow/envs/rlae-sc.yaml holds the dependencies, not the package).
RLAE = f"PYTHONPATH={shlex.quote(workflow.basedir)} python -m rlae_sc"


wildcard_constraints:
    dataset="|".join(map(re.escape, DATASETS)) if DATASETS else "(?!)",
    query="|".join(map(re.escape, QUERIES)) if QUERIES else "(?!)",


def dataset_entry(wildcards):
    return config["datasets"][wildcards.dataset]


def stage_params(dataset, stage):
    """The config section of a stage, with the dataset's own overrides on top."""
    return {**config.get(stage, {}), **config["datasets"][dataset].get(stage, {})}


def cli_flags(values, cls):
    """The command-line options that give ``values`` (a config section or entry, by config key) for the fields of
    ``cls``, one shell word each: {'n_top_genes': 2000, 'clip': None} -> '--n-top-genes 2000 --clip none'."""
    return shlex.join(config_flags(values, cls))


def stage_flags(dataset, stage):
    """The options of a stage's config section, with the dataset's own overrides on top."""
    return cli_flags(stage_params(dataset, stage), STAGES[stage])


def pass_flags(dataset, *, streaming=False):
    """--dask (preprocess, train, directions) and --streaming (preprocess) from the passes section."""
    params = stage_params(dataset, "passes")
    return cli_flags({k: v for k, v in params.items() if streaming or k != "streaming"}, PassParams)


def read_flags(entry):
    """Reader options of a dataset or query entry (rlae_sc.params.ReadParams): input_kind, layer, orientation,
    var_names, obs, measurement and obs_filter."""
    return cli_flags(entry, ReadParams)


def label_flag_for(dataset):
    """--label-key of a dataset entry (rlae_sc.params.LabelParams), or nothing."""
    return cli_flags(config["datasets"][dataset], LabelParams)


def label_flag(wildcards):
    return label_flag_for(wildcards.dataset)


def query_reference(wildcards):
    return config["queries"][wildcards.query]["reference"]


def all_outputs():
    return ["results/index.html"]


# Resource requests (SLURM and other cluster executors; a local run only uses threads). They grow with the
# size of a job's input on disk: .h5ad matrices are stored uncompressed, so that is close to the size of the
# matrix in memory. Inputs not written yet count as empty; Snakemake evaluates the requests again once a job's
# input exists, before it submits the job.
def input_mb(input):
    """Total size in MB of a job's input files that exist (a zarr store or SOMA experiment: its files together)."""
    return sum(disk_size(f) for f in input if os.path.exists(f)) / 2**20


def disk_size(path):
    """Bytes of a file, or of every file under a directory."""
    if not os.path.isdir(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def mem_mb_for(base, per_input_mb):
    """A ``mem_mb`` request: ``base`` MB plus ``per_input_mb`` MB for each MB of input."""
    return lambda wildcards, input: math.ceil(base + per_input_mb * input_mb(input))


def preprocess_mem_mb(base, per_input_mb):
    """The preprocess stage's ``mem_mb``: ``base`` MB with streaming (one block of cells at a time), else as
    :func:`mem_mb_for` (the counts are loaded whole)."""
    in_memory = mem_mb_for(base, per_input_mb)
    return lambda wildcards, input: (
        base if stage_params(wildcards.dataset, "passes").get("streaming") else in_memory(wildcards, input)
    )


def runtime_for(base, per_input_gb):
    """A ``runtime`` request in minutes: ``base`` plus ``per_input_gb`` minutes for each GB of input."""
    return lambda wildcards, input: math.ceil(base + per_input_gb * input_mb(input) / 1024)


def threads_by_size(wildcards, input):
    """One thread (BLAS, numba) for each started GB of input, 1 to 8."""
    return min(8, max(1, math.ceil(input_mb(input) / 1024)))


def pass_threads(wildcards, input):
    """Threads of a stage with passes over cells: by input size, and at least the number of local Dask
    workers when the passes start their own (``passes: dask: N``)."""
    dask = stage_params(wildcards.dataset, "passes").get("dask")
    return max(threads_by_size(wildcards, input), int(dask) if str(dask).isdigit() else 1)


# Federated fits (workflow/rules/federation.smk)
FEDERATIONS = list(config.get("federation", {}))


wildcard_constraints:
    federation="|".join(map(re.escape, FEDERATIONS)) if FEDERATIONS else "(?!)",


def federation_entry(wildcards):
    return config["federation"][wildcards.federation]


def federation_flags(wildcards):
    """--secure, --label-key, --layer, --timeout and the preprocess/train/cluster sections (entry overrides)."""
    entry = federation_entry(wildcards)
    flags = ["--secure" if entry.get("secure", True) else ""]
    flags += [cli_flags(entry, cls) for cls in (LabelParams, ReadParams, FederationParams)]
    for stage in ("preprocess", "train", "cluster"):
        params = {**config.get(stage, {}), **entry.get(stage, {})}
        if stage == "preprocess":
            params.pop("hvg_flavor", None)  # a federated fit selects genes with seurat_v3 on counts
        if stage == "cluster":
            params.pop("seed", None)  # --seed is the training seed here, as in `rlae-sc run`
        flags.append(cli_flags(params, STAGES[stage]))
    return " ".join(flags)
