"""Tests of r1repro.modeling: device choice, hub-id-or-folder resolution, and its error messages.

The loading tests use the embedded model in models/base (made by `dvc repro import_model`) and are
skipped, with that reason, when it is absent.

    pytest tests/test_modeling.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from r1repro import modeling
from r1repro.config import ConfigError
from r1repro.modeling import (
    check_source,
    ensure_pad_token,
    load_model,
    load_tokenizer,
    looks_local,
    resolve_device,
)

BASE = Path(__file__).resolve().parents[1] / "models" / "base"
needs_base = pytest.mark.skipif(
    not (BASE / "config.json").is_file(), reason="models/base missing: run `dvc repro import_model`"
)


# --- devices -------------------------------------------------------------------------------------


def test_resolve_device_cpu_and_auto_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == "cpu"


def test_resolve_device_auto_picks_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"


def test_resolve_device_cuda_without_gpu_says_how_to_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="common.device.*'auto' or 'cpu'"):
        resolve_device("cuda")


def test_resolve_device_unknown_name():
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")


# --- hub id or folder ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["./model", "../model", "/abs/model", "~/model", "models/sft",
                                  "runs/a/b", "C:\\models\\x"])
def test_local_looking_names(name):
    assert looks_local(name)


@pytest.mark.parametrize("name", ["HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2"])
def test_hub_ids_are_not_local(name):
    assert not looks_local(name)
    assert check_source(name) == name


def test_existing_folder_is_local_even_without_prefix(tmp_path, monkeypatch):
    (tmp_path / "org" / "name").mkdir(parents=True)
    (tmp_path / "org" / "name" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert looks_local("org/name")
    assert check_source("org/name") == str(tmp_path / "org" / "name")


def test_missing_models_folder_points_to_dvc(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_model("models/sft")
    message = str(err.value)
    assert "'models/sft'" in message and str(tmp_path / "models" / "sft") in message
    assert "does not exist" in message and "dvc repro import_model" in message


def test_missing_other_folder_has_no_dvc_hint(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as err:
        load_tokenizer(str(tmp_path / "nowhere"))
    assert "dvc" not in str(err.value)


def test_folder_without_config_json(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="no config.json.*save_pretrained"):
        load_model(str(tmp_path))


def test_file_instead_of_folder(tmp_path):
    target = tmp_path / "model.gguf"
    target.write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match="is a file; expected a model folder"):
        load_tokenizer(str(target))


def test_empty_name():
    with pytest.raises(ConfigError, match="model name is empty"):
        check_source(" ")


def test_hub_id_offline_is_rewrapped(monkeypatch, tmp_path):
    from huggingface_hub import constants

    # The constant is read at import: patching it equals setting HF_HUB_OFFLINE=1 before start.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    for loader in (load_tokenizer, load_model):
        with pytest.raises(ConfigError) as err:
            loader("r1repro-tests/no-such-model")
        message = str(err.value)
        assert "'r1repro-tests/no-such-model'" in message and "HF_HUB_OFFLINE is set" in message
        assert "local folder" in message and "models/base" in message


def test_bad_dtype():
    with pytest.raises(ConfigError, match="unknown dtype 'float8'"):
        load_model(str(BASE), dtype="float8")


# --- loading the embedded model ------------------------------------------------------------------


@needs_base
def test_tokenizer_pads_left_with_a_pad_token():
    tokenizer = load_tokenizer(str(BASE))
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id is not None
    batch = tokenizer(["a", "a b c"], padding=True)
    assert batch["attention_mask"][0][0] == 0 and batch["attention_mask"][0][-1] == 1


@needs_base
def test_missing_pad_token_falls_back_to_eos():
    tokenizer = load_tokenizer(str(BASE))
    tokenizer.pad_token = None
    assert ensure_pad_token(tokenizer).pad_token_id == tokenizer.eos_token_id


@needs_base
def test_load_model_eval_dtype_device():
    model = load_model(str(BASE), dtype="bfloat16", device="cpu")
    assert not model.training
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu"


@needs_base
@pytest.mark.parametrize("trust", [False, True])
def test_trust_remote_code_passed_through(monkeypatch, trust):
    seen = {}

    class Stub:
        @staticmethod
        def from_pretrained(source, **kwargs):
            seen.update(kwargs, source=source)
            return torch.nn.Linear(1, 1)

    monkeypatch.setattr("transformers.AutoModelForCausalLM", Stub)
    load_model(str(BASE), device="cpu", trust_remote_code=trust)
    assert seen["trust_remote_code"] is trust and seen["source"] == str(BASE)


def test_default_is_no_remote_code():
    import inspect

    for fn in (modeling.load_model, modeling.load_tokenizer):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False


def test_end_of_turn_id_is_the_single_token_generation_stops_on(base_model_dir) -> None:
    from types import SimpleNamespace

    from r1repro.modeling import end_of_turn_id, load_tokenizer

    tokenizer = load_tokenizer(str(base_model_dir))
    assert end_of_turn_id("r1_chat", tokenizer) == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_id("r1", tokenizer) == tokenizer.eos_token_id
    # A marker the tokenizer splits into several tokens could never stop generation.
    split = SimpleNamespace(eos_token="<|im_end|>", encode=lambda text, add_special_tokens: [7, 8])
    with pytest.raises(ConfigError, match="is not one token"):
        end_of_turn_id("r1", split)


def test_checkpointing_argument_names_the_keyword_the_installed_transformers_has() -> None:
    """transformers 5.17 (the GPU lock) has only `gradient_checkpointing`; later ones `activation_checkpointing`."""
    import dataclasses

    import transformers

    from r1repro.modeling import checkpointing_argument

    (key,) = checkpointing_argument(True)
    assert key in {f.name for f in dataclasses.fields(transformers.TrainingArguments)}

    @dataclasses.dataclass
    class Old:  # the 5.17 field set, as far as this matters
        gradient_checkpointing: bool = False

    assert checkpointing_argument(False, Old) == {"gradient_checkpointing": False}
