"""A run's prerequisites (r1repro.prerequisites) on fakes: the driver query, torch's build, tokens and the
hub are stand-ins, so no test needs a GPU or the network; each failure names the key and the fix."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
import yaml

from r1repro import prerequisites as pre
from r1repro.config import Params, load_params, merged_params, validate
from r1repro.prerequisites import DriverQueryError, HubAnswer, Result

# ---------------------------------------------------------------------------------------------------
# Python
# ---------------------------------------------------------------------------------------------------


def test_python_is_the_version_pyproject_names(repo_root: Path) -> None:
    spec = pre.requires_python(repo_root)
    assert spec == ">=3.11,<3.12"
    assert pre.check_python(spec, (3, 11, 7)) == Result("python", "ok", "3.11.7 (requires-python >=3.11,<3.12)")
    failed = pre.check_python(spec, (3, 12, 1))
    assert failed.status == "fail"
    assert "3.12.1" in failed.detail and "requires-python" in failed.detail
    assert "make venv PYTHON=/path/to/python3.11" in failed.detail


# ---------------------------------------------------------------------------------------------------
# torch, the CUDA build and the NVIDIA driver
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, cuda", [
    ("torch==2.7.1+cu128\n", "12.8"),
    ("--extra-index-url https://download.pytorch.org/whl/cu126\ntorch==2.7.1\n", "12.6"),
    ("torch==2.7.1\nnvidia-cuda-runtime-cu12==12.8.90\n", "12.8"),
    ("# torch==2.0+cu118 in a comment does not count\ntorch==2.7.1\n", None),
])
def test_the_cuda_version_comes_from_the_lock_file(text: str, cuda: str | None) -> None:
    assert pre.lock_cuda_version(text) == cuda


def test_the_gpu_lock_pins_a_cuda_13_0_torch(repo_root: Path) -> None:
    """PyPI's torch 2.13.0 has no +cu suffix: its CUDA is the nvidia-cuda-runtime wheel it pins."""
    assert pre.lock_cuda_version((repo_root / pre.GPU_LOCK).read_text()) == "13.0"


def test_the_driver_table() -> None:
    assert pre.min_driver("12.8") == ("570.26", "CUDA 12.8")
    assert pre.min_driver("12.9")[0] == "575.51.03"
    assert pre.min_driver("13.0")[0] == "580.65.06"
    assert pre.min_driver("12.7") == ("560.28.03", "CUDA 12.6, the newest 12.x in the table")  # a lower bound
    with pytest.raises(ValueError, match="TOOLKIT_DRIVER"):
        pre.min_driver("15.0")


def _driver(version: str):
    return lambda: version


def _no_driver() -> str:
    raise DriverQueryError("nvidia-smi not found: no NVIDIA driver is installed, or it is not on PATH")


def test_the_driver_check_passes_and_fails() -> None:
    assert pre.check_driver("13.0", "torch 2.13.0", _driver("580.95.05")).status == "ok"
    old = pre.check_driver("13.0", "torch 2.13.0", _driver("570.124.06"))
    assert old.status == "fail" and "570.124.06" in old.detail and ">= 580.65.06" in old.detail
    missing = pre.check_driver("13.0", "requirements-gpu.lock's torch", _no_driver)
    assert missing.status == "fail" and "nvidia-smi not found" in missing.detail
    assert "install an NVIDIA driver >= 580.65.06" in missing.detail
    # An R535 driver runs a CUDA 12.8 build through minor version compatibility: it passes, and says so.
    compat = pre.check_driver("12.8", "torch 2.7.1+cu128", _driver("535.104.05"))
    assert compat.status == "ok" and "minor version compatibility" in compat.detail and "570.26" in compat.detail
    assert pre.check_driver("14.1", "torch 9", _driver("999.1")).status == "fail"


def _fake_nvidia_smi(folder: Path, body: str) -> None:
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_the_driver_query_reads_nvidia_smi(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DriverQueryError, match="nvidia-smi not found"):
        pre.nvidia_smi_driver()
    _fake_nvidia_smi(tmp_path, 'printf "580.95.05\\n575.57.08\\n"')  # two GPUs: the older driver counts
    assert pre.nvidia_smi_driver() == "575.57.08"
    _fake_nvidia_smi(tmp_path, "echo \"NVIDIA-SMI has failed because it couldn't communicate\" >&2; exit 9")
    with pytest.raises(DriverQueryError, match="couldn't communicate"):
        pre.nvidia_smi_driver()


def test_torch_must_be_a_cuda_build_when_the_profile_needs_cuda() -> None:
    assert pre.check_torch_build("2.13.0", "13.0").status == "ok"
    cpu = pre.check_torch_build("2.13.0+cpu", None)
    assert cpu.status == "fail" and "CPU build" in cpu.detail and "make venv-gpu" in cpu.detail
    assert "not installed" in pre.check_torch_build(None, None).detail


def _params(repo_root: Path, profile: str = "none", **common):
    data, source = merged_params(repo_root, profile)
    data.setdefault("common", {}).update(common)
    return validate(data, source)


def test_device_checks_follow_common_device(repo_root: Path, monkeypatch) -> None:
    monkeypatch.setattr(pre.shutil, "which", lambda name: None)
    monkeypatch.setattr(pre, "torch_build", lambda: pytest.fail("a CPU profile must not load torch"))
    (auto,) = pre.device_checks(_params(repo_root), repo_root)
    assert auto.status == "skip" and auto.line().startswith("skip nvidia driver: cpu profile")
    assert pre.device_checks(_params(repo_root, device="cpu"), repo_root)[0].status == "skip"
    gpu1 = _params(repo_root, "gpu1")
    # The CPU venv on a machine without a GPU: torch is the wrong build, and the driver the lock's
    # CUDA 13.0 needs is missing.
    monkeypatch.setattr(pre, "torch_build", lambda: ("2.13.0+cpu", None))
    torch_check, driver = pre.device_checks(gpu1, repo_root, _no_driver)
    assert (torch_check.status, driver.status) == ("fail", "fail")
    assert "requirements-gpu.lock's torch is built for CUDA 13.0" in driver.detail
    # The GPU venv on a machine with a new enough driver.
    monkeypatch.setattr(pre, "torch_build", lambda: ("2.13.0", "13.0"))
    assert [r.status for r in pre.device_checks(gpu1, repo_root, _driver("580.95.05"))] == ["ok", "ok"]
    # device auto where a GPU is visible: the driver is checked against torch's own CUDA build.
    monkeypatch.setattr(pre.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(pre, "torch_build", lambda: ("2.7.1+cu128", "12.8"))
    (auto_gpu,) = pre.device_checks(_params(repo_root), repo_root, _driver("520.61.05"))
    assert auto_gpu.status == "fail" and "CUDA 12.8" in auto_gpu.detail


# ---------------------------------------------------------------------------------------------------
# Models and datasets
# ---------------------------------------------------------------------------------------------------


class FakeHub:
    """The hub as a test sets it: which ids it knows (and which are gated), what is cached, the token."""

    def __init__(self, found=(), gated=(), cached=(), token=None, offline=False, reachable=True, access=True):
        self.found, self.gated, self.cached_ids = set(found) | set(gated), set(gated), set(cached)
        self._token, self._offline, self.reachable, self.access = token, offline, reachable, access
        self.asked: list[str] = []

    def offline(self) -> bool:
        return self._offline

    def token(self):
        return self._token

    def cached(self, repo_id: str, repo_type: str) -> bool:
        return repo_id in self.cached_ids

    def ask(self, repo_id: str, repo_type: str) -> HubAnswer:
        self.asked.append(repo_id)
        if not self.reachable:
            return HubAnswer("unreachable", reason="ConnectError: no route to host")
        if repo_id not in self.found:
            return HubAnswer("missing", reason="404 Repository Not Found")
        gated = repo_id in self.gated
        return HubAnswer("found", gated=gated, access=self.access if gated and self._token else None)


LLAMA = "meta-llama/Llama-3.1-8B"
KEYS = ["probe.models.Llama-3.1-8B", "distill.students.llama3_1_8b.init"]


def test_a_reachable_or_cached_hub_id_passes() -> None:
    assert pre.check_hub_id(["model.pretrained"], "Qwen/Qwen2.5-Math-1.5B", "model",
                            FakeHub(found=["Qwen/Qwen2.5-Math-1.5B"])).status == "ok"
    cached = pre.check_hub_id(["model.pretrained"], "Qwen/Qwen2.5-Math-1.5B", "model",
                              FakeHub(cached=["Qwen/Qwen2.5-Math-1.5B"], reachable=False))
    assert cached.status == "ok" and "cache" in cached.detail
    offline = FakeHub(cached=["Qwen/Qwen2.5-Math-1.5B"], offline=True)
    assert pre.check_hub_id(["model.pretrained"], "Qwen/Qwen2.5-Math-1.5B", "model", offline).status == "ok"
    assert offline.asked == []  # HF_HUB_OFFLINE: the hub is not asked


@pytest.mark.parametrize("hub, words", [
    (FakeHub(reachable=False), ["cannot be reached", "network access", "hf download", "local folder"]),
    (FakeHub(offline=True), ["HF_HUB_OFFLINE is set", "--repo-type dataset", "rl.prompts.hub.id"]),
    (FakeHub(), ["is not on the hub", "check the id", "local path"]),
])
def test_an_unreachable_or_unknown_hub_id_fails_with_both_fixes(hub: FakeHub, words: list[str]) -> None:
    result = pre.check_hub_id(["rl.prompts.hub.id"], "DigitalLearningGmbH/MATH-lighteval", "dataset", hub)
    assert result.status == "fail" and result.detail.startswith("rl.prompts.hub.id: ")
    assert all(word in result.detail for word in words), result.detail


def test_a_gated_id_needs_a_token_unless_cached() -> None:
    no_token = pre.check_hub_id(KEYS, LLAMA, "model", FakeHub(gated=[LLAMA]))
    assert no_token.status == "fail" and no_token.detail.startswith(", ".join(KEYS))
    for fix in ("gated", f"https://huggingface.co/{LLAMA}", "hf auth login", "huggingface-cli login", "HF_TOKEN"):
        assert fix in no_token.detail
    assert pre.check_hub_id(KEYS, LLAMA, "model", FakeHub(gated=[LLAMA], token="hf_x")).status == "ok"
    refused = pre.check_hub_id(KEYS, LLAMA, "model", FakeHub(gated=[LLAMA], token="hf_x", access=False))
    assert refused.status == "fail" and "accept the licence" in refused.detail
    cached = FakeHub(gated=[LLAMA], cached=[LLAMA])
    assert pre.check_hub_id(KEYS, LLAMA, "model", cached).status == "ok"


def test_offline_the_well_known_gated_orgs_add_the_token_advice() -> None:
    llama = pre.check_hub_id(KEYS, LLAMA, "model", FakeHub(offline=True))
    assert "also gated" in llama.detail and "HF_TOKEN" in llama.detail
    qwen = pre.check_hub_id(["probe.models.Qwen2.5-Math-7B"], "Qwen/Qwen2.5-Math-7B", "model", FakeHub(offline=True))
    assert qwen.status == "fail" and "gated" not in qwen.detail


def test_the_real_hub_reads_the_environment(monkeypatch) -> None:
    hub = pre.Hub()
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    assert hub.token() == "hf_from_env"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.offline()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert not hub.offline()
    assert not hub.cached("no-such-owner/no-such-model-r1repro", "model")


def _http_error(cls, status: int):
    """A hub HTTP error as huggingface_hub raises it (its Response class: httpx's or httpx2's)."""
    import huggingface_hub.errors as errors

    http = sys.modules[errors.Response.__module__.split(".")[0]]
    response = errors.Response(status, request=http.Request("GET", "https://huggingface.co/api/models/x"))
    return cls(f"{status} Client Error", response=response)


def test_the_real_hub_maps_its_answers(monkeypatch) -> None:
    """Hub.ask with huggingface_hub's own calls replaced: found, gated with or without access, missing,
    unreachable."""
    from types import SimpleNamespace

    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    def model_info(self, repo_id, timeout=None):
        if repo_id == "gone/model":
            raise _http_error(RepositoryNotFoundError, 404)
        if repo_id == "far/model":
            raise ConnectionError("no route to host")
        return SimpleNamespace(gated="manual" if repo_id.startswith("meta-llama/") else False)

    def auth_check(self, repo_id, repo_type=None):
        raise _http_error(GatedRepoError, 403)

    monkeypatch.setattr(HfApi, "model_info", model_info)
    monkeypatch.setattr(HfApi, "auth_check", auth_check)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    hub = pre.Hub()
    monkeypatch.setattr(hub, "token", lambda: None)
    assert hub.ask("Qwen/Qwen2.5-Math-7B", "model") == HubAnswer("found")
    assert hub.ask(LLAMA, "model") == HubAnswer("found", gated=True)
    assert hub.ask("gone/model", "model").state == "missing"
    far = hub.ask("far/model", "model")
    assert far.state == "unreachable" and "no route to host" in far.reason
    monkeypatch.setattr(hub, "token", lambda: "hf_x")
    assert hub.ask(LLAMA, "model") == HubAnswer("found", gated=True, access=False)


def test_the_cpu_default_names_only_folders_the_pipeline_makes(repo_root: Path) -> None:
    class NoHub(FakeHub):
        def ask(self, repo_id, repo_type):
            pytest.fail(f"the CPU default must not ask the hub ({repo_id})")

    (result,) = pre.reference_checks(_params(repo_root), NoHub())
    assert result.status == "ok" and "models/base" in result.detail and "models/rl/dr_grpo/final" in result.detail
    params = _params(repo_root)
    assert all(pre.made_by_pipeline(value, pre.pipeline_outputs(params))
               for value, _ in pre.model_references(params).values())


def test_the_gpu_profile_asks_once_per_id_and_names_every_key(repo_root: Path) -> None:
    hub = FakeHub(found=["Qwen/Qwen2.5-Math-1.5B", "Qwen/Qwen2.5-Math-7B", "DigitalLearningGmbH/MATH-lighteval"],
                  gated=[LLAMA])
    results = {r.check: r for r in pre.reference_checks(_params(repo_root, "gpu"), hub)}
    assert sorted(hub.asked) == sorted(["Qwen/Qwen2.5-Math-1.5B", "Qwen/Qwen2.5-Math-7B", LLAMA,
                                        "DigitalLearningGmbH/MATH-lighteval"])
    assert results["dataset DigitalLearningGmbH/MATH-lighteval"].status == "ok"
    llama = results[f"model {LLAMA}"]
    assert llama.status == "fail" and all(key in llama.detail for key in KEYS)


def test_local_paths_must_exist(repo_root: Path, tmp_path: Path) -> None:
    model = tmp_path / "qwen-math"
    model.mkdir()
    (model / "config.json").write_text("{}")
    data, source = merged_params(repo_root, "gpu1")
    data["model"]["pretrained"] = str(model)
    data["rl"]["prompts"]["hub"]["id"] = str(tmp_path / "math_lvl3to5_8k")  # not there
    results = {r.check: r for r in pre.reference_checks(validate(data, source), FakeHub())}
    assert results[f"model {model}"].status == "ok"
    missing = results[f"dataset {tmp_path / 'math_lvl3to5_8k'}"]
    assert missing.status == "fail" and missing.detail.startswith("rl.prompts.hub.id: ")
    assert "does not exist" in missing.detail and "Fix the path" in missing.detail
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = pre.check_local_path("probe.models.x", str(empty), "model")
    assert bad.status == "fail" and "config.json" in bad.detail


# ---------------------------------------------------------------------------------------------------
# main() and `make repro`
# ---------------------------------------------------------------------------------------------------


def test_main_passes_on_the_cpu_default(repo_root: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(repo_root)
    monkeypatch.setattr(pre.shutil, "which", lambda name: None)
    assert pre.main(["--profile", "none"]) == 0
    out = capsys.readouterr().out
    assert "ok python: 3.11" in out and "skip nvidia driver: cpu profile" in out and "fail" not in out


def test_main_lists_every_failure(repo_root: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(repo_root)
    monkeypatch.setattr(pre, "requires_python", lambda root: ">=3.12")
    monkeypatch.setattr(pre, "torch_build", lambda: (None, None))
    monkeypatch.setattr(pre, "nvidia_smi_driver", _no_driver)
    monkeypatch.setattr(pre, "Hub", lambda: FakeHub(offline=True))
    assert pre.main(["--profile", "gpu"]) == 1
    err = capsys.readouterr().err
    assert "error: 7 prerequisites not met" in err
    for check in ("python", "torch", "nvidia driver", "model Qwen/Qwen2.5-Math-1.5B", "model Qwen/Qwen2.5-Math-7B",
                  f"model {LLAMA}", "dataset DigitalLearningGmbH/MATH-lighteval"):
        assert f"  - {check}: " in err


def test_main_reads_a_params_file_and_refuses_bad_ones(repo_root: Path, tmp_path: Path, monkeypatch,
                                                       capsys) -> None:
    monkeypatch.chdir(repo_root)
    monkeypatch.setattr(pre.shutil, "which", lambda name: None)
    data, _ = merged_params(repo_root, "none")
    resolved = tmp_path / "params.yaml"
    resolved.write_text(yaml.safe_dump(data))
    assert pre.main(["--profile", str(resolved)]) == 0
    data["common"]["device"] = "tpu"
    resolved.write_text(yaml.safe_dump(data))
    assert pre.main(["--profile", str(resolved)]) == 2
    assert pre.main(["--profile", "no-such-profile"]) == 2
    assert "common.device" in capsys.readouterr().err


def test_the_openvino_backend_needs_its_exporter(repo_root: Path, tmp_path: Path, monkeypatch) -> None:
    from r1repro import openvino_engine

    params = load_params(repo_root, profile="none")

    def engines(backend: str, rollouts: str | None) -> Params:
        return params.model_copy(update={"common": params.common.model_copy(update={"backend": backend}),
                                         "rl": params.rl.model_copy(update={"rollout_backend": rollouts})})

    openvino = engines("openvino", None)
    assert pre.check_openvino_exporter(engines("transformers", None)).status == "skip"
    assert pre.check_openvino_exporter(engines("transformers", "transformers_fast")).status == "skip"
    monkeypatch.setenv(openvino_engine.EXPORT_PYTHON_ENV, str(tmp_path / "missing"))
    assert pre.check_openvino_exporter(engines("transformers_fast", "openvino")).status == "fail"  # rollouts
    exporter = tmp_path / "python"
    exporter.write_text("")
    monkeypatch.setenv(openvino_engine.EXPORT_PYTHON_ENV, str(exporter))
    found = pre.check_openvino_exporter(openvino)
    assert found.status == "ok" and found.detail == str(exporter)
    monkeypatch.setenv(openvino_engine.EXPORT_PYTHON_ENV, str(tmp_path / "missing"))
    missing = pre.check_openvino_exporter(openvino)
    assert missing.status == "fail" and "make venv-openvino" in missing.detail


def test_make_repro_builds_the_exporter_for_the_openvino_backend(repo_root: Path, capsys) -> None:
    """A run that uses the openvino engine converts with optimum-intel, so `make repro` builds its venv
    before the run: the CPU default (fixed weights) and the openvino profile (RL's rollouts too); a GPU
    machine and the transformers_fast profile do not need it."""
    from r1repro import config

    for profile, engines in [("none", ["openvino", "transformers_fast"]), ("openvino", ["openvino"]),
                             ("transformers_fast", ["transformers_fast"]), ("gpu", ["vllm"])]:
        assert config.main(["backends", profile]) == 0 and capsys.readouterr().out.split() == engines, profile
    assert config.main(["backends", "no-such-profile"]) == 2
    makefile = (repo_root / "Makefile").read_text()
    recipe = [line.strip() for line in makefile.split("\nrepro:", 1)[1].split("\n\n", 1)[0].splitlines()[1:]]
    builds = [i for i, line in enumerate(recipe)
              if "python -m r1repro.config backends $(PROFILE) | grep -qx openvino" in line
              and "$(MAKE) venv-openvino" in line]
    assert builds and builds[0] < recipe.index("$(RUN) dvc repro") \
        and builds[0] < recipe.index("$(RUN) python -m r1repro.profile_run $(PROFILE)")


def test_make_repro_checks_prerequisites_before_dvc_repro(repo_root: Path) -> None:
    makefile = (repo_root / "Makefile").read_text()
    recipe = makefile.split("\nrepro:", 1)[1].split("\n\n", 1)[0]
    steps = [line.strip() for line in recipe.splitlines()[1:]]
    assert steps.index("$(RUN) python -m r1repro.config check") \
        < steps.index("$(RUN) python -m r1repro.prerequisites") < steps.index("$(RUN) dvc repro")


def test_the_module_runs_offline_on_the_cpu_default(repo_root: Path) -> None:
    """`make repro`'s step as a process: no network, no GPU, exit 0, within seconds."""
    import subprocess

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": os.path.dirname(sys.executable)}  # no nvidia-smi
    done = subprocess.run([sys.executable, "-m", "r1repro.prerequisites", "--profile", "none"], cwd=repo_root,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ok python" in done.stdout and "skip nvidia driver" in done.stdout
