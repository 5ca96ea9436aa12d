"""Tests of the multi-process path (r1repro.distributed): accelerate configs, launch settings, and real
2-process data-parallel SFT and GRPO steps on CPU (torchrun workers joined over gloo), on a tiny
random-weight Llama with the embedded tokenizer (tests/conftest.py).

What the launched runs must show: two processes trained (world size 2), both ended with the same
weights (the launcher compares every process's digest of its trainable weights), the weights moved
from the start, and the notebook's process got the usual result and files back.

    pytest tests/test_distributed.py -q      # about a minute on 2 CPU cores, most of it process start-up
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from r1repro import resumable, rl, sft
from r1repro.config import CommonParams, ConfigError, RlParams, SftParams, deep_merge, validate
from r1repro.distributed import LAUNCHABLE, Launch, LaunchError, per_process
from r1repro.rl_diagnostics import COMPLETIONS_FILE, read_rows

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))
DDP = ROOT / "configs" / "accelerate" / "ddp.yaml"

pytestmark = pytest.mark.filterwarnings(  # raised inside TRL 1.16 on transformers 5, not by us
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

# A random-weight model never answers correctly, so accuracy and format rewards tie within every
# group and GRPO gets no gradient. The launched processes cannot see a reward registered in this
# process, so a sitecustomize module (imported by every Python process at start-up) registers one
# with variance, characters / 100, in each of them.
CHARS_REWARD = '''
from r1repro import rewards
def chars_reward(completions, **kwargs):
    return [len(c) / 100 for c in completions]
rewards.REWARDS["chars"] = chars_reward
'''


@pytest.fixture
def two_processes() -> CommonParams:
    return CommonParams(device="cpu", seed=7, num_processes=2, accelerate_config=str(DDP))


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """What each launch reported (world size, every process's weight digest), as the launcher saw it."""
    seen: list[dict] = []
    original = Launch.run

    def recording(self, kind, payload):
        seen.append(original(self, kind, payload))
        return seen[-1]

    monkeypatch.setattr(Launch, "run", recording)
    return seen


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def assert_agreed_and_trained(report: dict, start: Path, final: Path) -> None:
    assert report["world_size"] == 2
    digests = report["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1], "the two processes ended with different weights"
    before, after = weights(start), weights(final)
    unchanged = [name for name, tensor in before.items() if torch.equal(tensor, after[name])]
    assert not unchanged, f"parameters not updated: {unchanged}"


# --- configs and settings (no launch) ---------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_accelerate_configs_parse_with_the_installed_accelerate(path: Path) -> None:
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    config = load_config_from_file(str(path))  # refuses unknown top-level keys
    assert config.distributed_type.value in LAUNCHABLE
    # Keys under deepspeed_config become `accelerate launch` options; a misspelt one would be ignored.
    options = {action.dest for action in launch_command_parser()._actions}
    assert set(config.deepspeed_config) <= options
    assert config.mixed_precision == "no"  # precision comes from params, never from this file
    stage = (config.deepspeed_config or {}).get("zero_stage")
    assert stage == {"ddp.yaml": None, "zero2.yaml": 2, "zero3.yaml": 3}[path.name]


def test_params_name_bad_launch_settings(repo_root: Path) -> None:
    data = yaml.safe_load((repo_root / "params.yaml").read_text())
    with pytest.raises(ConfigError, match=r"common\.num_processes"):
        validate({**data, "common": {**data["common"], "num_processes": 0}})
    with pytest.raises(ConfigError, match=r"common\.accelerate_config.*\.yaml"):
        validate({**data, "common": {**data["common"], "accelerate_config": "configs/ds.json"}})
    with pytest.raises(ConfigError, match=r"sft\.batch_size \(8\) must be a multiple of common\.num_processes \(3\)"):
        validate({**data, "common": {**data["common"], "num_processes": 3}})
    four = {**data, "common": {**data["common"], "num_processes": 4}, "rl": {**data["rl"], "prompts_per_step": 2}}
    with pytest.raises(ConfigError, match=r"rl\.micro_batch_size \(8\) must divide .* \(4\)"):
        validate(four)  # 2 prompts x 8 completions over 4 processes: 4 each, not micro-batches of 8
    four["rl"] = {**four["rl"], "micro_batch_size": 2}
    assert validate(four).common.num_processes == 4
    assert per_process(16, "rl.x", 4) == 4


def test_the_gpu_profiles_commented_multi_gpu_example_validates(repo_root: Path) -> None:
    text = (repo_root / "profiles" / "gpu.yaml").read_text()
    example = re.sub(r"^(\s*)# ( *(num_processes|accelerate_config):.*)$", r"\1\2", text,
                     flags=re.MULTILINE)  # the example's lines, uncommented as the comment says
    assert example != text
    params = validate(deep_merge(yaml.safe_load((repo_root / "params.yaml").read_text()), yaml.safe_load(example)))
    assert params.common.num_processes == 8 and (repo_root / params.common.accelerate_config).is_file()
    per_process = params.rl.prompts_per_step * params.rl.num_generations // params.common.num_processes
    assert per_process % params.rl.micro_batch_size == 0


def test_launch_from_common_checks_before_starting_anything(tmp_path: Path, two_processes) -> None:
    assert Launch.from_common(CommonParams()) is None  # one process: train in place, as before
    with pytest.raises(ConfigError, match=r"common\.accelerate_config: .*missing\.yaml not found"):
        Launch.from_common(two_processes.model_copy(update={"accelerate_config": str(tmp_path / "missing.yaml")}))
    zero2 = two_processes.model_copy(update={"accelerate_config": str(DDP.with_name("zero2.yaml"))})
    with pytest.raises(ConfigError, match="DeepSpeed, which needs GPUs"):
        Launch.from_common(zero2)
    launch = Launch.from_common(two_processes)
    assert (launch.num_processes, launch.distributed_type, launch.zero_stage) == (2, "MULTI_GPU", None)
    command = launch.command(Path("job.json"), Path("result.json"))
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    # --cpu would make accelerate start one process; the trainer's use_cpu picks gloo instead.
    assert "--cpu" not in command and command[command.index("--num_processes") + 1] == "2"
    assert command[-4:] == ["-m", "r1repro.distributed", "job.json", "result.json"]


def test_launch_check_refuses_callbacks_and_lora_under_zero3() -> None:
    from r1repro.config import LoraParams

    lora = LoraParams(enabled=True, r=4)
    ddp = Launch(2, DDP, "MULTI_GPU")
    zero3 = Launch(2, DDP.with_name("zero3.yaml"), "DEEPSPEED", zero_stage=3)
    ddp.check(lora, (), "rl.lora.enabled")  # DDP merges LoRA like one process does
    zero3.check(LoraParams(enabled=False), (), "rl.lora.enabled")  # a full fine-tune shards fine
    zero3.check(None, (), "sft.lora")
    with pytest.raises(ConfigError, match=r"rl\.lora\.enabled: LoRA cannot be merged .*zero3\.yaml.*zero2\.yaml"):
        zero3.check(lora, (), "rl.lora.enabled")
    with pytest.raises(ValueError, match="callbacks .* cannot reach launched training processes"):
        ddp.check(None, [object()], "sft.lora")


# --- real launches ----------------------------------------------------------------------------------


def test_two_process_sft_trains_one_model_and_a_failed_launch_replaces_nothing(
        tiny_model, sft_rows, two_processes, reports, tmp_path) -> None:
    # batch_size 4 over 2 processes: 2 examples each per step; 4 examples x 2 epochs = 2 steps.
    cfg = SftParams(init_model=str(tiny_model), output_dir=str(tmp_path / "sft"), batch_size=4, epochs=2.0,
                    learning_rate=1e-2, save_steps=1, max_length=160)
    result = sft.train_from_params(sft_rows, cfg, two_processes, live_dir=tmp_path / "live",
                                   progress=False)
    assert (result.global_step, result.start_step, result.examples) == (2, 0, 4)
    assert [step for step, _ in result.losses] == [1, 2]
    assert_agreed_and_trained(reports[-1], tiny_model, result.output_dir)
    record = json.loads((result.output_dir / resumable.FINAL_RECORD).read_text())
    assert record["launch"]["num_processes"] == 2 and record["global_step"] == 2
    assert (tmp_path / "live" / "plots" / "metrics" / "train" / "loss.tsv").is_file()  # written once, by rank 0
    assert not Path(cfg.output_dir + "-checkpoints").exists()

    # batch_size is per step over all processes: one process with all 4 examples per step takes the
    # same steps (up to float rounding: the two halves' gradients are averaged in another order).
    alone = sft.train_from_params(sft_rows, cfg.model_copy(update={"output_dir": str(tmp_path / "one")}),
                                  two_processes.model_copy(update={"num_processes": 1}), progress=False)
    assert [loss for _, loss in alone.losses] == pytest.approx([loss for _, loss in result.losses], rel=1e-6)
    together = weights(result.output_dir)
    assert all(torch.allclose(t, together[n], atol=1e-5) for n, t in weights(alone.output_dir).items())

    # A launch whose processes fail (the starting model is missing) raises and keeps the model.
    good = weights(result.output_dir)
    broken = cfg.model_copy(update={"init_model": str(tmp_path / "no_such_model")})
    with pytest.raises(LaunchError, match=r"sft training in 2 processes .* failed with exit code 1: "
                       r"r1repro.config.ConfigError: model .*no_such_model.* does not exist"):
        sft.train_from_params(sft_rows, broken, two_processes, progress=False)
    assert all(torch.equal(t, weights(result.output_dir)[n]) for n, t in good.items())
    assert not list(result.output_dir.parent.glob(".sft.*"))  # no staging folder left behind


def test_two_process_grpo_step_gathers_both_shares_and_agrees(
        tiny_model, worked_traces, two_processes, reports, tmp_path, monkeypatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(CHARS_REWARD)
    monkeypatch.setenv("PYTHONPATH", str(site))
    rows = [{"problem": e.problem, "answer": e.answer, "id": f"q{e.id}"} for e in worked_traces]
    # 2 prompts x 2 completions per step over 2 processes: one prompt's group on each.
    cfg = RlParams(init_model=str(tiny_model), output_dir=str(tmp_path / "rl"), template="none", max_steps=1,
                   num_generations=2, prompts_per_step=2, max_completion_length=8, learning_rate=1e-3,
                   save_steps=1, reward_weights={"chars": 1.0, "accuracy": 0.0, "format": 0.0})
    result = rl.train_run(cfg, "dr_grpo", two_processes, rows=rows)
    assert result.global_step == 1 and result.resumed_from is None
    assert_agreed_and_trained(reports[-1], tiny_model, result.final_dir)
    assert json.loads((result.final_dir / resumable.FINAL_RECORD).read_text())["loss_type"] == "dr_grpo"
    # The diagnostics row holds both processes' completions: both prompts, 4 completions, written once.
    (row,) = result.diagnostics
    assert row["step"] == 1 and len(row["question_ids"]) == 2
    assert row["reward"] == pytest.approx(row["trl_reward"], abs=1e-5)  # TRL's gathered mean agrees
    assert len(read_rows(result.run_dir / COMPLETIONS_FILE)) == 2  # the first group, once
    record = json.loads((result.run_dir / rl.CHECKPOINTS / resumable.RUN_RECORD).read_text())
    assert record["launch"]["num_processes"] == 2


# --- one process of its own per run (common.isolate_training) ---------------------------------------


def test_isolated_training_is_a_one_process_launch_that_keeps_the_in_place_fingerprint(tmp_path) -> None:
    isolated = Launch.from_common(CommonParams(isolate_training=True))
    assert isolated is not None and isolated.num_processes == 1
    assert isolated.command(tmp_path / "j.json", tmp_path / "r.json")[1:3] == ["-m", "r1repro.distributed"]
    assert "accelerate" not in " ".join(isolated.command(tmp_path / "j.json", tmp_path / "r.json"))
    # Where a run trains is not what it trains: its checkpoints resume in place and isolated alike.
    assert isolated.identity() is None
    assert resumable.fingerprint("rl", "some/hub-id", {"x": 1}, isolated) == \
        resumable.fingerprint("rl", "some/hub-id", {"x": 1}, None)


def test_two_rl_runs_in_sequence_each_train_in_a_process_of_their_own(
        tiny_model, worked_traces, reports, tmp_path, monkeypatch) -> None:
    """What the GPU profiles do (common.isolate_training): GRPO, then Dr. GRPO, each in its own process,
    so whatever the first held (on a GPU: its colocated vLLM engine) is gone before the second starts."""
    import os

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(CHARS_REWARD)
    monkeypatch.setenv("PYTHONPATH", str(site))
    rows = [{"problem": e.problem, "answer": e.answer, "id": f"q{e.id}"} for e in worked_traces]
    common = CommonParams(device="cpu", seed=7, isolate_training=True)
    cfg = RlParams(init_model=str(tiny_model), output_dir=str(tmp_path / "rl"), template="none", max_steps=2,
                   num_generations=2, prompts_per_step=2, max_completion_length=8, learning_rate=1e-3,
                   save_steps=1, updates_per_rollout=2,
                   reward_weights={"chars": 1.0, "accuracy": 0.0, "format": 0.0})
    results = [rl.train_run(cfg, run, common, rows=rows) for run in ("grpo", "dr_grpo")]
    assert [r["world_size"] for r in reports] == [1, 1]
    pids = [r["pid"] for r in reports]
    assert os.getpid() not in pids and pids[0] != pids[1], pids
    for run, result in zip(("grpo", "dr_grpo"), results):
        assert result.global_step == 2
        record = json.loads((result.final_dir / resumable.FINAL_RECORD).read_text())
        assert record["loss_type"] == run and "launch" not in record
        before, after = weights(tiny_model), weights(result.final_dir)
        assert any(not torch.equal(t, after[n]) for n, t in before.items()), f"{run} did not train"
        # The launched process wrote the diagnostics: one rollout, trained on in two optimiser steps.
        assert [r["step"] for r in result.diagnostics] == [1, 2]
        assert "groups" in result.diagnostics[0] and result.diagnostics[1]["rollout_step"] == 1
