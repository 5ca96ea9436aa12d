"""Greedy answers generated once per model and reused by every stage that asks the same question.

The pipeline asks the same model the same held-out question, greedily, in several stages: the
cold-start model's test answers are SFT's "after" and RL's "start"; the base model's are SFT's
"before" and the distillation student's "before"; the evaluate stage re-answers every checkpoint.
Generation is the cost everywhere on a CPU, so each greedy answer is kept under a key that holds all
that decides it, and a later request with the same key is served from the cache:

* the model's weights (`io.weights_digest`: a retrained model at the same path is another model),
* the exact prompt string (template applied), the token budget, the stop strings and the stop
  policy (`r1repro.stops`: the token ids and kept strings a response ends at),
* the decoding setup: backend, inference dtype, device, batch size, and the code and library
  versions that generate (the import closure of `r1repro.generation`, torch, transformers).

Only greedy decoding is cached: a greedy answer depends on nothing else (sampled ones also depend on
the seed stream of their request). Within a request the rows still decode in batches as before, so
a request whose answers were all made in one earlier request of the same prompts gets the very same
records. Where a request mixes cached and new prompts, the new ones decode in other batch company,
which on a CPU in float32 gave identical records (`TransformersGenerator`'s note on batch sizes).

    stops = stop_policy_for(common, "r1_chat", tokenizer)
    cache = AnswerCache.for_model(".cache/answers", "models/sft", common, max_tokens=128, stop_policy=stops)
    groups = cache.generate(prompts, lambda: generation.generator_for(common, "models/sft"))

The cache lives outside DVC's view (`common.answer_cache_dir`, git- and dvc-ignored): deleting it
changes no result, only the time the next run takes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1repro.io import atomic_write_text, read_json_or_none, source_digest, weights_digest
from r1repro.stops import StopPolicy

# Libraries whose versions change generated tokens.
GENERATION_LIBRARIES = ("torch", "transformers")


def generation_code_digest() -> str:
    """A digest of the code that turns a prompt into an answer (r1repro.generation and what it imports)."""
    from r1repro.deps import import_closure

    return source_digest(*sorted(import_closure({"generation"})))


def _library_versions(backend: str) -> dict[str, str]:
    from importlib import metadata

    versions = {name: metadata.version(name) for name in GENERATION_LIBRARIES}
    if backend == "openvino":  # its engine decides the tokens (the IR also records its exporter's versions)
        from r1repro.openvino_engine import library_versions

        versions.update(library_versions())
    return versions


def protocol_key(model: str, max_tokens: int, stop: Sequence[str] | None, common: Any,
                 stop_policy: StopPolicy | None = None) -> dict[str, Any]:
    """Everything besides the prompt that decides a greedy answer; see the module docstring.

    Args:
        model: hub id or local folder.
        max_tokens: the token budget.
        stop: stop strings (cut out of the text), or None.
        common: the validated, dtype-resolved `common` params.
        stop_policy: the stop ids and kept strings, or None (the generator's default: its EOS).
    """
    return {"model": weights_digest(model), "max_tokens": max_tokens, "stop": list(stop or []),
            "stop_policy": stop_policy.as_dict() if stop_policy else None,
            "backend": common.backend, "dtype": common.inference_dtype or common.dtype,
            "device": common.device, "batch_size": common.generation_batch_size,
            "code": generation_code_digest(), "libraries": _library_versions(common.backend)}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@dataclass
class AnswerCache:
    """The cached greedy answers of one model under one protocol (a JSON file per key).

    Attributes:
        path: the file holding them.
        key: the protocol key (written into the file, so a collision could never pass unseen).
        answers: {sha256 of the prompt: completion fields}.
        hits, misses: prompts served from the cache and generated, over this object's life.
        stop_policy: what generation stops at (also in `key`).
    """

    path: Path | None
    key: dict[str, Any]
    answers: dict[str, dict[str, Any]]
    hits: int = 0
    misses: int = 0
    stop_policy: StopPolicy | None = None

    @classmethod
    def for_model(cls, folder: str | Path | None, model: str, common: Any, *, max_tokens: int,
                  stop: Sequence[str] | None = None, stop_policy: StopPolicy | None = None) -> AnswerCache:
        """The cache of `model` under this protocol; `folder` None gives one that keeps nothing.

        `stop_policy` (`r1repro.stops.stop_policy_for`) is what every stage passes; None leaves the
        generator's default (its tokenizer's EOS).
        """
        key = protocol_key(model, max_tokens, stop, common, stop_policy)
        if folder is None:
            return cls(None, key, {}, stop_policy=stop_policy)
        path = Path(folder) / f"{_digest(key)[:32]}.json"
        stored = read_json_or_none(path)
        answers = stored["answers"] if stored and stored.get("key") == key else {}
        return cls(path, key, answers, stop_policy=stop_policy)

    def generate(self, prompts: Sequence[str], make_generator: Callable[[], Any],
                 seed: int = 0) -> list[list[Any]]:
        """Greedy answers to `prompts` (one `Completion` each, in a list per prompt, as generators return).

        Args:
            prompts: final prompt strings.
            make_generator: builds the generator; called only when some prompt is not cached, so a
                fully cached request loads no model.
            seed: passed to the generator (greedy decoding ignores it).
        """
        from r1repro.generation import Completion

        wanted = [_digest(p) for p in prompts]
        # The first position of each prompt not cached yet: a repeated prompt is generated once.
        first = {}
        for i, h in enumerate(wanted):
            if h not in self.answers:
                first.setdefault(h, i)
        missing = list(first.values())
        self.misses += sum(h in first for h in wanted)
        self.hits += len(wanted) - sum(h in first for h in wanted)
        if missing:
            fresh = make_generator().generate([prompts[i] for i in missing], n=1, temperature=0.0,
                                              top_p=1.0, max_tokens=self.key["max_tokens"], seed=seed,
                                              stop=self.key["stop"] or None, stop_policy=self.stop_policy)
            for i, (completion,) in zip(missing, fresh):
                self.answers[wanted[i]] = {"text": completion.text, "num_tokens": completion.num_tokens,
                                           "finish_reason": completion.finish_reason}
            self._save()
        return [[Completion(prompt_index=i, sample_index=0, **self.answers[h])] for i, h in enumerate(wanted)]

    def _save(self) -> None:
        if self.path is not None:
            atomic_write_text(self.path, json.dumps({"key": self.key, "answers": self.answers},
                                                    sort_keys=True) + "\n")
