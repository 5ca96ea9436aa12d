"""Answer extraction and grading: the judge that rewards, evaluation and majority voting all use.

Usage::

    from r1repro.grading import extract_answer, is_correct, grade_many
    extract_answer(r"<think>...</think><answer>\\boxed{\\frac{1}{2}}</answer>")   # '\\frac{1}{2}'
    is_correct(r"so the answer is $\\boxed{0.5}$", r"\\frac{1}{2}")              # True
    grade_many(responses, golds, workers=2)                                      # [True, False, ...]

Extraction (`extract_answer`) is conservative, as in the R1 recipe, which rewards only tagged or boxed
answers: the content of the last `<answer>...</answer>` pair, and inside it (or inside the whole response
when there is no pair) the content of the last `\\boxed{...}` / `\\fbox{...}`, braces matched properly.
A response with neither has no answer. An unclosed last box gives no answer (a truncated generation).

Judging (`is_correct`, `answers_equivalent`) is done by the `math_verify` library (`parse` then `verify`,
LaTeX extraction only), after a little normalization that math_verify lacks: golds in the forms our data
uses (`142.0` for AMC, `30,000` for GSM8K, stringified Python lists for Minerva and OlympiadBench, where
every list element is an accepted form, `$...$` wrappers), scientific notation `3.3e12`, a scale letter
after a degree sign (`1950^\\circ C`), and percentages (`62.5\\%` is accepted as 62.5 or as 0.625, since
models drop the sign either way). Two departures from math_verify's defaults: set-relation comparison is
on (`(-\\infty, 3]` equals `x \\le 3`), and decimal golds under 1e-4 are compared to six significant digits
(math_verify's six decimal places call all such numbers equal). Two shortcuts skip math_verify: identical
text after removing spacing commands, and integer against integer. Known limitation, from latex2sympy:
symbol names are lowercased, so `N` and `n` are the same variable.

Time bound. math_verify's own timeouts use `signal.alarm`, which works only in the main thread and cannot
interrupt C code (big-integer arithmetic, a stuck C extension). So all sympy work happens in a separate
worker process (`python -c ... _worker_main`, started with `subprocess`, so it works from threads, Jupyter
kernels and scripts without a `__main__` guard alike). The worker imports math_verify once and then
serves requests over a pipe, so the common case costs one round trip (about a millisecond for numbers).
Each request is bounded twice: inside the worker an interval timer raises after `timeout_s` (cheap
recovery from slow pure-Python sympy code; the worker stays alive); in the caller,
`Connection.poll(timeout_s + 1 s)`, after which the worker is killed (SIGKILL), a fresh one is started in
the background, and the answer is judged wrong. The worker also runs under a 2 GiB address-space limit,
so a runaway allocation becomes a MemoryError instead of swapping the machine. Starting a worker (about
1.5 s of imports, on first use and after a kill) is not counted against `timeout_s`. `grade_many` runs
`workers` such processes, each driven by one caller thread. Workers exit when their caller does.

Signals. A worker ignores SIGINT: its caller manages it, and an interrupt meant for the caller (a Jupyter
kernel is interrupted, and shut down, with SIGINT to its whole process group) must not print a
`KeyboardInterrupt` traceback from every worker or kill one mid-startup. The caller blocks SIGINT in the
starting thread while it spawns a worker, so the worker is born with it blocked and an interrupt that
arrives before the worker's first line is held, then discarded when the worker ignores it. SIGALRM
(the soft timer) is left alone, and SIGTERM and SIGKILL end a worker as before. A worker whose caller
is gone (its pipe closed) returns quietly.

Safety. Model text never reaches Python's `eval`: math_verify's plain-expression extractor (which hands
text to sympy's `parse_expr`, an `eval` of transformed strings) is not used; LaTeX goes through the ANTLR
grammar of latex2sympy; golds are read with `ast.literal_eval`. Inside the worker, `parse_expr` itself is
wrapped to accept only inert text (names, numbers, arithmetic operators: no calls, attributes,
subscripts, quotes or dunders), in case a library path ever hands it model text. Answers that look like
code (`__`, `lambda`, `import`, `eval`, `exec`), hold NUL bytes, exceed 1500 characters or nest brackets
deeper than 40 levels are judged wrong before any parsing.
"""

from __future__ import annotations

import ast
import functools
import json
import logging
import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor, as_completed
from multiprocessing.connection import Connection
from pathlib import Path

from tqdm import tqdm

logger = logging.getLogger(__name__)

_ANSWER_OPEN = "<answer>"
_ANSWER_CLOSE = "</answer>"
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.DOTALL)

_MAX_ANSWER_CHARS = 1500
_MAX_NESTING = 40
# Text that has no business in a math answer but is how Python payloads are written. `\lambda` (a
# LaTeX command, common in physics answers) is allowed; a bare `lambda` is not.
_CODE_LIKE_RE = re.compile(r"__|(?<![\\\w])lambda\b|\bimport\b|\beval\b|\bexec\b|`")

_LIST_LITERAL_RE = re.compile(r"\[\s*['\"].*\]", re.DOTALL)
_UNESCAPED_DOLLAR_RE = re.compile(r"(?<!\\)\$")
_AMC_FLOAT_RE = re.compile(r"([+-]?\d+)\.0+")
_THOUSANDS_RE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_SCI_NOTATION_RE = re.compile(r"(?<![\w.\\])(\d+(?:\.\d+)?|\.\d+)[eE]([+-]?\d+)(?![\w.])")
# `1950^\circ C`: the scale letter after a degree sign is a unit, not a variable to multiply by.
_DEGREE_SCALE_RE = re.compile(
    r"(\^\s*\{?\s*\\circ\s*\}?)\s*(?:\\(?:text|mathrm)\{\s*[CFK]\s*\}|[CFK](?![A-Za-z]))"
)
_PERCENT_RE = re.compile(r"\s*(?:\\?%|\\(?:text|mbox|mathrm)\{\s*(?:\\?%|percent)\s*\}|\s+percent)\s*$")
_INTEGER_RE = re.compile(r"[+-]?\d{1,400}")
_INERT_EXPR_RE = re.compile(r"(?!.*__)[A-Za-z0-9_\s.+\-*/^]{0,200}")
_ATTRIBUTE_RE = re.compile(r"\.\s*[A-Za-z_]")
_SPACING_RE = re.compile(r"\s+|\\left\b|\\right\b|\\[!,;: ]|\\q?quad\b|(?<!\\)\$")
_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))

_FLOAT_ROUNDING = 6  # math_verify's default
_SOFT_GRACE_S = 1.0
_STARTUP_TIMEOUT_S = 120.0
_WORKER_MEMORY_BYTES = 2 << 30
_WORKER_STARTER = (
    "import sys; from r1repro.grading import _worker_main; _worker_main(int(sys.argv[1]), int(sys.argv[2]))"
)


# --------------------------------------------------------------------------------------------------
# Extraction (runs in the caller; linear time, no recursion)


def _last_tag_content(text: str) -> str | None:
    """Content of the last `<answer>...</answer>` pair, or None when there is no complete pair."""
    end = text.rfind(_ANSWER_CLOSE)
    if end < 0:
        return None
    start = text.rfind(_ANSWER_OPEN, 0, end)
    if start < 0:
        return None
    return text[start + len(_ANSWER_OPEN) : end]


def _braced_content(text: str, open_at: int) -> str | None:
    """Content of the brace group opened at `text[open_at]`, or None when it never closes.

    Escaped characters (`\\{`, `\\}`, `\\\\`) are skipped as pairs, so they never count as grouping braces.
    """
    depth = 0
    for token in _BRACE_TOKEN_RE.finditer(text, open_at):
        if token.group() == "{":
            depth += 1
        elif token.group() == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : token.start()]
    return None


def _last_boxed(text: str) -> tuple[bool, str | None]:
    """Whether `text` has a `\\boxed{`/`\\fbox{`, and the content of the last one (None if unclosed)."""
    last = None
    for match in _BOX_RE.finditer(text):
        last = match
    if last is None:
        return False, None
    return True, _braced_content(text, last.end() - 1)


def extract_answer(response: str) -> str | None:
    """The final answer of a response, or None when it gives none.

    Args:
        response: the model's full response text.

    Returns:
        The content of the last `\\boxed{}` inside the last `<answer>` pair (or inside the whole response
        when there is no pair), else the stripped content of the last `<answer>` pair, else None. An
        unclosed last box, or an empty answer, gives None.
    """
    if not isinstance(response, str):
        return None
    tagged = _last_tag_content(response)
    has_box, boxed = _last_boxed(response if tagged is None else tagged)
    answer = boxed if has_box else tagged
    if answer is None:
        return None
    return answer.strip() or None


# --------------------------------------------------------------------------------------------------
# Gold answers and answer normalization (pure string work)


_AST_LOCK = threading.RLock()


def _literal_list(text: str) -> list[str] | None:
    """The strings of a stringified Python list such as "['9.6\\n']", or None for anything else."""
    if not _LIST_LITERAL_RE.fullmatch(text):
        return None
    try:
        # literal_eval only builds literals; it never calls or looks up names. Golds hold LaTeX such as
        # `\max` inside the literal, an invalid escape that Python warns about. The lock: CPython 3.11
        # keeps one AST recursion counter per interpreter, so two threads converting ASTs at once (as
        # grade_many's threads do) can raise "SystemError: AST constructor recursion depth mismatch";
        # catch_warnings also swaps process-wide state.
        with _AST_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", (DeprecationWarning, SyntaxWarning))
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    return value


def _clean_gold_form(form: str) -> str:
    """One gold form without `$` wrappers, a closing sentence period, thousands commas, or AMC's `.0`."""
    text = _UNESCAPED_DOLLAR_RE.sub("", form).strip()
    if len(text) > 1 and text.endswith(".") and not text[-2].isdigit():
        text = text[:-1].rstrip()
    if _THOUSANDS_RE.fullmatch(text):  # GSM8K's `30,000` (no gold in our data is a list of that shape)
        text = text.replace(",", "")
    amc = _AMC_FLOAT_RE.fullmatch(text)
    return amc.group(1) if amc else text


def gold_alternatives(gold: str) -> list[str]:
    """All accepted forms of a gold answer, cleaned; a response matching any of them is correct.

    Args:
        gold: the `answer` field of a dataset row: plain LaTeX, an AMC float such as `142.0`, or a
            stringified list such as "['9.6\\n', '9.60']" (Minerva, OlympiadBench).

    Returns:
        The cleaned forms, first one first, without duplicates (at least one entry).
    """
    text = str(gold).strip()
    items = _literal_list(text)
    forms = [_clean_gold_form(item) for item in (items if items is not None else [text])]
    unique = [form for index, form in enumerate(forms) if form and form not in forms[:index]]
    return unique or [text]


def normalize_gold(gold: str) -> str:
    """The main form of a gold answer: `142.0` -> `142`, "['9.6\\n']" -> `9.6`, `$\\frac12$` -> `\\frac12`.

    Args:
        gold: the `answer` field of a dataset row.

    Returns:
        The first cleaned form (see `gold_alternatives` for all of them).
    """
    return gold_alternatives(gold)[0]


def _strip_math_delimiters(text: str) -> str:
    """`$x$`, `$$x$$`, `\\(x\\)`, `\\[x\\]` -> `x` (outer pairs only, repeatedly)."""
    changed = True
    while changed:
        changed = False
        for left, right in _MATH_DELIMITERS:
            if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
                inner = text[len(left) : len(text) - len(right)].strip()
                # `$a$ and $b$` starts and ends with `$` but is not one wrapped formula.
                if left == "$" and "$" in inner:
                    continue
                text, changed = inner, True
    return text


def _prepare(answer: str) -> tuple[str, bool]:
    """An answer made ready for math_verify: delimiters off, `1e5` as LaTeX; and whether it had a `%`."""
    text = _strip_math_delimiters(answer.strip())
    text = _SCI_NOTATION_RE.sub(r"\1\\times 10^{\2}", text)
    text = _DEGREE_SCALE_RE.sub(r"\1", text)
    percent = _PERCENT_RE.search(text)
    if percent and percent.start() > 0:
        return text[: percent.start()].strip(), True
    return text, False


def _canonical_text(latex: str) -> str:
    """Text with spacing commands, `\\left`/`\\right` and `$` removed, for the identical-text shortcut."""
    text = _SPACING_RE.sub("", latex)
    return text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")


def _max_nesting(text: str) -> int:
    """Deepest nesting of (), [] and {} (unbalanced closers are ignored)."""
    depth = deepest = 0
    for char in text:
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}" and depth:
            depth -= 1
    return deepest


def _unsafe_reason(answer: str) -> str | None:
    """Why an answer must not be parsed at all (too long, NUL bytes, code-like, too deep), else None."""
    if len(answer) > _MAX_ANSWER_CHARS:
        return "too long"
    if "\x00" in answer:
        return "NUL byte"
    if _CODE_LIKE_RE.search(answer):
        return "looks like code"
    if _max_nesting(answer) > _MAX_NESTING:
        return "nested too deeply"
    return None


def _percent_of(latex: str) -> str:
    """LaTeX for `latex` percent as a plain number."""
    return "\\frac{" + latex + "}{100}"


def _candidate_pairs(golds: list[tuple[str, bool]], pred: tuple[str, bool]) -> list[tuple[str, str]]:
    """(gold, prediction) LaTeX pairs to compare; a percentage on one side only is tried both ways."""
    pairs = []
    pred_text, pred_percent = pred
    for gold_text, gold_percent in golds:
        pairs.append((gold_text, pred_text))
        if gold_percent and not pred_percent:
            pairs.append((_percent_of(gold_text), pred_text))
        elif pred_percent and not gold_percent:
            pairs.append((gold_text, _percent_of(pred_text)))
    return pairs


def _shortcut(golds: list[tuple[str, bool]], pred: tuple[str, bool]) -> bool | None:
    """A verdict without sympy when one is certain (identical text, or integers), else None."""
    pred_text = _canonical_text(pred[0])
    undecided = False
    for gold_text, gold_percent in golds:
        gold_canon = _canonical_text(gold_text)
        if gold_canon == pred_text and gold_percent == pred[1]:
            return True
        both_integers = _INTEGER_RE.fullmatch(gold_canon) and _INTEGER_RE.fullmatch(pred_text)
        if both_integers and gold_percent == pred[1]:
            if int(gold_canon) == int(pred_text):
                return True
        else:
            undecided = True
    return None if undecided else False


# --------------------------------------------------------------------------------------------------
# The worker process: all sympy / math_verify work happens here


class _SoftTimeout(BaseException):
    """Raised by the worker's interval timer. A BaseException, so library `except Exception` blocks
    (math_verify has several) cannot swallow it and keep computing."""


def _raise_soft_timeout(signum, frame) -> None:
    """SIGALRM handler of the worker."""
    raise _SoftTimeout()


def _inert_only(parse_expr):
    """Wrap sympy's `parse_expr` (which evals its input) so that it reads only inert text.

    Inert: names, numbers and arithmetic operators, without calls, subscripts, attribute access,
    quotes or dunders, so evaluating it cannot run anything. latex2sympy turns every number token into
    `sympy.Number(text)` and sympy's unit tables sympify names such as 'yotta', both through `parse_expr`,
    so refusing it outright would break grading.
    """

    @functools.wraps(parse_expr)
    def guarded(text, *args, **kwargs):
        if not isinstance(text, str) or not _INERT_EXPR_RE.fullmatch(text) or _ATTRIBUTE_RE.search(text):
            raise ValueError("the grading worker lets parse_expr read names, numbers and operators only")
        return parse_expr(text, *args, **kwargs)

    return guarded


class _WorkerJudge:
    """math_verify, configured for LaTeX only, with a cache of parsed answers (golds repeat a lot)."""

    def __init__(self) -> None:
        # Imported here, not at module top: only the worker process needs sympy (1.5 s, 60 MB).
        import latex2sympy2_extended.latex2sympy2 as latex2sympy_module
        import math_verify.parser as parser_module
        import sympy.parsing.sympy_parser as sympy_parser_module
        from math_verify import LatexExtractionConfig, parse, verify

        # Defense in depth: no library path (`sympify(str)` included, which looks this attribute up at
        # call time) may eval anything but inert text, whatever a future library version does.
        guarded = _inert_only(sympy_parser_module.parse_expr)
        for module in (parser_module, latex2sympy_module, sympy_parser_module):
            module.parse_expr = guarded
        logging.getLogger("math_verify").setLevel(logging.ERROR)
        self._parse, self._verify = parse, verify
        self._boxed_config = [LatexExtractionConfig(boxed_match_priority=0)]
        self._prose_config = [LatexExtractionConfig()]
        self.parsed = functools.lru_cache(maxsize=4096)(self._parse_uncached)

    def _parse_uncached(self, latex: str) -> tuple:
        """Parse one answer; text with `$...$` inside (prose) falls back to math_verify's own search."""
        options = {"fallback_mode": "no_fallback", "parsing_timeout": None}
        parsed = self._parse("\\boxed{" + latex + "}", extraction_config=self._boxed_config, **options)
        if not parsed and ("$" in latex or "\\(" in latex or "\\[" in latex):
            parsed = self._parse(latex, extraction_config=self._prose_config, **options)
        return tuple(parsed)

    def equivalent(self, gold: str, pred: str, symmetric: bool) -> bool:
        """math_verify's verdict on one pair (either direction when `symmetric`)."""
        gold_parsed, pred_parsed = self.parsed(gold), self.parsed(pred)
        if not gold_parsed or not pred_parsed:
            return False
        gold_list, pred_list, rounding = _small_number_view(list(gold_parsed), list(pred_parsed))
        # Set-relation comparison both ways: `(-\infty, 3]` and `x \le 3` are the same set.
        options = {"timeout_seconds": None, "float_rounding": rounding, "allow_set_relation_comp": True}
        if self._verify(gold_list, pred_list, **options):
            return True
        return symmetric and self._verify(pred_list, gold_list, **options)

    def any_equivalent(self, request: dict) -> bool:
        """Whether any pair of the request is equivalent, under the request's soft time limit."""
        signal.setitimer(signal.ITIMER_REAL, float(request["timeout"]))
        try:
            return any(self.equivalent(g, p, request["symmetric"]) for g, p in request["pairs"])
        except (_SoftTimeout, Exception):  # MemoryError and RecursionError included
            return False
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)


def _numeric_value(expr) -> float | None:
    """The value of a sympy expression that is a plain real number with a decimal in it, else None."""
    import sympy  # already loaded in the worker

    try:
        if not isinstance(expr, sympy.Expr) or not expr.is_number or not expr.has(sympy.Float):
            return None
        value = float(sympy.N(expr, 20))
    except (TypeError, ValueError, ArithmeticError, AttributeError):
        return None
    return value if math.isfinite(value) else None


def _small_number_view(gold: list, pred: list) -> tuple[list, list, int]:
    """Golds, predictions and float rounding for math_verify, adjusted for tiny decimal golds.

    math_verify rounds floats to 6 decimal places and compares other numeric expressions with
    `evalf(chop=True)`, so any two numbers below about 1e-7 come out equal (`8.224 \\times 10^{-19}` =
    `9.224 \\times 10^{-19}`, a Minerva form). For a decimal gold under 1e-4 both sides are evaluated to
    floats and compared to six significant digits of the gold; nothing changes for other golds.
    """
    import sympy  # already loaded in the worker

    magnitude = abs(_numeric_value(gold[0]) or 0.0)
    if not 0 < magnitude < 1e-4:
        return gold, pred, _FLOAT_ROUNDING
    rounding = 5 - math.floor(math.log10(magnitude))
    as_float = [(sympy.Float(v, 20) if (v := _numeric_value(e)) is not None else e) for e in gold + pred]
    return as_float[: len(gold)], as_float[len(gold) :], rounding


def _limit_memory(max_bytes: int) -> None:
    """Cap the worker's address space so a runaway allocation fails fast instead of swapping."""
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = max_bytes if hard == resource.RLIM_INFINITY else min(max_bytes, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        logger.warning("grading worker: could not limit memory")


def _worker_main(read_fd: int, write_fd: int) -> None:
    """Entry point of the worker process: serve JSON requests from the pipe until it closes.

    Args:
        read_fd: pipe end carrying requests `{"pairs": [[gold, pred], ...], "symmetric": bool, "timeout": s}`.
        write_fd: pipe end for the replies (`true` / `false`), preceded by one `ready` message.
    """
    _ignore_interrupts()
    requests = Connection(read_fd, writable=False)
    replies = Connection(write_fd, readable=False)
    judge = _WorkerJudge()
    _limit_memory(_WORKER_MEMORY_BYTES)
    signal.signal(signal.SIGALRM, _raise_soft_timeout)
    try:
        replies.send_bytes(b"ready")
        while True:
            request = json.loads(requests.recv_bytes())
            try:
                verdict = judge.any_equivalent(request)
            except _SoftTimeout:  # the timer fired between the computation and its cancellation
                verdict = False
            replies.send_bytes(b"true" if verdict else b"false")
    except (EOFError, OSError):  # the caller is gone (pipe closed): nothing left to serve
        return


def _ignore_interrupts() -> None:
    """Ignore SIGINT (it was meant for the caller), then unblock every signal.

    The worker starts with SIGINT blocked (see `_spawn_without_interrupts`); ignoring it discards an
    interrupt held since then. The empty mask also guarantees that SIGALRM, the soft timer, is
    delivered whatever the starting thread had blocked.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_SETMASK, [])


# --------------------------------------------------------------------------------------------------
# The caller's side: one client per worker process


def _spawn_without_interrupts(command: list[str], **popen_args) -> subprocess.Popen:
    """Start a worker with SIGINT blocked, so an interrupt before it ignores SIGINT is held, not raised.

    A child inherits the signal mask of the thread that starts it; blocking SIGINT in this thread
    for the moment of the spawn leaves this process's own interrupts pending or taken by another
    thread, never lost. The worker ignores SIGINT and clears its mask first thing (`_worker_main`).
    """
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: no process-group interrupts either
        return subprocess.Popen(command, **popen_args)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])
    try:
        return subprocess.Popen(command, **popen_args)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _kill(process: subprocess.Popen) -> None:
    """Kill a worker process and reap it (no-op when already gone)."""
    if process.poll() is None:
        process.kill()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        logger.warning("grading worker %d did not exit after SIGKILL", process.pid)


class _WorkerClient:
    """One worker process, used by one thread at a time, replaced after a crash or a hard timeout."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._owner_pid = -1
        self._ready = False
        self._requests: Connection | None = None
        self._replies: Connection | None = None

    def _start(self) -> None:
        """Start a worker (without waiting for its imports)."""
        to_worker_read, to_worker_write = os.pipe()
        from_worker_read, from_worker_write = os.pipe()
        env = dict(os.environ)
        # The worker must import this very package, also when it is used from a source tree.
        src_dir = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src_dir, env.get("PYTHONPATH")]))
        command = [sys.executable, "-c", _WORKER_STARTER, str(to_worker_read), str(from_worker_write)]
        try:
            self._process = _spawn_without_interrupts(
                command, pass_fds=(to_worker_read, from_worker_write), env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            )
        finally:
            os.close(to_worker_read)
            os.close(from_worker_write)
        weakref.finalize(self, _kill, self._process)
        self._requests = Connection(to_worker_write, readable=False)
        self._replies = Connection(from_worker_read, writable=False)
        self._owner_pid, self._ready = os.getpid(), False

    def _restart(self) -> None:
        """Kill the current worker (if this process owns it) and start a replacement in the background."""
        if self._process is not None and self._owner_pid == os.getpid():
            _kill(self._process)
            self._requests.close()
            self._replies.close()
        self._start()

    def _ensure_ready(self) -> None:
        """Start the worker if needed and wait until it has imported math_verify."""
        if self._process is None or self._owner_pid != os.getpid():
            self._start()  # first use, or we are a forked child and the worker is our parent's
        if self._ready:
            return
        if self._replies.poll(_STARTUP_TIMEOUT_S):
            try:
                self._ready = self._replies.recv_bytes() == b"ready"
            except (EOFError, OSError):
                self._ready = False
        if not self._ready:
            self._restart()
            raise RuntimeError("the grading worker failed to start (is math-verify installed?)")

    def ask(self, request: dict, timeout_s: float) -> bool:
        """Send one request and wait at most `timeout_s` plus a grace second for the verdict.

        Args:
            request: see `_worker_main`.
            timeout_s: the soft limit inside the worker; the worker is killed after `timeout_s + 1`.

        Returns:
            The verdict, or False after a timeout or a worker crash (the worker is then replaced).
        """
        payload = json.dumps(request).encode()
        with self._lock:
            for _attempt in range(2):
                self._ensure_ready()
                try:
                    self._requests.send_bytes(payload)
                except OSError:  # the worker died between requests (e.g. killed from outside)
                    self._restart()
                    continue
                return self._await_verdict(timeout_s + _SOFT_GRACE_S)
            return False

    def _await_verdict(self, deadline_s: float) -> bool:
        """The worker's reply within `deadline_s`, else kill and replace it and return False."""
        if self._replies.poll(deadline_s):
            try:
                return self._replies.recv_bytes() == b"true"
            except (EOFError, OSError):
                logger.warning("grading worker crashed; judged wrong and restarted")
        else:
            logger.warning("grading took over %.1f s; worker killed, answer judged wrong", deadline_s)
        self._restart()
        return False


class _WorkerPool:
    """The worker clients of this process, created on first use and kept warm between calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: list[_WorkerClient] = []

    def clients(self, count: int) -> list[_WorkerClient]:
        """The first `count` clients, creating missing ones."""
        with self._lock:
            while len(self._clients) < count:
                self._clients.append(_WorkerClient())
            return self._clients[:count]


@functools.cache
def _shared_pool() -> _WorkerPool:
    """The process-wide pool (cached, so it is created once; cleared in forked children)."""
    return _WorkerPool()


if hasattr(os, "register_at_fork"):
    # A forked child must not share its parent's pipes or locks: it gets a pool of its own.
    os.register_at_fork(after_in_child=_shared_pool.cache_clear)


# --------------------------------------------------------------------------------------------------
# Public judging API


def _check_timeout(timeout_s: float) -> None:
    """Reject a timeout that would make the bound meaningless."""
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")


def _judge(golds: list[str], answer: str, symmetric: bool, timeout_s: float, client: _WorkerClient) -> bool:
    """Compare one answer with any of the gold forms: safety checks, shortcuts, then the worker."""
    reason = _unsafe_reason(answer) or next(filter(None, map(_unsafe_reason, golds)), None)
    if reason:
        logger.debug("answer judged wrong without parsing: %s", reason)
        return False
    prepared_golds = [_prepare(gold) for gold in golds]
    prepared = _prepare(answer)
    if not prepared[0] or not any(gold for gold, _ in prepared_golds):
        return False
    verdict = _shortcut(prepared_golds, prepared)
    if verdict is not None:
        return verdict
    pairs = _candidate_pairs(prepared_golds, prepared)
    return client.ask({"pairs": pairs, "symmetric": symmetric, "timeout": timeout_s}, timeout_s)


def _grade_one(response: str, gold: str, timeout_s: float, client: _WorkerClient) -> bool:
    """`is_correct` on a given worker client."""
    answer = extract_answer(response)
    if answer is None:
        return False
    return _judge(gold_alternatives(gold), answer, symmetric=False, timeout_s=timeout_s, client=client)


def is_correct(response: str, gold: str, timeout_s: float = 5.0) -> bool:
    """Whether a response's final answer equals the gold answer (math_verify's symbolic judgment).

    Args:
        response: the model's full response (see `extract_answer` for what counts as its answer).
        gold: the dataset's `answer` field, in any of its forms (see `gold_alternatives`).
        timeout_s: the bound on judging; past it (plus about a second) the answer is judged wrong.

    Returns:
        True when an answer was extracted and math_verify finds it equivalent to a gold form.
    """
    _check_timeout(timeout_s)
    return _grade_one(response, gold, timeout_s, _shared_pool().clients(1)[0])


def answers_equivalent(a: str, b: str, timeout_s: float = 5.0) -> bool:
    """Whether two extracted answers are the same mathematical object (for majority-vote grouping).

    Args:
        a: one extracted answer (e.g. from `extract_answer`).
        b: the other.
        timeout_s: the bound on judging; past it the answers count as different.

    Returns:
        True when the texts are identical (ignoring spacing) or math_verify finds them equivalent in
        either direction (its check is not symmetric for assignments such as `x=2` against `2`).
    """
    _check_timeout(timeout_s)
    if not isinstance(a, str) or not isinstance(b, str) or not a.strip() or not b.strip():
        return False
    if a.strip() == b.strip():
        return True
    client = _shared_pool().clients(1)[0]
    return _judge([a], b, symmetric=True, timeout_s=timeout_s, client=client)


def grade_many(
    responses: list[str],
    golds: list[str],
    workers: int = 2,
    timeout_s: float = 5.0,
    progress: bool = True,
) -> list[bool]:
    """`is_correct` for many (response, gold) pairs on `workers` worker processes in parallel.

    Args:
        responses: model responses.
        golds: gold answers, one per response.
        workers: number of worker processes (each judged call is still bounded by `timeout_s`).
        timeout_s: the per-response bound on judging.
        progress: show a tqdm progress bar.

    Returns:
        One verdict per response, in the input order.
    """
    if len(responses) != len(golds):
        raise ValueError(f"{len(responses)} responses but {len(golds)} golds")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    _check_timeout(timeout_s)
    idle: queue.SimpleQueue[_WorkerClient] = queue.SimpleQueue()
    for client in _shared_pool().clients(workers):
        idle.put(client)

    def grade_index(index: int) -> bool:
        # Each thread borrows one worker for one item, so no worker ever serves two threads at once.
        client = idle.get()
        try:
            return _grade_one(responses[index], golds[index], timeout_s, client)
        finally:
            idle.put(client)

    verdicts = [False] * len(responses)
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
        total=len(responses), disable=not progress, desc="grading"
    ) as bar:
        futures = {pool.submit(grade_index, index): index for index in range(len(responses))}
        for future in as_completed(futures):
            verdicts[futures[future]] = future.result()
            bar.update()
    return verdicts
