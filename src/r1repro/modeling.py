"""Load a causal LM and its tokenizer from a hub id or a local folder, with errors that say the fix.

Every stage names its model the same way in params.yaml: a Hugging Face hub id
(`HuggingFaceTB/SmolLM2-135M-Instruct`) or a local folder (`models/base`, written by the
`import_model` stage). This module decides which of the two a name is, checks it before
transformers does, and turns transformers' generic failures into `ConfigError`s naming the path or
id, what was expected and how to fix it.

    from r1repro.modeling import load_model, load_tokenizer
    tokenizer = load_tokenizer("models/base")
    model = load_model("models/base", dtype="float32", device="auto")
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from r1repro.config import CommonParams, ConfigError, LoraParams

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Names that can only mean a folder on disk: a hub id is "name" or "owner/name", never these.
_LOCAL_PREFIXES = ("./", "../", "/", "~", "models/", "models" + os.sep)
DTYPES = ("float32", "bfloat16", "float16")
# common.report_to's trackers: the modules transformers looks for (any one will do), the package to install.
TRACKERS = {
    "trackio": (("trackio",), "trackio"),
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "wandb": (("wandb",), "wandb"),
    "mlflow": (("mlflow",), "mlflow"),
}
log = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> str:
    """The torch device to run on.

    Args:
        device: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".

    Returns:
        "cpu", "cuda" or "cuda:N".

    Raises:
        ConfigError: for an unknown name, or "cuda" on a machine without a usable GPU.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"common.device: {device!r} was asked for but torch sees no CUDA GPU "
                f"(torch {torch.__version__}); set common.device to 'auto' or 'cpu', "
                "or install a CUDA build of torch"
            )
        return device
    raise ConfigError(f"common.device: unknown device {device!r}; expected 'auto', 'cpu' or 'cuda'")


def looks_local(name_or_path: str) -> bool:
    """Whether a model name can only mean a folder on disk (whether or not it exists).

    Args:
        name_or_path: a hub id ("owner/name") or a path.

    Returns:
        True for existing paths and for names a hub id cannot take: a leading "./", "../", "/", "~"
        or "models/", a backslash, or more than one "/".
    """
    if Path(name_or_path).expanduser().exists():
        return True
    if name_or_path.startswith(_LOCAL_PREFIXES) or "\\" in name_or_path:
        return True
    return name_or_path.count("/") > 1


def check_source(name_or_path: str) -> str:
    """Validate a model name before transformers sees it.

    Args:
        name_or_path: a hub id or a local folder.

    Returns:
        The absolute folder path for a local model, the hub id unchanged otherwise.

    Raises:
        ConfigError: a local-looking path that does not exist, is not a folder, or has no
            config.json.
    """
    if not name_or_path or not name_or_path.strip():
        raise ConfigError("model name is empty: expected a hub id (owner/name) or a local folder")
    if not looks_local(name_or_path):
        return name_or_path
    folder = Path(name_or_path).expanduser().resolve()
    if not folder.exists():
        hint = (
            "run `dvc repro import_model` first (it writes models/base)"
            if Path(name_or_path).parts[:1] == ("models",)
            else "check the path, or give a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct"
        )
        raise ConfigError(f"model {name_or_path!r}: folder {folder} does not exist; {hint}")
    if not folder.is_dir():
        raise ConfigError(f"model {name_or_path!r}: {folder} is a file; expected a model folder")
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"model {name_or_path!r}: {folder} has no config.json, so it is not a saved "
            "transformers model; point to the folder that save_pretrained() wrote "
            "(it holds config.json and *.safetensors)"
        )
    return str(folder)


def end_of_turn_id(template: str, tokenizer: PreTrainedTokenizerBase) -> int:
    """The token id of `template`'s end-of-turn marker, where generation must stop.

    Raises:
        ConfigError: the marker is not a single token of this tokenizer, so nothing could stop on it.
    """
    from r1repro.templates import end_of_turn

    marker = end_of_turn(template, tokenizer)
    ids = tokenizer.encode(marker, add_special_tokens=False)
    if len(ids) != 1:
        raise ConfigError(f"template {template!r}: end-of-turn marker {marker!r} is not one token "
                          f"of this tokenizer, so generation cannot stop on it")
    return ids[0]


def hub_error(name: str, err: OSError) -> ConfigError:
    """Rewrap transformers' OSError for a hub id that could not be fetched (names the id and the fix)."""
    from huggingface_hub import constants

    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub could not be reached"
    return ConfigError(
        f"model {name!r}: not a local folder, and {why} or the id does not exist ({first_line}). "
        "Expected a hub id that is online or already in the Hugging Face cache, or a local folder. "
        "Fix: use a local folder (e.g. models/base, made by `dvc repro import_model`), or download "
        "it once with network access (`huggingface-cli download ID`), or check the id's spelling"
    )


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give a tokenizer a pad token (its EOS) when it has none, in place.

    Batched generation pads the shorter prompts; without a pad token the tokenizer refuses to pad,
    and `generate` cannot tell padding from text. EOS is the usual stand-in: padding sits on the
    left where the attention mask hides it, and after a sequence ends `generate` fills the rest
    with it, so a pad token equal to EOS is never mistaken for text.

    Args:
        tokenizer: any transformers tokenizer.

    Returns:
        The same tokenizer.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(
                f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an EOS token; "
                "batched generation needs one: set tokenizer.pad_token before generating"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load a tokenizer set up for batched generation.

    Padding goes on the left: a decoder continues from the last position of each row, so the
    prompt must end there, with the padding before it. The pad token falls back to EOS.

    Args:
        name_or_path: a hub id or a local folder.
        trust_remote_code: let transformers run tokenizer code shipped with the model.

    Returns:
        The tokenizer, with padding_side "left" and a pad token.

    Raises:
        ConfigError: a missing folder, or a hub id that cannot be fetched.
    """
    from transformers import AutoTokenizer

    source = check_source(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise hub_error(name_or_path, err) from err
    tokenizer.padding_side = "left"
    return ensure_pad_token(tokenizer)


def load_model(name_or_path: str, dtype: str = "float32", device: str = "auto",
               trust_remote_code: bool = False, attention: str = "sdpa") -> PreTrainedModel:
    """Load a causal LM in eval mode on the chosen device.

    Args:
        name_or_path: a hub id or a local folder.
        dtype: "float32", "bfloat16" or "float16" (float16 is slow and unstable on CPU); "auto":
            bfloat16 where the device computes it natively, else float32 (see `resolve_dtypes`).
        device: "auto", "cpu", "cuda" or "cuda:N" (see `resolve_device`).
        trust_remote_code: let transformers run model code shipped with the model.
        attention: transformers' attention implementation: "sdpa", "eager" or "grouped_decode"
            (`r1repro.cpu_decode`: faster one-token decode steps, SDPA for everything else).

    Returns:
        The model, in eval mode.

    Raises:
        ConfigError: a bad dtype or device, a missing folder, a folder without config.json, or a
            hub id that cannot be fetched.
    """
    import torch
    from transformers import AutoModelForCausalLM

    target = resolve_device(device)
    dtype = resolved_dtype(dtype, target)
    if dtype not in DTYPES:
        raise ConfigError(f"common.dtype: unknown dtype {dtype!r}; expected one of {DTYPES} or auto")
    source = check_source(name_or_path)
    from r1repro.cpu_decode import attention_argument

    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code,
            **attention_argument(attention),
        )
    except OSError as err:
        raise hub_error(name_or_path, err) from err
    except ValueError as err:
        # A config.json that transformers cannot map to a model class (no model_type, or a custom
        # architecture needing trust_remote_code) surfaces as ValueError.
        raise ConfigError(
            f"model {name_or_path!r}: transformers cannot build a causal LM from it ({err}); "
            "if the model ships its own code, set common.trust_remote_code: true"
        ) from err
    return model.to(target).eval()


def lora_config(lora: LoraParams | None):
    """PEFT's `LoraConfig` for params `lora`, or None for a full fine-tune (None or `enabled: false`).

    SFT, distillation and RL hand it to TRL's trainers as `peft_config`; their final models are
    merged (`merge_and_unload`) before saving, so later stages load a plain transformers folder.
    """
    if lora is None or not lora.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), task_type="CAUSAL_LM")


def check_tracker(name: str) -> None:
    """Refuse an experiment tracker (`common.report_to`) whose package is not installed.

    transformers would fail only when the trainer is built, after a stage has generated and loaded
    its models, and with a message that names no params key. The training stages call this first
    (`runtime.stage_setup`), and `sft.train_sft` and `rl.train_run` again, before any training or launch.
    It only looks the modules up (`importlib.util.find_spec`): nothing is imported.

    Args:
        name: "none" (always fine) or a key of `TRACKERS`.

    Raises:
        ConfigError: an unknown tracker, or one whose package is missing, naming common.report_to,
            the package and the command that installs it.
    """
    import importlib.util

    if name == "none":
        return
    if name not in TRACKERS:
        raise ConfigError(f"common.report_to: unknown tracker {name!r}; expected none or one of "
                          f"{', '.join(TRACKERS)}")
    modules, package = TRACKERS[name]
    if not any(importlib.util.find_spec(module) is not None for module in modules):
        raise ConfigError(f"common.report_to is {name!r} but the {package} package is not installed "
                          f"(no module {' or '.join(modules)}); install it into this environment with "
                          f"`python -m pip install {package}`, or set common.report_to: none")


def native_bf16(device: str) -> bool:
    """Whether `device` computes bfloat16 natively: a CUDA GPU that supports it, or a CPU with AMX or
    avx512_bf16 (`cpu.native_bf16_cpu`). Elsewhere torch emulates bf16, several times slower than
    float32 (a 2-core AMD EPYC without AVX-512 decoded SmolLM2-135M at 25 tokens/s in bf16, 87 in
    float32; an Intel Xeon with AVX-512 but no avx512_bf16 prefilled 3x slower in bf16)."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    from r1repro.cpu import native_bf16_cpu

    return native_bf16_cpu()


def resolved_dtype(dtype: str, device: str) -> str:
    """`dtype` with auto replaced: bfloat16 where `device` computes it natively (`native_bf16`), else float32."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if native_bf16(device) else "float32"


def resolve_dtypes(common: CommonParams) -> CommonParams:
    """`common` with `dtype: auto` and `inference_dtype: auto` replaced by what this machine runs fast.

    auto means bfloat16 where the device computes it natively (`native_bf16`), float32 elsewhere. The
    stages resolve it once at setup, so training, launched processes, checkpoint fingerprints and the
    protocol record all see the concrete dtype.
    """
    if "auto" not in (common.dtype, common.inference_dtype):
        return common
    chosen = resolved_dtype("auto", resolve_device(common.device))
    update = {key: chosen for key in ("dtype", "inference_dtype") if getattr(common, key) == "auto"}
    return common.model_copy(update=update)


def bf16_mixed_precision(dtype: str, device: str) -> bool:
    """Whether training computes in bfloat16 (autocast) for params `common.dtype` on `device`.

    SFT, distillation and RL keep float32 weights and optimizer state either way: pure bf16 weights
    would round away updates smaller than ~0.4% of a weight (lr 1e-6 updates vanish). On a CPU
    without native bf16 (AMX or avx512_bf16) autocast is emulated and slower than float32; that is
    warned about, not refused, since the numbers stay valid.

    Args:
        dtype: params common.dtype, "float32" or "bfloat16".
        device: a resolved device ("cpu", "cuda", "cuda:N").
    """
    if dtype != "bfloat16":
        return False
    import torch

    if device == "cpu" and not native_bf16(device):
        log.warning("common.dtype: bfloat16 on a CPU without native bf16 (AMX or avx512_bf16) is "
                    "emulated and slower than float32; set common.dtype: float32 on this machine")
    return True


def training_weights_dtype(bf16: bool, lora: LoraParams | None) -> str:
    """The dtype a model to be trained is loaded in: float32, but bfloat16 for LoRA's frozen base.

    Trained weights must stay float32 (see `bf16_mixed_precision`). A LoRA base is never updated,
    and under bf16 autocast a float32 base is cast again at every forward pass (autocast caches
    casts only of weights that require grad): for SmolLM2-135M on 2 cores a forward and backward
    of 8 x 220 tokens took 8.7 s with a float32 base, 6.8 s under autocast, 4.2 s with a bf16 base.
    PEFT keeps the adapters float32; `save_trained_model` merges them in float32.
    """
    return "bfloat16" if bf16 and lora is not None and lora.enabled else "float32"


def checkpointing_argument(enabled: bool, arguments: type | None = None) -> dict[str, bool]:
    """The TrainingArguments keyword that turns activation (gradient) checkpointing on or off.

    transformers renamed `gradient_checkpointing` to `activation_checkpointing` after 5.17, the version
    the GPU lock pins (vLLM 0.31 caps it), and keeps the old name only as a deprecated alias until v6:
    ask the installed version which one it has.

    Args:
        enabled: checkpointing on.
        arguments: the arguments dataclass to ask (default: the installed `TrainingArguments`).
    """
    import dataclasses

    if arguments is None:
        from transformers import TrainingArguments as arguments

    names = {f.name for f in dataclasses.fields(arguments)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}


def save_trained_model(trainer, folder: Path) -> None:
    """Write a trainer's model and tokenizer into `folder` as a plain transformers folder.

    LoRA adapters are merged first (`merge_and_unload`), so later stages need no PEFT to load the
    model. Every process of a launch calls this: under ZeRO-3 each holds a shard, and
    `trainer.save_model` gathers them (all must join) while the main process writes; LoRA is refused
    under ZeRO-3 before launching (`distributed.Launch.check`). Otherwise the main process writes,
    in float32.
    """
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        trainer.save_model(str(folder))
    elif trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        if hasattr(model, "merge_and_unload"):
            # float32 first: adding the small adapter update into bf16 base weights would round much of
            # it away (`training_weights_dtype`); the base itself is exactly what was trained against
            import torch

            model = model.to(torch.float32).merge_and_unload()
        model.save_pretrained(folder)
        trainer.processing_class.save_pretrained(folder)
