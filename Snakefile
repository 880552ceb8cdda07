# rlae-sc workflow: per dataset, preprocess -> train -> directions -> cluster -> report.
# Configuration: config/config.yaml (validated against workflow/schemas/config.schema.yaml).
from snakemake.utils import min_version

min_version("8.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo_data.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/directions.smk"
include: "workflow/rules/cluster.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/map.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/federation.smk"
include: "workflow/rules/index.smk"


rule all:
    input:
        all_outputs(),
        expand("results/federation/{federation}/federation.json", federation=FEDERATIONS),
    default_target: True
