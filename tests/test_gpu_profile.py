"""The GPU profiles' code path, simulated on CPU before anyone has a GPU.

`profiles/gpu.yaml` is taken as it is; only sizes are overridden: its three models become tiny random
models of the same architecture families (Qwen2, Llama) built from a config, the token budgets and
counts shrink, the device is the CPU, and the vLLM backend falls back to transformers. The whole
pipeline then runs through `dvc repro`. What a first GPU run would trip on shows up here: a key the
profile sets that no stage reads, templates that disagree between the stages that train and the
stages that measure, and engines left holding weights when the next model loads.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from r1repro.config import deep_merge, load_params
from r1repro.generation import ENGINE_LOG_ENV
from r1repro.pipeline import PIPELINE

from repo_copy import make_copy, run, stages_run
from tiny_models import save_tiny_model

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2}
# The stages that train or measure a model with a prompt template: they must all ask the same way.
TEMPLATE_SECTIONS = ("sft", "rl", "distill", "evaluate")


def _profile(repo_root: Path, name: str) -> dict:
    return yaml.safe_load((repo_root / "profiles" / f"{name}.yaml").read_text())


def _leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    """Dotted key -> value of every setting in a nested mapping (named collections count as one)."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in ("models", "students", "benchmarks", "runs", "where"):
            out.update(_leaves(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _math_like_train_file(path: Path, data_dir: Path) -> Path:
    """A local stand-in for MATH-lighteval's train split: its columns (problem, solution with a
    boxed answer, level), so the profile's hub spec (answer_in_boxed, where.level) is read as it is."""
    rows = [json.loads(line) for line in (data_dir / "eval" / "math500.jsonl").read_text().splitlines()[:24]]
    levels = ["Level 2", "Level 3", "Level 4", "Level 5"]
    with path.open("w") as handle:
        for number, row in enumerate(rows):
            handle.write(json.dumps({"problem": row["problem"], "level": levels[number % 4],
                                     "solution": f"So the answer is $\\boxed{{{row['answer']}}}$."}) + "\n")
    return path


DISTILL_PROMPTS = 16  # ASDiv train rows the distill stage samples the teacher on (the first ones)


def _cold_started_teacher(folder: Path, base_model_dir: Path, data_dir: Path, template: str) -> Path:
    """A stand-in teacher for the distill stage: the embedded SmolLM2 after a short cold-start SFT
    (TRL, through r1repro.sft) on checked worked solutions in the profile's template. The RL model
    of this simulation is a random tiny model that answers nothing right, so rejection sampling
    from it would keep no trace and the distill stage would stop, as it should."""
    from r1repro.data import load_jsonl
    from r1repro.modeling import load_tokenizer
    from r1repro.sft import TrainSettings, train_sft
    from r1repro.sft_examples import to_sft_dataset
    from r1repro.worked_solutions import build_worked_examples

    # Worked solutions of the very prompts it will be asked, learned for several epochs: the stand-in
    # must answer them right often enough that rejection sampling keeps traces on any CPU.
    rows = load_jsonl(data_dir / "train" / "asdiv.jsonl", limit=DISTILL_PROMPTS)
    examples, _ = build_worked_examples(rows, seed=0)
    dataset = to_sft_dataset(examples, template, load_tokenizer(str(base_model_dir)))
    settings = TrainSettings(epochs=4.0, learning_rate=2e-4, batch_size=8, max_length=512, seed=0,
                             save_steps=10_000)
    train_sft(dataset, str(base_model_dir), folder, settings, device="cpu", progress=False)
    return folder


def size_overrides(profile: dict, tiny_qwen: Path, tiny_llama: Path, math_train: Path, teacher: Path) -> dict:
    """Only sizes, devices and the hub-only ids replaced by local stand-ins of the same kind."""
    budget = 8
    greedy = {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_new_tokens": budget}
    return {
        "common": {"device": "cpu", "generation_batch_size": 64},
        "model": {"pretrained": str(tiny_qwen)},
        "probe": {"models": {"Qwen2.5-Math-1.5B": "models/base", "Qwen2.5-Math-7B": str(tiny_qwen),
                             "Llama-3.1-8B": str(tiny_llama)},
                  "questions": {"limit": 3}, "sampling": {"max_new_tokens": budget}, "k": 2,
                  "temperatures": [0.0, 1.0]},
        # Worked answers longer than the SFT stage's budget are dropped: keep it long enough for them.
        "sft": {"train_examples": 8, "heldout": {"limit": 4},
                "eval_sampling": {**greedy, "max_new_tokens": 128}},
        # A subset that names its source replaces the profile's entry whole (config.deep_merge): the
        # MATH prompts keep their columns and level filter with only the id swapped.
        "rl": {"prompts": {**profile["rl"]["prompts"],
                           "hub": {**profile["rl"]["prompts"]["hub"], "id": str(math_train)}},
               # One rollout of 2 prompts x 4, split into 2 optimiser steps (the profile's 8 would leave
               # one completion a step at this size): the mini-batch path runs, each run in its own process.
               "heldout": {"limit": 3}, "eval_steps": 1,
               "eval_limit": 2, "eval_sampling": greedy, "max_steps": 2, "num_generations": 4,
               "prompts_per_step": 2, "updates_per_rollout": 2, "micro_batch_size": 4,
               "max_completion_length": budget, "save_steps": 1,
               # pass@1 against pass@2 on 2 questions within the token budget (the profile's 3,000 tokens
               # x 16 samples would keep a random model generating for minutes).
               "exploration": {**profile["rl"]["exploration"], "n": 2, "max_new_tokens": budget},
               "exploration_limit": 2},
        "distill": {"teacher": str(teacher),
                    "students": {"qwen2_5_math_1_5b": {"init": "models/base"},
                                 "llama3_1_8b": {"init": str(tiny_llama)}},
                    "prompts": {"limit": DISTILL_PROMPTS}, "heldout": {"limit": 4}, "per_question": 1,
                    "sampling": {"n": 2, "max_new_tokens": 128}, "max_length": 512, "epochs": 1.0,
                    "eval_sampling": greedy},
        "evaluate": {"benchmarks": {name: {**spec, "limit": 2} for name, spec in
                                    profile["evaluate"]["benchmarks"].items()},
                     "sampling": {"n": 2, "max_new_tokens": budget}, "greedy_max_new_tokens": budget},
        "report": {"bootstrap_samples": 100},
    }


@pytest.mark.parametrize("name", ["gpu", "gpu1"])
def test_gpu_profiles_validate_and_ask_one_template_family(repo_root: Path, name: str) -> None:
    params = load_params(repo_root, profile=name)
    templates = {section: getattr(params, section).template for section in TEMPLATE_SECTIONS}
    assert len(set(templates.values())) == 1, templates
    assert params.common.backend == "vllm" and params.common.device == "cuda"
    runs = params.rl.runs
    assert (runs["grpo"].loss_type, runs["grpo"].scale_rewards) == ("grpo", "group")
    assert (runs["dr_grpo"].loss_type, runs["dr_grpo"].scale_rewards) == ("dr_grpo", "none")


@pytest.mark.parametrize("name", ["gpu", "gpu1"])
def test_every_key_a_gpu_profile_sets_is_a_tracked_param_of_some_stage(repo_root: Path, name: str) -> None:
    """DVC reruns a stage for a key only if the stage lists it: a profile key no stage lists is dead."""
    tracked = set()
    for stage in yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"].values():
        for entry in stage.get("params", []):
            if isinstance(entry, dict):
                for keys in entry.values():
                    tracked.update(keys)
    untracked = [key for key in _leaves(_profile(repo_root, name))
                 if not any(key == t or key.startswith(t + ".") for t in tracked)]
    assert untracked == [], f"profiles/{name}.yaml sets keys no stage tracks: {untracked}"


@pytest.mark.slow
def test_gpu_profile_runs_end_to_end_on_cpu(tmp_path_factory: pytest.TempPathFactory, repo_root: Path,
                                             data_dir: Path, base_model_dir: Path, monkeypatch) -> None:
    stand_ins = tmp_path_factory.mktemp("gpu_stand_ins")
    tiny_qwen = save_tiny_model(stand_ins / "tiny_qwen2", base_model_dir, "qwen2", TINY)
    tiny_llama = save_tiny_model(stand_ins / "tiny_llama", base_model_dir, "llama", TINY)
    math_train = _math_like_train_file(stand_ins / "math_train.jsonl", data_dir)
    profile = _profile(repo_root, "gpu")
    teacher = _cold_started_teacher(stand_ins / "teacher", base_model_dir, data_dir, profile["distill"]["template"])
    overrides = size_overrides(profile, tiny_qwen, tiny_llama, math_train, teacher)
    engine_log = stand_ins / "engines.jsonl"
    monkeypatch.setenv(ENGINE_LOG_ENV, str(engine_log))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    copy = make_copy(tmp_path_factory.mktemp("gpu_sim") / "repo", repo_root, data_dir, overrides,
                     profile="gpu")
    result = run(["dvc", "repro"], copy, timeout=3000)
    assert stages_run(result.stdout) == {s.name for s in PIPELINE}, result.stdout[-3000:]
    # vLLM was asked for and cannot run here: the fallback is announced, not silent.
    assert "vllm" in (result.stdout + result.stderr).lower()

    check_simulated_run(copy, deep_merge(profile, overrides), engine_log)


def check_simulated_run(copy: Path, expected: dict, engine_log: Path) -> None:
    """What the simulated GPU run must show: every key of the profile (with the size overrides)
    resolved and recorded by the stage that reads it, one template family, engines released, and
    every model evaluated on every benchmark."""
    resolved = yaml.safe_load((copy / "results" / "params.yaml").read_text())
    recorded = _recorded_params(copy)
    for key, value in _leaves(expected).items():
        assert _contains(_get(resolved, key), value), f"results/params.yaml: {key}"
        section = key.split(".")[0]
        if section in recorded:  # the stage that reads the section wrote what it ran with
            assert _contains(_get(recorded[section], key.split(".", 1)[1]), value), f"{section} protocol: {key}"

    templates = {section: recorded[section]["template"] for section in TEMPLATE_SECTIONS}
    assert set(templates.values()) == {"qwen_math"}, templates
    # The paper's recipe knobs (issue 30), as the stages ran them.
    assert recorded["common"]["isolate_training"] is True
    assert (recorded["rl"]["truncated_reward"], recorded["rl"]["vllm_importance_sampling"]) == (0.0, False)
    assert recorded["rl"]["updates_per_rollout"] == expected["rl"]["updates_per_rollout"] > 1
    rl_rows = [json.loads(line) for line in (copy / "results" / "rl" / "diagnostics_grpo.jsonl").read_text().splitlines()]
    assert [r.get("rollout_step") for r in rl_rows if r.get("step")] == [None, 1]  # one rollout, two updates
    _assert_engines_released(engine_log)
    records = [json.loads(line) for line in (copy / "results" / "eval" / "records.jsonl").read_text().splitlines()]
    measured = {(r["model"], r["benchmark"]) for r in records}
    wanted = {(m, b) for m in expected["evaluate"]["models"] for b in expected["evaluate"]["benchmarks"]}
    assert wanted <= measured, sorted(wanted - measured)


def _contains(actual, wanted) -> bool:
    """`actual` holds `wanted`: equal, or for mappings every wanted key with a value it holds (the
    recorded copy is the validated one, with the defaults of unset keys filled in)."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(k in actual and _contains(actual[k], v) for k, v in wanted.items())
    return actual == wanted


def _recorded_params(copy: Path) -> dict[str, dict]:
    """Each notebook stage's params section as its protocol.json recorded it."""
    folders = {"probe": "probe", "sft": "sft", "rl": "rl", "distill": "distill", "evaluate": "eval"}
    recorded = {}
    for section, folder in folders.items():
        protocol = json.loads((copy / "results" / folder / "protocol.json").read_text())
        recorded[section] = protocol["params"]
    recorded["common"] = json.loads((copy / "results" / "eval" / "protocol.json").read_text())["common"]
    return recorded


def _get(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def _assert_engines_released(log: Path) -> None:
    """Per process, an engine that loads its own weights opens only when no other one holds any."""
    events = [json.loads(line) for line in log.read_text().splitlines()]
    opened = [e for e in events if e["event"] == "open" and e["owns_weights"]]
    assert opened, "no generator loaded a model: the engine log is not reaching the stages"
    crowded = [e for e in opened if len(e["live_owning"]) > 1]
    assert crowded == [], f"engines opened while another held its weights: {crowded[:3]}"
    by_pid: dict[int, set[int]] = {}
    for event in events:
        live = by_pid.setdefault(event["pid"], set())
        (live.add if event["event"] == "open" else live.discard)(event["id"])
    leaked = {pid: ids for pid, ids in by_pid.items() if ids}
    # A stage's process may end with its last engine collected at exit (no close event): allow one.
    assert all(len(ids) <= 1 for ids in leaked.values()), f"engines never closed: {leaked}"


@pytest.mark.slow
def test_gpu_lock_resolves_against_the_registry(repo_root: Path) -> None:
    """`make lock-gpu-check`: every pin of requirements-gpu.lock installable together (pip's resolver)."""
    import subprocess
    import sys

    lock = repo_root / "requirements-gpu.lock"
    pins = [line for line in lock.read_text().splitlines() if line and not line.startswith("#")]
    assert all("==" in pin for pin in pins), [p for p in pins if "==" not in p]
    names = {pin.split("==")[0] for pin in pins}
    assert {"torch", "transformers", "trl", "vllm", "deepspeed", "peft", "accelerate"} <= names
    # The Makefile holds the pip command; PY: this interpreter, whichever venv runs the tests.
    result = subprocess.run(["make", "-s", "-C", str(repo_root), "lock-gpu-check", f"PY={sys.executable}"],
                            capture_output=True, text=True, timeout=1200)
    if result.returncode and any(s in result.stderr for s in ("NewConnectionError", "Network is unreachable",
                                                              "Temporary failure in name resolution")):
        pytest.skip("the package registry is unreachable from here")
    assert result.returncode == 0, result.stderr[-3000:]
