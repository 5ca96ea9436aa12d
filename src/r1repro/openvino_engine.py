"""OpenVINO GenAI as a generation backend for fixed weights on the CPU (`common.backend: openvino`).

Why: on the 2-core CPUs this project runs on, OpenVINO's continuous-batching pipeline (paged KV
cache, its own CPU kernels) decoded the pipeline's workloads about twice as fast as the project's
own `transformers_fast` loop, and float32 greedy answers came out token for token the same
(LOG.md, 2026-12-07: OpenVINO GenAI). It serves generation whose weights do not change (probing,
held-out checks, the prompt filter, teachers, evaluation): the CPU default's engine for those. RL's
policy decodes its own rollouts there (`rl.rollout_backend: transformers_fast`, exactly on-policy);
the profile openvino puts them through OpenVINO too (`r1repro.openvino_rollouts`).

Two parts:

* **Conversion.** A model folder becomes OpenVINO IR once, through optimum-intel's exporter, and is
  kept under `common.openvino_cache_dir/<weights digest>/` (`r1repro.io.weights_digest`, as the answer
  cache keys a model): a retrained model at the same path converts again, an unchanged one never.
  optimum-intel 2.2.0 needs transformers < 5.6 while the main stack has 5.23, so the exporter runs in
  a venv of its own (`make venv-openvino`, requirements-openvino.lock; `R1REPRO_OPENVINO_EXPORT_PYTHON`
  names another interpreter). Weights are exported in float32; the precision the pipeline computes
  in is chosen when it loads (`INFERENCE_PRECISION_HINT`). A failed conversion leaves nothing in the
  cache: it writes into a temporary folder that is renamed only when complete.
* **Weights put into a graph already converted.** Models that differ only in their weights (the base
  model, SFT, both RL runs and the Llama student are one SmolLM2 graph) are one IR graph with other
  constants. After a full conversion, each f32 constant of the IR is matched to the weight tensor it
  holds (by its bytes) and the match is kept beside it; a later model with the same config and
  tokenizer (`graph_key`) is written by putting its tensors into those constants, in ~3 s instead of
  ~25 s of tracing, and the .bin comes out byte for byte the exporter's own (tested). Where the match
  is not one to one (two tensors with equal values, or a constant too large to be a constant of the
  graph alone, which could be a weight folded into another form) no match is kept and every such
  model is converted in full.
* **Generation.** `r1repro.generation.OpenVinoGenerator` tokenizes with the model's own transformers tokenizer (as every
  backend does), hands token ids to `openvino_genai.ContinuousBatchingPipeline`, and turns the ids it
  returns into `Completion`s with the same stop and token-count rules as the transformers backends
  (`r1repro.generation.completion_from_ids`).

What it keeps of the project's conventions, and where it differs:

* precision: the KV cache is kept in the compute precision (`KV_CACHE_PRECISION`), not in OpenVINO's
  CPU default of u8, which rounds every cached key and value;
* stops: the policy's token ids go to `stop_token_ids`, its kept strings and `stop=` strings to
  `stop_strings` (included in the output; `stop=` strings are then cut, as elsewhere). Like vLLM,
  OpenVINO also always stops at the tokenizer's EOS, which every `StopPolicy` holds anyway;
* sampling: each sample is a request of its own seeded by `derived_seed(seed, prompt, sample)`, so
  what sample j of prompt i draws depends on neither n nor the other prompts of the call (tested).
  The random streams are OpenVINO's own, so samples differ from the transformers backends' (as
  vLLM's do);
* calls independent of each other: each call starts on an empty prefix cache (a new pipeline, ~1 s),
  since in bf16 blocks an earlier call left there rounded differently from blocks computed afresh,
  and a call's samples then depended on what the engine had answered before;
* shared prompt text: the pipeline's prefix cache is on, and the call's longest common token prefix
  (and, when sampling several answers, each distinct prompt) is decoded once on its own first, so
  that every row's prefill finds it cached (without this, a batch of 64 distinct prompts scheduled
  together computed the template 64 times: 26.2 s against 12.8 s).

    gen = load_generator("openvino", "models/sft", dtype="float32", cache_dir=".cache/openvino")
    rows = gen.generate(prompts, n=4, temperature=0.6, top_p=0.95, max_tokens=256, seed=1234,
                        stop_policy=stops)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r1repro.config import ConfigError
from r1repro.io import atomic_write_json, weights_digest

EXPORT_PYTHON_ENV = "R1REPRO_OPENVINO_EXPORT_PYTHON"
# The venv `make venv-openvino` builds, beside the package's repository.
DEFAULT_EXPORT_VENV = Path(__file__).resolve().parents[2] / ".venv-openvino"
DONE_FILE = "r1repro_conversion.json"  # written last: a folder without it is not a conversion
# OpenVINO's names for the precisions `common.inference_dtype` takes.
PRECISIONS = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
# The exporter's own task name for a causal LM with a KV cache.
EXPORT_TASK = "text-generation-with-past"
# Prompts put in the prefix cache ahead of a call are cut to whole KV-cache blocks (32 tokens on the
# CPU): a cached partial block was matched by prompts that continue it differently, and their answers
# came out wrong (64 greedy answers: 833 tokens against 2,326; LOG.md, 2026-12-07: OpenVINO GenAI).
BLOCK_TOKENS = 32
# Conversions whose constants may take other weights: `<cache_dir>/graphs/<graph key>.json`.
GRAPHS_DIR = "graphs"
WEIGHT_MAP_FILE = "r1repro_weight_map.json"  # IR constant name -> weight tensor name, in a conversion
# config.json fields that do not reach the exported graph: saving tools and RL's training set them.
GRAPH_NEUTRAL_CONFIG = ("_name_or_path", "transformers_version", "use_cache")


def export_python() -> str:
    """The interpreter that runs optimum-intel's exporter; a clear error when it is missing."""
    chosen = os.environ.get(EXPORT_PYTHON_ENV) or str(DEFAULT_EXPORT_VENV / "bin" / "python")
    if not Path(chosen).is_file():
        raise ConfigError(
            f"common.backend: openvino converts models with optimum-intel in its own venv, but {chosen} "
            f"does not exist: run `make venv-openvino`, or set {EXPORT_PYTHON_ENV} to a Python with "
            f"requirements-openvino.lock installed")
    return chosen


def converted_model(model: str | Path, cache_dir: str | Path) -> Path:
    """The OpenVINO IR of a local model folder, converted on first use and cached by its weights digest.

    The first model of a graph is traced by the exporter; a later one with the same graph (`graph_key`)
    has its weights put into that conversion's constants (`put_weights_into`).

    Args:
        model: a local model folder (transformers' save_pretrained layout, tokenizer included).
        cache_dir: `common.openvino_cache_dir`.

    Returns:
        The folder holding openvino_model.xml and the converted tokenizer.

    Raises:
        ConfigError: `model` is not a local folder, or the exporter's venv is missing.
        RuntimeError: the exporter failed (its output's end is in the message).
    """
    source = Path(model)
    if not source.is_dir():
        raise ConfigError(f"common.backend: openvino converts a local model folder; {model!r} is not one "
                          f"(this machine reaches no hub: pass the folder the model was saved to)")
    digest = weights_digest(source).split(":", 1)[1]
    target = Path(cache_dir) / digest
    if (target / DONE_FILE).is_file():
        return target
    remove_stale_folders(cache_dir)
    template = reusable_conversion(source, cache_dir)
    python = None if template else export_python()
    staging = Path(cache_dir) / f".converting-{digest}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    record: dict[str, Any] = {"source": str(source), "weights": f"md5:{digest}"}
    if template:
        try:
            put_weights_into(template, source, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        record["weights_put_into"] = template.name
        record["exporter"] = json.loads((template / DONE_FILE).read_text())["exporter"]
    else:
        export(python, source, staging)
        record["exporter"] = export_versions(python)
    atomic_write_json(staging / DONE_FILE, {**record, "seconds": round(time.perf_counter() - start, 1)})
    if target.exists():  # another process finished the same conversion first
        shutil.rmtree(staging, ignore_errors=True)
    else:
        staging.rename(target)
    if not template:
        keep_weight_map(target, source, cache_dir)
    return target


def remove_stale_folders(cache_dir: str | Path) -> None:
    """Removes work folders (`.<what>-<name>-<pid>`: a conversion's staging, RL's rollout IR) whose
    process is gone: a killed run leaves one behind, ~0.5 GB for a 135M model."""
    for folder in Path(cache_dir).glob(".*-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if folder.is_dir() and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def export(python: str, source: Path, staging: Path) -> None:
    """optimum-intel's exporter writes `source` as float32 IR into `staging` (emptied on failure)."""
    command = [python, "-c", "from optimum.commands.optimum_cli import main; main()", "export", "openvino",
               "--model", str(source.resolve()), "--task", EXPORT_TASK, "--weight-format", "fp32", str(staging)]
    # The exporter's venv has its own transformers: nothing of this process's path may leak into it.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(command, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    if done.returncode != 0 or not (staging / "openvino_model.xml").is_file():
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(f"converting {source} to OpenVINO IR failed (exit {done.returncode}); the exporter "
                           f"said:\n{(done.stdout + done.stderr)[-3000:]}")


def graph_key(source: Path) -> str:
    """An MD5 over what decides a model's IR graph and tokenizer: config.json without the fields that do
    not reach the graph (GRAPH_NEUTRAL_CONFIG), and every other file of the folder but the weights and
    the project's own records."""
    config = json.loads((source / "config.json").read_text())
    digest = hashlib.md5(json.dumps({k: v for k, v in config.items() if k not in GRAPH_NEUTRAL_CONFIG},
                                    sort_keys=True).encode())
    for path in sorted(source.iterdir()):
        if path.is_file() and path.name != "config.json" and not path.name.startswith("r1repro_") \
                and path.suffix not in (".safetensors", ".bin", ".pt"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def weight_tensors(source: Path) -> dict[str, Any]:
    """A folder's safetensors weights as float32 numpy arrays (the exporter's --weight-format fp32)."""
    from safetensors.torch import load_file

    tensors: dict[str, Any] = {}
    for path in sorted(source.glob("*.safetensors")):
        tensors.update({name: value.float().numpy() for name, value in load_file(path).items()})
    return tensors


def weight_map(constants: dict[str, Any], tensors: dict[str, Any]) -> dict[str, str] | None:
    """Which weight tensor each float32 constant of a converted graph holds, found by equal bytes.

    Args:
        constants: the IR's float32 constants by name (numpy arrays).
        tensors: the weights the IR was converted from (`weight_tensors`).

    Returns:
        {constant name: tensor name}, or None where the graph cannot safely take other weights: a
        constant equals two tensors that its name does not tell apart, a tensor is held by no
        constant, or a constant that holds no tensor is as large as the smallest one (it could be a
        weight in a folded form, which a swap would leave stale).
    """
    by_bytes: dict[bytes, list[str]] = {}
    for name, value in tensors.items():
        by_bytes.setdefault(hashlib.md5(value.tobytes()).digest(), []).append(name)
    smallest = min(value.size for value in tensors.values())
    mapping: dict[str, str] = {}
    for name, value in constants.items():
        held = [t for t in by_bytes.get(hashlib.md5(value.tobytes()).digest(), [])
                if tensors[t].size == value.size]
        if len(held) > 1:  # the exporter names a weight constant `self.<tensor name>`
            held = [t for t in held if name == f"self.{t}"]
            if len(held) != 1:
                return None
        if held:
            mapping[name] = held[0]
        elif value.size >= smallest:
            return None
    return mapping if set(mapping.values()) == set(tensors) else None


def float_constants(model: Any) -> dict[str, Any]:
    """An OpenVINO model's float32 Constant nodes by name."""
    import openvino as ov

    return {op.get_friendly_name(): op for op in model.get_ordered_ops()
            if op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.f32}


def keep_weight_map(folder: Path, source: Path, cache_dir: str | Path) -> None:
    """After a full conversion: keep its weight map and offer its graph to models of the same graph key."""
    import openvino as ov

    constants = float_constants(ov.Core().read_model(folder / "openvino_model.xml"))
    mapping = weight_map({name: op.get_data() for name, op in constants.items()}, weight_tensors(source))
    if mapping is None:
        return
    atomic_write_json(folder / WEIGHT_MAP_FILE, mapping)
    (Path(cache_dir) / GRAPHS_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(cache_dir) / GRAPHS_DIR / f"{graph_key(source)}.json", {"conversion": folder.name})


def reusable_conversion(source: Path, cache_dir: str | Path) -> Path | None:
    """A cached conversion of the same graph whose constants can take `source`'s weights, if any."""
    from safetensors import safe_open

    entry = Path(cache_dir) / GRAPHS_DIR / f"{graph_key(source)}.json"
    if not entry.is_file() or not list(source.glob("*.safetensors")):
        return None
    folder = Path(cache_dir) / json.loads(entry.read_text())["conversion"]
    if not (folder / DONE_FILE).is_file() or not (folder / WEIGHT_MAP_FILE).is_file():
        return None
    names: set[str] = set()
    for path in source.glob("*.safetensors"):
        with safe_open(path, "np") as handle:
            names.update(handle.keys())
    mapped = set(json.loads((folder / WEIGHT_MAP_FILE).read_text()).values())
    return folder if names == mapped else None


def put_weights_into(template: Path, source: Path, staging: Path) -> None:
    """Writes `template`'s IR with `source`'s weights in its constants, and its other files, to `staging`."""
    import openvino as ov

    copy_conversion_files(template, staging)
    model = ov.Core().read_model(template / "openvino_model.xml")
    replace_constants(float_constants(model), json.loads((template / WEIGHT_MAP_FILE).read_text()),
                      weight_tensors(source))
    ov.save_model(model, staging / "openvino_model.xml", compress_to_fp16=False)


def copy_conversion_files(template: Path, destination: Path) -> None:
    """A conversion's files but its graph, weights and records (tokenizer IR, configs) into `destination`."""
    left = {"openvino_model.xml", "openvino_model.bin", DONE_FILE, WEIGHT_MAP_FILE}
    shutil.copytree(template, destination, ignore=lambda _, names: [n for n in names if n in left],
                    dirs_exist_ok=True)


def replace_constants(constants: dict[str, Any], mapping: dict[str, str], tensors: dict[str, Any]) -> None:
    """Puts each mapped tensor (numpy, float32) into its constant's place in the graph.

    `constants` (`float_constants` of the graph) is updated to the new nodes, so a later call can
    replace them again (RL's rollout engine does, every step).

    Raises:
        ValueError: a tensor the map names is missing (the weights are of another model).
    """
    import numpy as np
    import openvino as ov

    missing = sorted(set(mapping.values()) - set(tensors))
    if missing:
        raise ValueError(f"the weights lack {len(missing)} tensors of the converted graph, e.g. {missing[:3]}")
    for name, tensor_name in mapping.items():
        old = constants[name]
        shape = tuple(old.get_output_shape(0))
        new = ov.op.Constant(np.ascontiguousarray(tensors[tensor_name], dtype=np.float32).reshape(shape))
        new.set_friendly_name(name)
        old.output(0).replace(new.output(0))
        constants[name] = new


def weights_template(model: str | Path, cache_dir: str | Path) -> Path:
    """The conversion of `model`'s graph whose constants can take other weights (converting if needed).

    Raises:
        ConfigError: the graph's constants do not map one to one to the model's tensors (`weight_map`).
    """
    folder = converted_model(model, cache_dir)
    template = reusable_conversion(Path(model), cache_dir)
    if template is None and "weights_put_into" not in json.loads((folder / DONE_FILE).read_text()):
        keep_weight_map(folder, Path(model), cache_dir)  # a conversion cached before maps were kept
        template = reusable_conversion(Path(model), cache_dir)
    if template is None:
        raise ConfigError(f"the OpenVINO conversion of {model} has no one-to-one map from its constants to "
                          f"the model's tensors (two tensors with equal values?), so other weights cannot be "
                          f"put into it; set common.backend: transformers_fast")
    return template


def export_versions(python: str) -> dict[str, str]:
    """The exporter venv's versions of what decides the IR (recorded beside each conversion)."""
    probe = ("import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
             "('optimum-intel', 'optimum', 'transformers', 'torch', 'openvino')}))")
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-300:]}


def conversion_seconds(folder: Path) -> float:
    """How long a cached conversion took (0 for one made elsewhere without the record)."""
    record = folder / DONE_FILE
    return float(json.loads(record.read_text()).get("seconds", 0.0)) if record.is_file() else 0.0


def shared_prefix(token_lists: Sequence[Sequence[int]]) -> list[int]:
    """The longest token prefix every list starts with."""
    if not token_lists:
        return []
    first = token_lists[0]
    length = len(first)
    for ids in token_lists[1:]:
        length = min(length, len(ids))
        length = next((k for k in range(length) if ids[k] != first[k]), length)
    return list(first[:length])


def whole_blocks(ids: Sequence[int]) -> tuple[int, ...]:
    """The leading tokens of `ids` that fill whole KV-cache blocks (see BLOCK_TOKENS)."""
    return tuple(ids[: len(ids) // BLOCK_TOKENS * BLOCK_TOKENS])


def openvino_precision(dtype: str) -> str:
    """OpenVINO's name for a resolved `common.inference_dtype`."""
    from r1repro.modeling import resolved_dtype

    dtype = resolved_dtype(dtype, "cpu")
    if dtype not in PRECISIONS:
        raise ConfigError(f"common.inference_dtype: {dtype!r} has no OpenVINO precision; "
                          f"expected one of {sorted(PRECISIONS)}")
    return PRECISIONS[dtype]


def library_versions() -> dict[str, str]:
    """The installed OpenVINO packages that decide generated tokens (answer cache, protocols)."""
    from importlib import metadata

    return {name: metadata.version(name) for name in ("openvino", "openvino-genai")}


def token_tensor(ids: Sequence[int]) -> Any:
    """One request's prompt ids as the [1, length] int64 tensor OpenVINO takes."""
    import numpy as np
    import openvino as ov

    return ov.Tensor(np.asarray([list(ids)], dtype=np.int64))
