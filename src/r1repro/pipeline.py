"""The one table of pipeline stages: what each runs, where it writes, what it is called.

Every place that needs the list of stages reads it here: the runner (`r1repro.stage`), the config
schema (`r1repro.config.STAGES`), the report (`r1repro.report`), the training launcher
(`r1repro.distributed`), the dvc.yaml dependency tool (`r1repro.deps`) and the tests. This module
imports nothing of r1repro, so any of them can import it.

    from r1repro.pipeline import NOTEBOOK_STAGES, stage
    stage("rl").notebook      # "03_grpo_vs_dr_grpo.ipynb"
    stage("evaluate").results # "eval"
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One `dvc.yaml` stage.

    Attributes:
        name: the dvc.yaml stage name; for notebook stages also the params.yaml section it reads.
        title: the heading the report gives it.
        notebook: the notebook under notebooks/ that papermill runs, or None for a script stage.
        module: the r1repro module a script stage runs (`python -m r1repro.<module>`), or None.
        results: its folder under results/ (None: it writes no results folder).
        inputs: what it reads besides code and params (models, data), as dvc.yaml deps.
        trains: the r1repro module whose `run_job` a launched training process of this stage runs
            (`r1repro.distributed`), or None when the stage trains nothing.
    """

    name: str
    title: str
    notebook: str | None = None
    module: str | None = None
    results: str | None = None
    inputs: tuple[str, ...] = ()
    trains: str | None = None


# In pipeline order. `params` resolves params.yaml with the active profile into results/params.yaml,
# which every later stage reads (r1repro.config); `report` only reads the stages' records.
PIPELINE: tuple[Stage, ...] = (
    Stage("params", "Parameters", module="config"),
    Stage("import_model", "Import the base model", module="model_import", results="import_model"),
    Stage("probe", "1. Probe base models", notebook="01_probe_base_models.ipynb", results="probe",
          inputs=("models/base", "data")),
    Stage("sft", "2. Cold-start SFT", notebook="02_cold_start_sft.ipynb", results="sft",
          inputs=("models/base", "data"), trains="sft"),
    Stage("rl", "3. GRPO vs Dr. GRPO", notebook="03_grpo_vs_dr_grpo.ipynb", results="rl",
          inputs=("models/sft", "data"), trains="rl"),
    Stage("distill", "4. Distillation", notebook="04_distill.ipynb", results="distill",
          inputs=("models/base", "models/sft", "models/rl", "data"), trains="sft"),
    Stage("evaluate", "5. Evaluation", notebook="05_evaluate.ipynb", results="eval",
          inputs=("models/base", "models/sft", "models/rl", "models/distill", "data")),
    # The findings and the report read every stage's records, metrics and protocol: its deps are the
    # result folders, so rerunning any stage makes them stale.
    Stage("report", "Report", module="report",
          inputs=("results/probe", "results/sft", "results/rl", "results/distill", "results/eval")),
)

BY_NAME = {s.name: s for s in PIPELINE}
# The stages that run a notebook, each reading `common` and its own params.yaml section.
NOTEBOOK_STAGES: tuple[str, ...] = tuple(s.name for s in PIPELINE if s.notebook)
RESULTS_DIR = "results"


def stage(name: str) -> Stage:
    """The stage called `name`; a KeyError lists the valid names."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(BY_NAME)}") from None


def result_folders() -> dict[str, str]:
    """{notebook stage: its folder under results/}, in pipeline order."""
    return {name: BY_NAME[name].results for name in NOTEBOOK_STAGES}


def timed_folders() -> dict[str, str]:
    """{stage: results folder} of every stage that records its wall time (protocol.json `wall_s`)."""
    return {s.name: s.results for s in PIPELINE if s.results}


def seed_suffix(seed: int, seeds: list[int] | tuple[int, ...]) -> str:
    """How the RL stage names one seed's files and folders (the findings read them by it): the first
    seed's keep the plain names (records_grpo.jsonl, models/rl/grpo), the others add `_seed<N>`."""
    return "" if seed == seeds[0] else f"_seed{seed}"
