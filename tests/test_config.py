"""params.yaml is validated once, at load: unknown keys and bad values are named, before any work."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from r1repro import config
from r1repro.config import ConfigError, deep_merge, load_params, validate


@pytest.fixture()
def params_dict(repo_root: Path) -> dict:
    return yaml.safe_load((repo_root / "params.yaml").read_text())


def test_shipped_params_and_profiles_validate(repo_root: Path) -> None:
    default = load_params(repo_root)
    assert default.common.backend == "openvino" and default.rl.rollout_backend == "transformers_fast"
    assert default.common.attention == "grouped_decode"
    assert default.common.trust_remote_code is False
    for name in ("gpu", "gpu1"):  # vLLM decodes their rollouts too, not the CPU default's engine
        assert load_params(repo_root, profile=name).engines() == ["vllm"], name
    gpu = load_params(repo_root, profile="gpu")
    assert gpu.model.pretrained == "Qwen/Qwen2.5-Math-1.5B"
    smoke = load_params(repo_root, profile="smoke")
    assert smoke.probe.questions.limit <= default.probe.questions.limit


def test_the_seeds2_profile_is_the_default_plus_a_seed(repo_root: Path) -> None:
    """Its first seed's runs are the default's (the same folders, later stages' teacher included), so
    its findings differ from the default's by the second seed alone."""
    default, seeds2 = load_params(repo_root, profile="none"), load_params(repo_root, profile="seeds2")
    first = default.rl.seeds or [default.common.seed]
    assert seeds2.rl.seeds[:len(first)] == first and len(set(seeds2.rl.seeds)) > len(first)
    assert seeds2.model_dump() == default.model_copy(update={"rl": default.rl.model_copy(
        update={"seeds": seeds2.rl.seeds})}).model_dump()


def test_the_engine_profiles_are_the_default_on_another_engine(repo_root: Path) -> None:
    """openvino: RL's rollouts on the default's fixed-weight engine too; transformers_fast: fixed weights on
    the project's own loop. Only the engine differs, so their results differ from the default's by it alone."""
    default = load_params(repo_root, profile="none")
    openvino, fast = load_params(repo_root, profile="openvino"), load_params(repo_root, profile="transformers_fast")
    assert openvino.engines() == ["openvino"] and fast.engines() == ["transformers_fast"]
    assert openvino.model_dump() == default.model_copy(update={"rl": default.rl.model_copy(
        update={"rollout_backend": "openvino"})}).model_dump()
    assert fast.model_dump() == default.model_copy(update={"common": default.common.model_copy(
        update={"backend": "transformers_fast"})}).model_dump()


def test_rl_runs_set_both_dr_grpo_knobs(repo_root: Path) -> None:
    runs = load_params(repo_root).rl.runs
    assert (runs["grpo"].loss_type, runs["grpo"].scale_rewards) == ("grpo", "group")
    assert (runs["dr_grpo"].loss_type, runs["dr_grpo"].scale_rewards) == ("dr_grpo", "none")


def test_unknown_key_is_named(params_dict: dict) -> None:
    params_dict["probe"]["temperture"] = 0.5
    with pytest.raises(ConfigError, match=r"probe\.temperture: unknown key"):
        validate(params_dict)


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("common", "seed", "abc", r"common\.seed"),
        ("common", "backend", "tensorrt", r"common\.backend"),
        ("probe", "temperatures", [-0.1], r"temperature"),
        ("probe", "k", 0, r"probe\.k"),
        ("evaluate", "models", {}, r"evaluate\.models is empty"),
    ],
)
def test_bad_value_is_named(params_dict: dict, section: str, key: str, value, expected: str) -> None:
    params_dict[section][key] = value
    with pytest.raises(ConfigError, match=expected):
        validate(params_dict)


def test_negative_sampling_temperature_is_refused(params_dict: dict) -> None:
    params_dict["evaluate"]["sampling"]["temperature"] = -1
    with pytest.raises(ConfigError, match=r"evaluate\.sampling\.temperature"):
        validate(params_dict)


def test_profiles_replace_named_collections() -> None:
    base = {"probe": {"models": {"a": "x"}, "k": 2}}
    merged = deep_merge(base, {"probe": {"models": {"b": "y"}}})
    assert merged["probe"] == {"models": {"b": "y"}, "k": 2}
    assert base["probe"]["models"] == {"a": "x"}  # the input is not modified


def test_stage_config_from_papermill_dicts(repo_root: Path, params_dict: dict) -> None:
    common, probe = config.stage_config("probe", params_dict["common"], params_dict["probe"])
    assert probe.k == params_dict["probe"]["k"]
    with pytest.raises(ConfigError, match="unknown stage"):
        config.stage_config("train")


def test_cli_check_exits_nonzero_before_work(tmp_path: Path, repo_root: Path, params_dict: dict) -> None:
    shutil.copy(repo_root / "dvc.yaml", tmp_path / "dvc.yaml")
    params_dict.setdefault("rl", {})["learning_rate"] = "fast"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_dict))
    result = subprocess.run([sys.executable, "-m", "r1repro.config", "check"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "rl.learning_rate" in result.stderr


def _scratch_repo(tmp_path: Path, repo_root: Path) -> Path:
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(repo_root / name, tmp_path / name)
    shutil.copytree(repo_root / "profiles", tmp_path / "profiles")
    return tmp_path


def test_using_a_profile_leaves_params_yaml_byte_identical(tmp_path: Path, repo_root: Path) -> None:
    root = _scratch_repo(tmp_path, repo_root)
    before = (root / "params.yaml").read_bytes()
    config.use_profile("gpu", root=root)
    assert config.active_profile(root) == "gpu"
    assert load_params(root).common.backend == "vllm"  # the active profile is merged in
    assert load_params(root, profile="none").common.backend == "openvino"
    resolved = config.write_resolved(root)
    assert resolved.common.backend == "vllm"
    assert config.load_resolved(root) == resolved
    config.use_profile("none", root=root)
    assert config.active_profile(root) is None
    assert not (root / config.ACTIVE_PROFILE_FILE).exists()  # none: as a fresh clone, no file
    config.use_profile("none", root=root)  # already none: nothing to delete, no error
    assert (root / "params.yaml").read_bytes() == before


def test_make_repro_gpu_apply_step_leaves_params_yaml_byte_identical(tmp_path: Path, repo_root: Path) -> None:
    """What `make repro-gpu` runs before `dvc repro`: `config use gpu`, then the params stage's resolve."""
    root = _scratch_repo(tmp_path, repo_root)
    before = (root / "params.yaml").read_bytes()
    for args in (["use", "gpu"], ["resolve"]):
        result = subprocess.run([sys.executable, "-m", "r1repro.config", *args], cwd=root,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    assert (root / "params.yaml").read_bytes() == before
    assert yaml.safe_load((root / config.RESOLVED_FILE).read_text())["common"]["backend"] == "vllm"


def test_a_bad_profile_is_refused_and_the_active_one_kept(tmp_path: Path, repo_root: Path) -> None:
    root = _scratch_repo(tmp_path, repo_root)
    (root / "profiles" / "bad.yaml").write_text("common:\n  backend: nonsense\n")
    with pytest.raises(ConfigError, match="common.backend"):
        config.use_profile("bad", root=root)
    assert config.active_profile(root) is None
    with pytest.raises(ConfigError, match=r"no profile 'gpx'.*gpu"):
        config.use_profile("gpx", root=root)


def _git_copy(tmp_path: Path, repo_root: Path) -> Path:
    """A git repository of what the `params` stage reads and DVC needs, as committed (the tracked files
    only: no active profile), with results/params.yaml resolved on no profile and committed, as the
    project commits it."""
    listed = subprocess.run(["git", "ls-files", "--", ".gitignore", ".dvcignore", ".dvc", "dvc.yaml",
                             "params.yaml", "profiles", "src/r1repro"], cwd=repo_root,
                            capture_output=True, text=True, check=True).stdout.split()
    for rel in listed:
        if (repo_root / rel).is_file():  # a file deleted in the working tree but not yet committed
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo_root / rel, tmp_path / rel)
    assert not (tmp_path / config.ACTIVE_PROFILE_FILE).exists()
    config.write_resolved(tmp_path)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "copy")
    return tmp_path


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def _cli(root: Path, *args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "r1repro.config", *args], cwd=root,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_switching_profiles_leaves_the_git_tree_clean(tmp_path: Path, repo_root: Path) -> None:
    """Issue 31: `make repro PROFILE=smoke` must not dirty the tree. The choice of profile is git-ignored;
    only results/params.yaml, a pipeline output committed with the results, follows the profile."""
    root = _git_copy(tmp_path, repo_root)
    _cli(root, "use", "smoke")
    assert config.active_profile(root) == "smoke"
    assert _git(root, "status", "--porcelain", "--untracked-files=all") == ""
    _cli(root, "resolve")
    assert _git(root, "status", "--porcelain", "--untracked-files=all") == " M results/params.yaml\n"
    smoke = deep_merge(yaml.safe_load((root / "params.yaml").read_text()),
                       yaml.safe_load((root / "profiles" / "smoke.yaml").read_text()))
    assert yaml.safe_load((root / config.RESOLVED_FILE).read_text()) == smoke
    _cli(root, "use", "none")
    _cli(root, "resolve")
    assert _git(root, "status", "--porcelain", "--untracked-files=all") == ""


def test_the_params_stage_is_stale_after_switching_profile(tmp_path: Path, repo_root: Path) -> None:
    """DVC hashes the git-ignored active profile as part of the `profiles` dep; none is a fresh clone."""
    root = _git_copy(tmp_path, repo_root)

    def status() -> str:
        result = subprocess.run(["dvc", "status", "params"], cwd=root, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout

    subprocess.run(["dvc", "commit", "--force", "params"], cwd=root, capture_output=True, text=True,
                   check=True)  # record the stage as run on no profile, without running it
    assert "up to date" in status()
    config.use_profile("smoke", root=root)
    assert re.search(r"modified:\s+profiles\b", status())
    config.use_profile("none", root=root)
    assert "up to date" in status()


def test_stale_resolved_params_are_refused(tmp_path: Path, repo_root: Path) -> None:
    root = _scratch_repo(tmp_path, repo_root)
    with pytest.raises(ConfigError, match="results/params.yaml is missing or out of date"):
        config.load_resolved(root)
    config.write_resolved(root)
    config.load_resolved(root)
    params = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(params.replace("seed: 1234", "seed: 99"))
    with pytest.raises(ConfigError, match="out of date with params.yaml: run `dvc repro`"):
        config.load_resolved(root)


def test_training_rows_that_another_stage_holds_out_are_refused(params_dict: dict) -> None:
    # SFT's examples end up in the model RL starts from, so RL's held-out rows must not be among them.
    params_dict["splits"] = None  # the same check without the train/dev/test split
    params_dict["sft"]["train_questions"] = {"file": "train/asdiv.jsonl", "limit": 150, "offset": 1150}
    params_dict["rl"]["heldout"] = {"file": "train/asdiv.jsonl", "limit": 256, "offset": 1200}
    with pytest.raises(ConfigError, match=r"sft\.train_questions \(rows 1150-1299\) and rl\.heldout "
                                          r"\(rows 1200-1455\) share rows of train/asdiv\.jsonl"):
        validate(params_dict)


def test_training_rows_inside_an_evaluation_benchmark_are_refused(params_dict: dict) -> None:
    params_dict["splits"] = None
    params_dict["evaluate"]["benchmarks"]["asdiv_test"] = {"file": "train/asdiv.jsonl", "limit": 8,
                                                           "offset": 40}
    params_dict["distill"]["prompts"] = {"file": "train/asdiv.jsonl", "offset": 32}  # every row from 32 on
    with pytest.raises(ConfigError, match=r"distill\.prompts \(rows 32-\) and "
                                          r"evaluate\.benchmarks\.asdiv_test \(rows 40-47\)"):
        validate(params_dict)


def test_shipped_split_is_disjoint_and_every_subset_in_its_place(repo_root: Path) -> None:
    params = load_params(repo_root)
    split = params.splits
    assert split.report_on == "test"
    for key, subset in params.training_subsets().items():
        assert subset.file != split.file or split.train.holds(subset), key
    reported = params.reported_subsets()
    assert {"probe.questions", "sft.heldout", "rl.heldout", "distill.heldout"} <= set(reported)
    for key, subset in reported.items():
        assert subset.file != split.file or split.test.holds(subset), key


def test_reported_rows_outside_the_test_split_are_refused(params_dict: dict) -> None:
    params_dict["rl"]["heldout"] = {"file": "train/asdiv.jsonl", "limit": 256, "offset": 1200}  # dev rows
    with pytest.raises(ConfigError, match=r"rl\.heldout \(rows 1200-1455\) lies outside splits\.test "
                                          r"\(rows 600-1199\)"):
        validate(params_dict)


def test_training_rows_outside_the_train_split_are_refused(params_dict: dict) -> None:
    params_dict["rl"]["prompts"] = {"file": "train/asdiv.jsonl", "limit": 700}
    with pytest.raises(ConfigError, match=r"rl\.prompts \(rows 0-699\) lies outside splits\.train"):
        validate(params_dict)


def test_report_on_dev_points_every_check_at_dev(params_dict: dict) -> None:
    params_dict["splits"]["report_on"] = "dev"
    q = params_dict["probe"]["questions"]
    rows = f"{q['offset']}-{q['offset'] + q['limit'] - 1}"
    with pytest.raises(ConfigError, match=rf"probe\.questions \(rows {rows}\) lies outside splits\.dev"):
        validate(params_dict)
    dev = {"file": "train/asdiv.jsonl", "limit": 32, "offset": 1200}
    for section, key in (("probe", "questions"), ("sft", "heldout"), ("rl", "heldout"), ("distill", "heldout")):
        params_dict[section][key] = dev
    params_dict["evaluate"]["benchmarks"] = {"asdiv_dev": dev}
    assert validate(params_dict).splits.report_on == "dev"


def test_overlapping_splits_are_refused(params_dict: dict) -> None:
    params_dict["splits"]["dev"] = {"offset": 1100}
    with pytest.raises(ConfigError, match=r"splits\.dev \(rows 1100-\) and splits\.test \(rows 600-1199\) overlap"):
        validate(params_dict)


def test_adjacent_row_ranges_and_other_splits_do_not_clash() -> None:
    train = config.BenchmarkSubset(file="train/asdiv.jsonl", limit=1200)
    assert not train.shares_rows_with(config.BenchmarkSubset(file="train/asdiv.jsonl", limit=5, offset=1200))
    assert train.shares_rows_with(config.BenchmarkSubset(file="train/asdiv.jsonl", limit=5, offset=1199))
    assert not train.shares_rows_with(config.BenchmarkSubset(file="train/gsm8k.jsonl", limit=5))
    math_train = config.BenchmarkSubset(hub={"id": "data/math", "split": "train"}, limit=100)
    assert not math_train.shares_rows_with(config.BenchmarkSubset(hub={"id": "data/math", "split": "test"},
                                                                  limit=100))
    assert math_train.shares_rows_with(config.BenchmarkSubset(hub={"id": "data/math", "split": "train"},
                                                              offset=50))
    assert not math_train.shares_rows_with(train)


def test_no_evaluation_column_of_the_cpu_default_rests_on_fewer_than_30_questions(repo_root: Path) -> None:
    # n=2-8 columns gave intervals as wide as the whole scale (0.0 [0.0, 0.0] on 2 AIME questions).
    from r1repro.data import load_subset

    params = load_params(repo_root, profile="none")
    evaluate = params.evaluate
    for name, bench in evaluate.benchmarks.items():
        greedy = len(load_subset(repo_root / params.common.data_dir, bench))  # the rows the stage reads
        sampled = min(greedy, evaluate.sampled_limit or greedy)
        assert greedy >= 30, f"evaluate.benchmarks.{name}: {greedy} questions"
        assert sampled >= 30, f"evaluate: {name} sampled on {sampled} questions (sampled_limit)"


# A default that params.yaml overrides is what an omitted key means. These are switches and "none"
# values, where the default is the feature off (or resolved per machine), not a number that drifted;
# every other default must equal params.yaml's value, so that a class built without arguments (in a
# test, a benchmark) runs the pipeline's settings.
DEFAULT_IS_OFF = {
    "common.backend": "transformers: plain generate, right on any device; openvino is the CPU default's choice",
    "common.attention": "sdpa: transformers' own kernel on any device; grouped_decode is the CPU default's choice",
    "common.dtype": "auto is resolved per machine by stage_setup; a bare CommonParams computes in float32",
    "common.inference_dtype": "None: as dtype",
    "common.answer_cache_dir": "None: no cache, so a bare CommonParams never reuses the repository's answers",
    "splits": "None: no in-domain split",
    "rl.micro_batch_size": "None: the whole step in one pass (8 does not divide every step)",
    "rl.lora.enabled": "off: a full fine-tune",
    "rl.heldout": "None: no periodic held-out check",
    "rl.rollout_backend": "None: common.backend; the CPU default's policy decodes its own rollouts",
    "rl.seeds": "None: [common.seed]",
    "rl.prompt_filter.enabled": "off: train on rl.prompts as they come",
    "rl.exploration": "None: no pass@k sampling (it needs rl.heldout, None by default)",
    "rl.length_mechanism": "None: no one-update measurement (it needs the prompt filter, off by default)",
}


def _differences(default, given, key: str):
    """Keys (dotted) where two dumped values differ, down to the leaves both hold as dicts."""
    if isinstance(default, dict) and isinstance(given, dict):
        for name in sorted(set(default) | set(given)):
            yield from _differences(default.get(name), given.get(name), f"{key}.{name}")
    elif default != given:
        yield key


def _drifted_defaults(model: type, values: dict, prefix: str = ""):
    """Every key of params.yaml whose field has a default different from the value params.yaml sets."""
    from pydantic import TypeAdapter

    for name, field in model.model_fields.items():
        if name not in values:
            continue
        if prefix == "" and isinstance(field.annotation, type) and issubclass(field.annotation, config.Section):
            yield from _drifted_defaults(field.annotation, values[name], f"{name}.")
            continue  # a section's own default is the sum of its fields' defaults, checked there
        if field.is_required():
            continue
        adapter = TypeAdapter(field.annotation)
        default = adapter.dump_python(field.get_default(call_default_factory=True), mode="json")
        given = adapter.dump_python(adapter.validate_python(values[name]), mode="json")
        yield from _differences(default, given, prefix + name)


def test_config_defaults_equal_params_yaml(params_dict: dict) -> None:
    drifted = set(_drifted_defaults(config.Params, params_dict))
    assert drifted - set(DEFAULT_IS_OFF) == set(), "defaults that differ from params.yaml"
    assert set(DEFAULT_IS_OFF) <= drifted, "an exempt default now equals params.yaml: drop it from the list"
