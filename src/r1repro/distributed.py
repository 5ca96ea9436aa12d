"""Multi-process training: SFT, RL and distillation steps run under `accelerate launch`.

A stage runs as a papermill notebook, one Python process, which cannot become several. So when
`common.num_processes` > 1 the training call in `r1repro.sft` / `r1repro.rl` hands its job to a
subprocess instead of training in place:

    accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 8 \\
        -m r1repro.distributed JOB.json RESULT.json

Each launched process runs the same in-place training code (`run_job` of `r1repro.sft` or
`r1repro.rl`); TRL and accelerate handle the data parallelism (DDP, or DeepSpeed ZeRO per the
config file). The notebook's process keeps the file housekeeping: it chooses the checkpoint to resume
from before launching, and gives the processes a staging folder for the final model, which it renames
into place only when the launch succeeded, so a failed launch never replaces a good model.

    launch = Launch.from_common(common)       # None when common.num_processes == 1: train in place
    result = launch.run("sft", payload)       # streams the processes' output; LaunchError if they fail

Batch sizes in params.yaml are per optimizer step over all processes (see `per_process`), so the
number of processes changes where the work runs, not the experiment.

`common.isolate_training` (the GPU profiles) sends every training run through the same path with one
process (`python -m r1repro.distributed JOB.json RESULT.json`, no accelerate): an in-process vLLM
engine is not freed when deleted, so a second RL run (or an 8B student after a 1.5B one) in the
notebook's process would find the GPU memory still held. A process that exits gives all of it back.
"""

from __future__ import annotations

import collections
import hashlib
import importlib
import importlib.util
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1repro.config import CommonParams, ConfigError, read_yaml
from r1repro.io import atomic_write_json
from r1repro.modeling import resolve_device
from r1repro.pipeline import PIPELINE

# Job kinds a launched process can run: the module whose `run_job(payload) -> dict` does the work.
# The stage table names them (`Stage.trains`); they are imported by name in the launched process, so
# this module imports neither (each imports this one to launch itself).
JOBS = {s.trains: f"r1repro.{s.trains}" for s in PIPELINE if s.trains}
# accelerate's distributed types that this project launches: plain DDP, or DeepSpeed ZeRO.
LAUNCHABLE = ("MULTI_GPU", "DEEPSPEED")
# One training process of its own, started without accelerate (common.isolate_training).
ISOLATED = "ISOLATED"
OUTPUT_TAIL_LINES = 40  # how much of the processes' output a failure message repeats


class LaunchError(RuntimeError):
    """The launched training processes failed; the message holds the end of their output."""


def world_size() -> int:
    """Processes training together: WORLD_SIZE as torchrun sets it, 1 outside a launch."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 outside a launch)."""
    return int(os.environ.get("RANK", "0"))


def per_process(total: int, key: str, processes: int | None = None) -> int:
    """Split a per-step count from params evenly over the processes.

    Args:
        total: the count for one optimizer step over all processes (e.g. sft.batch_size).
        key: its params key, for the message.
        processes: how many processes share it (default: `world_size()`).

    Returns:
        total // processes.

    Raises:
        ConfigError: total is not a multiple of the process count.
    """
    processes = processes or world_size()
    if total % processes:
        raise ConfigError(f"{key} ({total}) must be a multiple of common.num_processes ({processes}): "
                          "each process takes an equal share of every step")
    return total // processes


def trainable_digest(model: Any) -> str:
    """sha256 of the trainable parameters' bytes, in name order: equal digests mean equal replicas."""
    import torch

    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().contiguous().view(torch.uint8).cpu().numpy().tobytes())
    return digest.hexdigest()


def replica_digests(model: Any) -> list[str] | None:
    """Every process's `trainable_digest`, in rank order (a collective call: every process makes it).

    Under ZeRO-3 each process holds a different shard, so there is nothing to compare: None.
    """
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        return None
    if world_size() == 1:
        return [trainable_digest(model)]
    from accelerate.utils import gather_object

    return gather_object([trainable_digest(model)])


def launched_result(trainer: Any, **fields: Any) -> dict[str, Any]:
    """What a launched job reports back: its fields, the processes that trained together (as the
    trainer's accelerator counts them), the reporting process's id and their weight digests (a collective call, see
    `replica_digests`; make it before anything changes one process's model, such as a LoRA merge)."""
    return {**fields, "world_size": trainer.accelerator.num_processes, "pid": os.getpid(),
            "replica_digests": replica_digests(trainer.model)}


# ---------------------------------------------------------------------------------------------------
# The notebook's side: start the processes, stream their output, collect the result
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """How training jobs are launched: validated `common.num_processes` and `common.accelerate_config`.

    Attributes:
        num_processes: training processes (one per GPU; on CPU, processes talking through gloo).
        config_file: the accelerate config (configs/accelerate/*.yaml).
        distributed_type: "MULTI_GPU" (DDP) or "DEEPSPEED", from the config file.
        zero_stage: DeepSpeed's ZeRO stage, None for DDP.
    """

    num_processes: int
    config_file: Path | None
    distributed_type: str
    zero_stage: int | None = None

    @classmethod
    def from_common(cls, common: CommonParams) -> Launch | None:
        """The launch that `common` asks for, or None for in-place training (num_processes 1 and
        common.isolate_training off).

        With one process and common.isolate_training on, the training runs in a plain subprocess
        (`ISOLATED`, no accelerate): everything it allocated, a colocated vLLM engine included, is
        released when it exits, before the next run starts.

        Raises:
            ConfigError: a missing or unusable accelerate config, DeepSpeed on CPU or not installed,
                or more processes than GPUs.
        """
        if common.num_processes == 1:
            return cls(1, None, ISOLATED) if common.isolate_training else None
        path = Path(common.accelerate_config)
        if not path.is_file():
            raise ConfigError(f"common.accelerate_config: {path} not found (relative to {Path.cwd()}); "
                              "use one of configs/accelerate/*.yaml")
        settings = read_yaml(path)
        kind = settings.get("distributed_type")
        if kind not in LAUNCHABLE:
            raise ConfigError(f"common.accelerate_config: {path} has distributed_type {kind!r}; "
                              f"expected one of {', '.join(LAUNCHABLE)}")
        zero_stage = (settings.get("deepspeed_config") or {}).get("zero_stage") if kind == "DEEPSPEED" else None
        _check_hardware(common, kind, path)
        return cls(common.num_processes, path, kind, zero_stage)

    def check(self, lora: Any, callbacks: Any, key: str) -> None:
        """Refuse, before anything starts, what a launched training job cannot do.

        Args:
            lora: the stage's `LoraParams` (or None).
            callbacks: extra trainer callbacks passed in; they live in this process only.
            key: the stage's LoRA parameter, named in the error (e.g. "rl.lora.enabled").

        Raises:
            ValueError: callbacks were passed.
            ConfigError: LoRA under ZeRO-3, whose sharded weights cannot be merged.
        """
        if callbacks:
            raise ValueError("callbacks live in this process and cannot reach launched training processes; "
                             "pass none when common.num_processes > 1")
        if self.zero_stage == 3 and lora is not None and lora.enabled:
            raise ConfigError(f"{key}: LoRA cannot be merged into sharded ZeRO-3 weights "
                              f"({self.config_file}): use configs/accelerate/zero2.yaml or ddp.yaml")

    def identity(self) -> dict[str, Any] | None:
        """What a checkpoint's resumability depends on: the process layout and the launch config.
        None for one isolated process, which trains exactly as in place."""
        if self.distributed_type == ISOLATED:
            return None
        return {"num_processes": self.num_processes, "accelerate_config": str(self.config_file)}

    def describe(self) -> str:
        """How the job runs, for messages."""
        if self.distributed_type == ISOLATED:
            return "one process of its own (common.isolate_training)"
        return f"{self.num_processes} processes ({self.config_file})"

    def command(self, job: Path, result: Path) -> list[str]:
        """The command line for one job: `accelerate launch`, or plain python for one isolated process."""
        if self.distributed_type == ISOLATED:
            return [sys.executable, "-m", "r1repro.distributed", str(job), str(result)]
        return [
            sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(self.config_file), "--num_processes", str(self.num_processes),
            # Precision comes from params (the trainer's bf16 flag, which overrides this default), never
            # from whatever an edited config file says.
            "--mixed_precision", "no",
            "--main_process_port", str(_free_port()),  # two launches on one machine must not collide
            # No --cpu: accelerate would then start a single process. On a machine without GPUs the
            # processes still start as torchrun workers and the trainer (use_cpu) joins them over gloo.
            "-m", "r1repro.distributed", str(job), str(result),
        ]

    def run(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Run one training job in `num_processes` processes and return what rank 0 reported.

        Args:
            kind: a key of `JOBS`.
            payload: JSON-ready arguments of that module's `run_job`.

        Returns:
            The job's result (see `launched_result`).

        Raises:
            LaunchError: the processes failed, left no result, or ended with different weights.
        """
        with tempfile.TemporaryDirectory(prefix="r1repro-launch-") as folder:
            job, result = Path(folder) / "job.json", Path(folder) / "result.json"
            atomic_write_json(job, {"kind": kind, "payload": payload})
            code, tail = _stream(self.command(job, result))
            where = f"{kind} training in {self.describe()}"
            if code != 0:
                raise LaunchError(f"{where} failed with exit code {code}: {_root_cause(tail)}; nothing was "
                                  f"replaced. Last output:\n{tail}")
            if not result.is_file():
                raise LaunchError(f"{where} exited without writing its result; nothing was replaced")
            report = json.loads(result.read_text(encoding="utf-8"))
        if report["world_size"] != self.num_processes:
            raise LaunchError(f"{where}: the trainer saw {report['world_size']} processes, not "
                              f"{self.num_processes}; check {self.config_file or 'the environment (WORLD_SIZE)'}")
        digests = report["replica_digests"]
        if digests is not None and len(set(digests)) != 1:
            raise LaunchError(f"{where}: the processes ended with different weights ({digests}); "
                              "data parallelism went out of step")
        return report


def _check_hardware(common: CommonParams, kind: str, path: Path) -> None:
    """Refuse launches that cannot work here, before any process starts."""
    device = resolve_device(common.device)
    if kind == "DEEPSPEED" and device == "cpu":
        raise ConfigError(f"common.accelerate_config: {path} uses DeepSpeed, which needs GPUs; "
                          "on CPU use configs/accelerate/ddp.yaml")
    if kind == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"common.accelerate_config: {path} uses DeepSpeed, which is not installed; "
                          "pip install -e '.[gpu]' (or use configs/accelerate/ddp.yaml)")
    if device != "cpu":
        import torch

        if torch.cuda.device_count() < common.num_processes:
            raise ConfigError(f"common.num_processes is {common.num_processes} but torch sees "
                              f"{torch.cuda.device_count()} GPUs: one process per GPU")


def _root_cause(output: str) -> str:
    """The last `SomeError: message` line of the processes' output (the failing process's exception)."""
    errors = re.findall(r"^\s*([\w.]+(?:Error|Exception|Interrupt): .*)$", output, flags=re.MULTILINE)
    return errors[-1] if errors else "see the output above"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _child_env() -> dict[str, str]:
    """The environment of the launched processes: this one, importing this very copy of r1repro."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    source = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([source, *filter(None, [env.get("PYTHONPATH")])])
    return env


def _stream(command: list[str]) -> tuple[int, str]:
    """Run `command`, echoing its output line by line; return its exit code and its last lines.

    An interrupt of this process (a stopped notebook) takes the whole process group down with it.
    """
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
    print(f"r1repro: {shlex.join(command)}", flush=True)  # the executed notebook shows what ran
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               errors="replace", env=_child_env(), start_new_session=True)
    try:
        for line in process.stdout:
            print(line, end="", flush=True)
            tail.append(line)
        return process.wait(), "".join(tail)
    except BaseException:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait()
        raise


# ---------------------------------------------------------------------------------------------------
# The launched processes' side
# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Entry point of each launched process: `python -m r1repro.distributed JOB.json RESULT.json`."""
    from torch.distributed.elastic.multiprocessing.errors import record

    # record: a failing process's exception goes into torchrun's summary, the lines LaunchError quotes.
    return record(_work)(sys.argv[1:] if argv is None else argv)


def _work(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: accelerate launch ... -m r1repro.distributed JOB.json RESULT.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    import torch

    if torch.cuda.is_available():  # "cuda" then means this process's own GPU, not GPU 0 for all
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    result = importlib.import_module(JOBS[job["kind"]]).run_job(job["payload"])
    if rank() == 0:
        atomic_write_json(argv[1], result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
