"""Tests for `common.report_to`: the experiment tracker the trainers log to on top of dvclive.

Checked: "none" is the default (in the schema and in params.yaml) and every other value is a tracker
`check_tracker` knows; the value reaches TRL's SFTConfig (SFT and the distillation students) and
GRPOConfig (built by `make_trainer`), and survives the JSON a launched training process is handed;
it stays out of the checkpoint fingerprint; a tracker whose package is missing stops `check_tracker`,
`sft.train_sft`, `rl.train_run` and a training stage's setup with an error naming the key, the package
and the install command. No tracker is installed or started: `importlib.util.find_spec` is faked.

    pytest tests/test_tracking.py -q
"""

from __future__ import annotations

import importlib.util
import json
import typing
from pathlib import Path

import pytest
import yaml

from r1repro import distill, rl, runtime, sft
from r1repro.config import CommonParams, ConfigError, DistillParams, RlParams, SftParams
from r1repro.generation import Usage
from r1repro.modeling import TRACKERS, check_tracker

ROOT = Path(__file__).resolve().parents[1]
CHOICES = typing.get_args(CommonParams.model_fields["report_to"].annotation)
ROWS = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i), "id": f"q{i}"} for i in range(4)]


@pytest.fixture
def installed(monkeypatch):
    """Pretend exactly the given top-level modules are installed (others: find_spec returns None)."""
    real = importlib.util.find_spec

    def pretend(*modules: str) -> None:
        def find_spec(name, package=None):
            if name in {m for tracker in TRACKERS.values() for m in tracker[0]}:
                return object() if name in modules else None
            return real(name, package)
        monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    return pretend


# ---------------------------------------------------------------------------------------------------
# The parameter
# ---------------------------------------------------------------------------------------------------


def test_none_is_the_default_and_every_choice_is_a_known_tracker():
    assert CommonParams().report_to == "none"
    assert yaml.safe_load((ROOT / "params.yaml").read_text())["common"]["report_to"] == "none"
    assert set(CHOICES) == {"none", *TRACKERS}
    with pytest.raises(ValueError, match="report_to"):
        CommonParams(report_to="comet_ml")


# ---------------------------------------------------------------------------------------------------
# The installed-package check
# ---------------------------------------------------------------------------------------------------


def test_none_needs_no_package(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("report_to none must not look any package up")
    monkeypatch.setattr(importlib.util, "find_spec", fail)
    check_tracker("none")


@pytest.mark.parametrize("tracker, package", [("trackio", "trackio"), ("tensorboard", "tensorboard"),
                                              ("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_missing_tracker_names_the_key_the_package_and_the_install_command(tracker, package, installed):
    installed()
    with pytest.raises(ConfigError) as err:
        check_tracker(tracker)
    message = str(err.value)
    assert f"common.report_to is {tracker!r}" in message
    assert f"the {package} package is not installed" in message
    assert f"python -m pip install {package}" in message and "common.report_to: none" in message
    installed(*TRACKERS[tracker][0][:1])
    check_tracker(tracker)  # installed: no error


def test_tensorboard_is_found_through_tensorboardx_too(installed):
    installed("tensorboardX")  # transformers' TensorBoardCallback takes either
    check_tracker("tensorboard")
    with pytest.raises(ConfigError, match="no module trackio"):
        check_tracker("trackio")


def test_an_unknown_tracker_is_refused():
    with pytest.raises(ConfigError, match="unknown tracker 'comet_ml'"):
        check_tracker("comet_ml")


# ---------------------------------------------------------------------------------------------------
# It reaches TRL: SFT, distillation students, GRPO
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tracker, normalised", [("none", []), ("trackio", ["trackio"]),
                                                 ("tensorboard", ["tensorboard"]), ("wandb", ["wandb"]),
                                                 ("mlflow", ["mlflow"])])
def test_report_to_reaches_sft_config(tracker, normalised, tmp_path):
    settings = sft.TrainSettings.from_params(SftParams(), CommonParams(device="cpu", report_to=tracker))
    assert settings.report_to == tracker
    # transformers turns "none" into [] and a name into a one-item list
    assert sft._sft_config(tmp_path, settings, True, False).report_to == normalised


def test_sft_default_and_launched_json_keep_it_out_of_the_fingerprint(tmp_path):
    assert sft.TrainSettings().report_to == "none"
    assert sft._sft_config(tmp_path, sft.TrainSettings(), True, False).report_to == []
    settings = sft.TrainSettings(report_to="trackio")
    # a launched process (common.num_processes > 1, common.isolate_training) reads the settings from JSON
    assert sft.TrainSettings.from_json(json.loads(json.dumps(settings.to_json()))) == settings
    # a tracker changes no weight: a run started without one resumes with one
    assert settings.identity() == sft.TrainSettings().identity() and "report_to" not in settings.identity()


def test_distillation_students_train_with_common_report_to(monkeypatch):
    seen = {}
    monkeypatch.setattr(distill.modeling, "load_tokenizer", lambda *args, **kwargs: None)
    monkeypatch.setattr(distill, "to_sft_dataset", lambda *args: ["rows"])
    monkeypatch.setattr(distill, "train_sft", lambda dataset, model, out, settings, **kwargs:
                        seen.setdefault("settings", settings))
    distill.train_student("s", "student", ["a trace"], DistillParams(),
                          CommonParams(device="cpu", report_to="wandb"))
    assert seen["settings"].report_to == "wandb"


@pytest.mark.parametrize("tracker, normalised", [("none", []), ("trackio", ["trackio"]),
                                                 ("mlflow", ["mlflow"])])
def test_report_to_reaches_grpo_config(tracker, normalised, tmp_path):
    cfg = RlParams(prompts_per_step=2, num_generations=2)
    args = rl.grpo_config(cfg, "dr_grpo", output_dir=tmp_path, seed=0, use_cpu=True, report_to=tracker)
    assert args.report_to == normalised
    assert rl.grpo_config(cfg, "dr_grpo", output_dir=tmp_path, seed=0, use_cpu=True).report_to == []


class Built(Exception):
    """Stops make_trainer once its GRPOConfig is made (the tracker itself is not installed here)."""


def test_make_trainer_hands_common_report_to_to_grpo_config(tiny_model, tmp_path, monkeypatch):
    made = {}
    real = rl.grpo_config

    def spy(*args, **kwargs):
        made["args"] = real(*args, **kwargs)
        raise Built
    monkeypatch.setattr(rl, "grpo_config", spy)
    cfg = RlParams(init_model=str(tiny_model), output_dir=str(tmp_path / "rl"), template="r1", max_steps=1,
                   num_generations=2, prompts_per_step=2, max_completion_length=4,
                   reward_weights={"accuracy": 1.0, "format": 0.0})
    common = CommonParams(device="cpu", report_to="tensorboard")
    with pytest.raises(Built):
        rl.make_trainer(cfg, "grpo", common, rows=ROWS)
    assert made["args"].report_to == ["tensorboard"]
    # a launched RL process rebuilds `common` from JSON (rl._train_job)
    assert CommonParams.model_validate(json.loads(json.dumps(common.model_dump(mode="json")))) == common


# ---------------------------------------------------------------------------------------------------
# Refused before any training
# ---------------------------------------------------------------------------------------------------


def test_train_sft_refuses_a_missing_tracker_before_anything_loads(installed, tmp_path):
    installed()
    with pytest.raises(ConfigError, match=r"common.report_to is 'trackio'.*pip install trackio"):
        sft.train_sft([], "no/such-model", tmp_path / "out", sft.TrainSettings(report_to="trackio"))
    assert not (tmp_path / "out").exists()


def test_train_run_refuses_a_missing_tracker_before_anything_loads(installed, tmp_path):
    installed()
    cfg = RlParams(init_model="no/such-model", output_dir=str(tmp_path / "rl"))
    with pytest.raises(ConfigError, match=r"common.report_to is 'mlflow'.*pip install mlflow"):
        rl.train_run(cfg, "grpo", CommonParams(device="cpu", report_to="mlflow"), rows=ROWS)
    assert not (tmp_path / "rl").exists()


def test_training_stages_check_the_tracker_at_setup(installed, tmp_path, monkeypatch):
    installed()
    monkeypatch.chdir(ROOT)  # stage_setup finds the repository from here and moves there; undone after
    common = CommonParams(device="cpu", report_to="wandb").model_dump(mode="json")
    for stage, section in (("sft", SftParams()), ("rl", RlParams()), ("distill", DistillParams())):
        with pytest.raises(ConfigError, match="common.report_to is 'wandb'"):
            runtime.stage_setup(stage, common, section.model_dump(mode="json"), str(tmp_path / stage),
                                usage=Usage())
    # a stage that trains nothing does not need the tracker
    probe = yaml.safe_load((ROOT / "params.yaml").read_text())["probe"]
    ctx = runtime.stage_setup("probe", common, probe, str(tmp_path / "probe"), usage=Usage())
    assert ctx.common.report_to == "wandb"
