"""Tests for r1repro.grading: extraction, gold forms, the judge on hand-checked cases and on the real
benchmarks, the time bound, and hostile responses (code payloads, huge or deeply nested text).

Run: python -m pytest tests/test_grading.py -q        (about 80 s on 2 cores)
The hand-checked cases live in tests/data/grading_cases.jsonl: each verdict was decided from the
mathematics first, then compared with the code; the few that math_verify gets wrong are listed in
KNOWN_LIMITATIONS below and run as strict xfails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from r1repro import grading
from r1repro.grading import (
    answers_equivalent,
    extract_answer,
    gold_alternatives,
    grade_many,
    is_correct,
    normalize_gold,
)

CASES_FILE = Path(__file__).parent / "data" / "grading_cases.jsonl"
EVAL_FILES = ["aime24", "amc23", "math500", "minerva_math", "olympiadbench"]
SLACK_S = 5.0  # allowed beyond timeout_s for any single call

# note -> why math_verify gets the hand-checked verdict wrong. Run as strict xfails, so a library
# update that fixes one shows up as an XPASS failure and the entry can be removed.
KNOWN_LIMITATIONS = {
    "AMC with choice letter text before value": (
        "`\\textbf{(C) }3159` parses as the product c*3159; stripping choice labels would break golds "
        "that are the letter itself"
    ),
    "symbol case folded: N=n": (
        "latex2sympy lowercases symbols (models often swap case), so the gold N=n becomes n=n, which "
        "any equation then matches"
    ),
    "unparseable E_1 gold": (
        "latex2sympy cannot parse `E_{1}` (E is Euler's number); the fallback is exact text"
    ),
    "unparseable max subscript gold": "latex2sympy cannot parse `m_{\\max}`; the fallback is exact text",
    "ODE solution with x(t) on the left": (
        "`x(t)` on the left is a function application, `x` in the gold a symbol; math_verify then tries "
        "sympy's solve on both equations, which runs past the 5 s bound (judged wrong)"
    ),
}


def load_cases() -> list[dict]:
    """The hand-checked (response, gold, correct, note) cases."""
    with CASES_FILE.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_eval(data_dir: Path, name: str) -> list[dict]:
    """Rows of one benchmark file."""
    with (data_dir / "eval" / f"{name}.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def worker_process():
    """The worker process behind is_correct (private, used to freeze or kill it on purpose)."""
    is_correct("\\boxed{1}", "1.5")  # make sure it is started and ready
    return grading._shared_pool().clients(1)[0]._process


# --------------------------------------------------------------------------------------------------
# Extraction


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("\\boxed{\\left\\{ x \\right\\}}", "\\left\\{ x \\right\\}"),
        ("\\boxed{3} then \\boxed{5}", "5"),
        ("\\fbox{7}", "7"),
        ("\\boxed {7}", "7"),
        ("\\boxed{ 7 }", "7"),
        ("<think>x</think><answer> 42 </answer>", "42"),
        ("<answer>1</answer><answer>2</answer>", "2"),
        ("<answer>so \\boxed{9}</answer>", "9"),
        ("\\boxed{8}<answer>9</answer>", "9"),  # tags first, then the box inside them
        ("<answer>\\boxed{1} or \\boxed{2}</answer>", "2"),
        ("\\boxed{\\boxed{5}}", "5"),
        ("\\boxed{a^{b^{c}}}", "a^{b^{c}}"),
        ("The answer is 5.", None),
        ("\\boxed{}", None),
        ("<answer>   </answer>", None),
        ("\\boxed{5", None),
        ("\\boxed{1} and \\boxed{2", None),  # an unclosed last box is a truncated answer
        ("<answer>5", None),
        ("", None),
    ],
)
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


def test_extract_answer_rejects_non_strings():
    assert extract_answer(None) is None  # type: ignore[arg-type]
    assert extract_answer(b"\\boxed{1}") is None  # type: ignore[arg-type]


# Random LaTeX-ish text whose unescaped braces are balanced (no `\boxed`, no tags, no trailing `\`).
ATOMS = st.sampled_from(
    ["a", "x", "1", "23", "+", "-", "^", "_", " ", "\n", "(", ")", "[", "]", ",", "$", ".", "\\frac",
     "\\sqrt", "\\pi", "\\{", "\\}", "\\\\", "\\left(", "\\right)", "é", "∞"]
)
BALANCED = st.recursive(
    ATOMS,
    lambda inner: st.one_of(
        inner.map(lambda text: "{" + text + "}"),
        st.lists(inner, min_size=2, max_size=4).map("".join),
    ),
    max_leaves=40,
)
NOISE = st.lists(
    st.one_of(st.text(max_size=20), st.sampled_from(["\\boxed{", "\\fbox{", "{", "}", "\\", "<answer>",
                                                      "</answer>", "\\boxed {", "$"])),
    max_size=30,
).map("".join)
HYPOTHESIS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HYPOTHESIS
@given(
    content=BALANCED,
    before=st.sampled_from(["", "We get ", "x}{ "]),
    after=st.sampled_from(["", ".", " } {"]),
)
def test_boxed_content_round_trips(content, before, after):
    expected = content.strip() or None
    assert extract_answer(before + "\\boxed{" + content + "}" + after) == expected


@HYPOTHESIS
@given(first=BALANCED, second=BALANCED)
def test_last_box_wins(first, second):
    response = "First \\boxed{" + first + "} and finally \\boxed{" + second + "}."
    assert extract_answer(response) == (second.strip() or None)


@HYPOTHESIS
@given(text=NOISE)
def test_extract_never_raises(text):
    result = extract_answer(text)
    assert result is None or (isinstance(result, str) and result == result.strip() and result)


@HYPOTHESIS
@given(content=st.text(max_size=60).filter(lambda s: "answer>" not in s and "box" not in s))
def test_tag_content_without_box_is_stripped(content):
    assert extract_answer("<think>t</think><answer>" + content + "</answer>") == (content.strip() or None)


# --------------------------------------------------------------------------------------------------
# Gold answers


@pytest.mark.parametrize(
    ("gold", "expected"),
    [
        ("142.0", "142"),
        ("-7.0", "-7"),
        ("4.25", "4.25"),
        ("025", "025"),
        ("['9.6\\n']", "9.6"),
        ("['3.89e-10\\n', '3.89e-10']", "3.89e-10"),
        ("['$\\\\frac{1}{2}$']", "\\frac{1}{2}"),
        ("['$69$,$84$']", "69,84"),
        ("['$221,$8$']", "221,8"),
        ("['$(-\\\\infty, 0) \\\\cup\\\\{1\\\\}$.']", "(-\\infty, 0) \\cup\\{1\\}"),
        ("[-2,7]", "[-2,7]"),  # an interval, not a list literal
        ("\\left[ \\frac{\\pi^2}{8}, 1 \\right]", "\\left[ \\frac{\\pi^2}{8}, 1 \\right]"),
        ("\\$32,\\!348", "\\$32,\\!348"),
        ("['unterminated", "['unterminated"),
    ],
)
def test_normalize_gold(gold, expected):
    assert normalize_gold(gold) == expected


def test_gold_alternatives_keep_every_form_once():
    assert gold_alternatives("['6630.65\\n', '6630\\n']") == ["6630.65", "6630"]
    assert gold_alternatives("['11.9\\n', '11.9']") == ["11.9"]
    assert gold_alternatives("5") == ["5"]


def test_gold_lists_are_parsed_one_thread_at_a_time(monkeypatch):
    # CPython 3.11's AST conversion shares one recursion counter between threads; grade_many's threads
    # reading list golds at once failed CI with "AST constructor recursion depth mismatch". The sleep
    # widens the window so that two unguarded calls would overlap every time.
    active, most = [0], [0]
    counter = threading.Lock()
    real_literal_eval = grading.ast.literal_eval

    def slow_literal_eval(text):
        with counter:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.02)
        try:
            return real_literal_eval(text)
        finally:
            with counter:
                active[0] -= 1

    monkeypatch.setattr(grading.ast, "literal_eval", slow_literal_eval)
    threads = [threading.Thread(target=gold_alternatives, args=("['9.6\\n', '9.60']",)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1


def test_gold_list_is_read_without_eval(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"[__import__('os').system('touch {marker}')]"
    assert normalize_gold(payload) == payload  # not a list of string literals: left as text
    assert not is_correct("\\boxed{1}", payload)
    assert not marker.exists()


@pytest.mark.parametrize("name", EVAL_FILES)
def test_every_real_gold_normalizes(data_dir, name):
    for row in load_eval(data_dir, name):
        forms = gold_alternatives(row["answer"])
        assert forms and all(forms), row["id"]
        for form in forms:
            assert form == form.strip() and "\n" not in form, row["id"]
            assert not re.search(r"(?<!\\)\$", form), row["id"]
            assert not re.fullmatch(r"-?\d+\.0", form), row["id"]


def test_train_golds_are_plain_numbers(data_dir):
    for name in ("gsm8k", "asdiv"):
        with (data_dir / "train" / f"{name}.jsonl").open(encoding="utf-8") as handle:
            golds = [json.loads(line)["answer"] for line in handle]
        odd = [g for g in golds if not re.fullmatch(r"-?\d+(\.\d+)?", normalize_gold(g))]
        assert len(odd) <= len(golds) // 100, odd[:10]


# --------------------------------------------------------------------------------------------------
# The judge on hand-checked cases


def test_cases_file_is_sound():
    cases = load_cases()
    assert len(cases) >= 200
    assert all(set(case) == {"response", "gold", "correct", "note"} for case in cases)
    notes = [case["note"] for case in cases]
    assert len(set(notes)) == len(notes), "notes are the test ids, keep them unique"
    assert 0.3 < sum(case["correct"] for case in cases) / len(cases) < 0.8
    assert set(KNOWN_LIMITATIONS) <= set(notes)


def _case_params():
    params = []
    for case in load_cases():
        marks = []
        if case["note"] in KNOWN_LIMITATIONS:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_LIMITATIONS[case["note"]]))
        params.append(pytest.param(case, id=case["note"], marks=marks))
    return params


@pytest.mark.parametrize("case", _case_params())
def test_hand_checked_case(case):
    assert is_correct(case["response"], case["gold"]) is case["correct"]


def test_grade_many_matches_is_correct_in_order():
    cases = load_cases()[:80]
    responses, golds = [c["response"] for c in cases], [c["gold"] for c in cases]
    verdicts = grade_many(responses, golds, workers=2, progress=False)
    assert verdicts == [is_correct(c["response"], c["gold"]) for c in cases]


def test_grade_many_edges(capsys):
    assert grade_many([], [], progress=False) == []
    assert grade_many(["\\boxed{2}", "\\boxed{3}"], ["2", "2"], workers=1, progress=True) == [True, False]
    assert "grading" in capsys.readouterr().err
    with pytest.raises(ValueError):
        grade_many(["a"], [], progress=False)
    with pytest.raises(ValueError):
        grade_many(["a"], ["1"], workers=0, progress=False)
    with pytest.raises(ValueError):
        is_correct("\\boxed{1}", "1", timeout_s=0)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("\\frac{1}{2}", "0.5", True),
        ("x=2", "2", True),
        ("2", "x=2", True),
        ("1,2", "2,1", True),
        ("2\\sqrt{3}", "\\sqrt{12}", True),
        ("50\\%", "50", True),
        ("(-\\infty, 3]", "x \\le 3", True),
        ("3", "4", False),
        ("\\frac{1}{2}", "\\frac{1}{3}", False),
        ("(1,2)", "(2,1)", False),
        ("", "", False),
        (" 7 ", "7", True),
    ],
)
def test_answers_equivalent(a, b, expected):
    assert answers_equivalent(a, b) is expected
    assert answers_equivalent(b, a) is expected


# --------------------------------------------------------------------------------------------------
# Outside check on the real benchmarks


def _perturb(gold: str) -> str:
    """A different value: the first integer in the gold plus one, or the gold plus one when it has none."""
    text = normalize_gold(gold)
    number = re.search(r"\d+", text)
    if number:
        return text[: number.start()] + str(int(number.group()) + 1) + text[number.end() :]
    return text + "+1"


def _rewrite(gold: str) -> str | None:
    """An equal value in another form (so the sympy path is taken, not the identical-text shortcut)."""
    text = normalize_gold(gold)
    if re.fullmatch(r"-?\d+", text):
        return text + ".0"
    if re.fullmatch(r"-?\d*\.\d+", text):
        return text + "0"
    fraction = re.fullmatch(r"(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}", text)
    if fraction:
        return f"{fraction[1]}\\frac{{{2 * int(fraction[2])}}}{{{2 * int(fraction[3])}}}"
    return None


def _report(capsys, line: str) -> None:
    """Print a measured number even when pytest captures output."""
    with capsys.disabled():
        print(f"\n  [grading] {line}")


@pytest.mark.parametrize("name", EVAL_FILES)
def test_reference_solutions_are_judged_correct(data_dir, name, capsys):
    rows = load_eval(data_dir, name)
    golds = [row["answer"] for row in rows]
    reference = [f"We simplify.\nThe final answer is $\\boxed{{{normalize_gold(g)}}}$." for g in golds]
    r1_style = [f"<think>\nSome reasoning.\n</think>\n<answer>{normalize_gold(g)}</answer>" for g in golds]
    for style, responses in (("reference", reference), ("r1", r1_style)):
        verdicts = grade_many(responses, golds, workers=2, progress=False)
        rate = sum(verdicts) / len(verdicts)
        _report(capsys, f"{name} {style}-style gold answers judged correct: {rate:.2%} of {len(verdicts)}")
        assert rate >= 0.998


@pytest.mark.parametrize("name", EVAL_FILES)
def test_equal_values_in_other_forms_are_judged_correct(data_dir, name, capsys):
    pairs = [(form, row["answer"]) for row in load_eval(data_dir, name) if (form := _rewrite(row["answer"]))]
    verdicts = grade_many([f"\\boxed{{{form}}}" for form, _ in pairs], [g for _, g in pairs], progress=False)
    rate = sum(verdicts) / len(verdicts)
    _report(capsys, f"{name} equal values rewritten (142 -> 142.0, 1/2 -> 2/4) judged correct: "
                    f"{rate:.2%} of {len(pairs)}")
    assert rate >= 0.995


@pytest.mark.parametrize("name", EVAL_FILES)
def test_perturbed_answers_are_judged_wrong(data_dir, name, capsys):
    golds = [row["answer"] for row in load_eval(data_dir, name)]
    responses = [f"The final answer is $\\boxed{{{_perturb(g)}}}$." for g in golds]
    started = time.perf_counter()
    verdicts = grade_many(responses, golds, workers=2, progress=False)
    elapsed = time.perf_counter() - started
    rate = 1 - sum(verdicts) / len(verdicts)
    _report(capsys, f"{name} perturbed answers judged wrong: {rate:.2%} of {len(golds)} "
                    f"({1000 * elapsed / len(golds):.1f} ms per answer on 2 workers)")
    assert rate >= 0.98


def test_common_case_latency(data_dir, capsys):
    golds = [row["answer"] for row in load_eval(data_dir, "math500")]
    pairs = [(form, g) for g in golds if (form := _rewrite(g))][:200]
    worker_process()
    started = time.perf_counter()
    verdicts = [is_correct(f"\\boxed{{{form}}}", gold) for form, gold in pairs]
    mean_ms = 1000 * (time.perf_counter() - started) / len(pairs)
    _report(capsys, f"is_correct mean latency through the worker (numbers, MATH500): {mean_ms:.1f} ms")
    assert all(verdicts)
    assert mean_ms < 50


# --------------------------------------------------------------------------------------------------
# Time bound


PATHOLOGICAL = [
    "10^{10^{10^{10}}}",
    "9^{9^{9^{9^{9}}}}",
    "((((100!)!)!)!)!",
    "(10^{8})!",
    "2^{2^{2^{2^{2^{2}}}}}",
]


@pytest.mark.parametrize("answer", PATHOLOGICAL)
def test_pathological_answer_is_wrong_within_bound(answer):
    worker_process()
    started = time.perf_counter()
    assert is_correct("\\boxed{" + answer + "}", "5", timeout_s=2.0) is False
    assert time.perf_counter() - started < 2.0 + SLACK_S


def test_pathological_answers_equivalent_within_bound():
    worker_process()
    started = time.perf_counter()
    assert answers_equivalent("9^{9^{9}}", "9^{387420489}+1", timeout_s=2.0) is False
    assert time.perf_counter() - started < 2.0 + SLACK_S


def test_stuck_worker_is_killed_and_replaced():
    """A worker stuck where no signal helps (simulated with SIGSTOP) is killed at the hard deadline."""
    process = worker_process()
    os.kill(process.pid, signal.SIGSTOP)
    started = time.perf_counter()
    assert is_correct("\\boxed{0.5}", "\\frac{1}{2}", timeout_s=1.0) is False
    assert time.perf_counter() - started < 1.0 + SLACK_S
    assert process.poll() is not None  # killed and reaped
    assert is_correct("\\boxed{0.5}", "\\frac{1}{2}") is True  # a fresh worker took over
    assert worker_process().pid != process.pid


def test_worker_killed_between_calls_is_replaced():
    process = worker_process()
    process.kill()
    process.wait()
    assert is_correct("\\boxed{0.25}", "\\frac{1}{4}") is True


def test_worker_memory_is_limited():
    limits = Path(f"/proc/{worker_process().pid}/limits")
    if not limits.exists():
        pytest.skip("no /proc on this system")
    line = next(row for row in limits.read_text().splitlines() if row.startswith("Max address space"))
    assert line.split()[3] == str(2 << 30)


def test_huge_and_odd_inputs_do_not_crash():
    worker_process()
    started = time.perf_counter()
    megabyte = "lorem ipsum { } \\ $ " * 55_000
    assert extract_answer(megabyte) is None
    assert is_correct(megabyte + "\\boxed{5}", "5") is True
    assert is_correct("\\boxed{" + "1" * 1_000_000 + "}", "5") is False
    assert is_correct("\\boxed{5\x00}", "5") is False
    assert is_correct("\x00" * 1000, "5") is False
    deep = "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}"
    assert extract_answer(deep) == "{" * 10_000 + "1" + "}" * 10_000
    assert is_correct(deep, "1") is False  # too deeply nested to parse
    assert extract_answer("\\boxed{" + "{" * 10_000) is None
    assert is_correct("\\boxed{" * 10_000 + "5" + "}" * 10_000, "5") is True  # innermost box
    assert is_correct("\\boxed{" + "(" * 10_000 + "5" + ")" * 10_000 + "}", "5") is False
    assert answers_equivalent("{" * 10_000, "}" * 10_000) is False
    assert time.perf_counter() - started < 30


def test_works_from_a_thread():
    results = []
    thread = threading.Thread(target=lambda: results.append(is_correct("\\boxed{\\dfrac{1}{2}}", "0.5")))
    thread.start()
    thread.join(timeout=120)
    assert results == [True]


def test_works_from_a_script_without_main_guard():
    """No `if __name__ == '__main__'` needed (the worker is not started by re-importing __main__),
    and the worker exits with its parent."""
    script = textwrap.dedent(
        """
        from r1repro import grading
        print(grading.is_correct(r"\\boxed{0.5}", r"\\frac{1}{2}"))
        print(grading._shared_pool().clients(1)[0]._process.pid)
        """
    )
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    verdict, pid = done.stdout.split()
    assert verdict == "True"
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_works_inside_a_jupyter_kernel(capfd):
    """Also: interrupting the kernel (SIGINT to its process group, as its shutdown does) leaves no
    traceback from the workers (they write to the kernel's stderr, this process's), and they go on."""
    manager = pytest.importorskip("jupyter_client.manager")
    kernel, client = manager.start_new_kernel(kernel_name="python3")
    try:
        streams: list[str] = []
        code = (
            "from r1repro.grading import is_correct\n"
            "print('VERDICT', is_correct(r'\\boxed{0.5}', r'\\frac{1}{2}'), "
            "is_correct(r'\\boxed{9^{9^{9^{9}}}}', '5', timeout_s=1))"
        )
        def keep_stream(message: dict) -> None:
            if message["msg_type"] == "stream":
                streams.append(message["content"]["text"])

        reply = client.execute_interactive(code, timeout=120, output_hook=keep_stream)
        kernel.interrupt_kernel()
        time.sleep(2)  # time for a worker to print a traceback, if it would
        again = client.execute_interactive(code, timeout=120, output_hook=keep_stream)
    finally:
        client.stop_channels()
        kernel.shutdown_kernel(now=True)
    assert reply["content"]["status"] == again["content"]["status"] == "ok"
    assert "".join(streams).count("VERDICT True False") == 2
    errors = capfd.readouterr().err
    assert "KeyboardInterrupt" not in errors and "Traceback" not in errors, errors


# --------------------------------------------------------------------------------------------------
# Interrupts meant for the caller (a kernel's shutdown sends SIGINT to its whole process group)

# A parent that, like a Jupyter kernel, survives SIGINT; it interrupts its own process group while its
# workers start, while they idle and while one computes, then prints its workers' pids and waits.
_INTERRUPTED_PARENT = textwrap.dedent(
    r"""
    import os, signal, sys, threading, time
    from r1repro import grading

    signal.signal(signal.SIGINT, lambda *_: None)
    clients = grading._shared_pool().clients(2)
    for client in clients:
        client._start()  # spawned; still importing math_verify when the interrupt comes
    os.killpg(0, signal.SIGINT)
    print(grading.grade_many([r"\boxed{0.5}", r"\boxed{3}"], [r"\frac{1}{2}", "4"], workers=2,
                             progress=False), flush=True)
    os.killpg(0, signal.SIGINT)  # both idle, waiting for a request
    pids = [client._process.pid for client in clients]
    threading.Timer(0.3, os.killpg, (0, signal.SIGINT)).start()  # one busy in sympy
    started = time.perf_counter()
    print(grading.is_correct(r"\boxed{9^{9^{9^{9}}}}", "5", timeout_s=1.0),
          round(time.perf_counter() - started, 1), flush=True)
    print(grading.is_correct(r"\boxed{0.25}", r"\frac{1}{4}"), flush=True)
    assert [client._process.pid for client in clients] == pids, "a worker was replaced"
    print(*pids, flush=True)
    if sys.argv[1] == "wait":
        time.sleep(600)  # until the test kills this process
    """
)


def _start_interrupted_parent(mode: str) -> tuple[subprocess.Popen, list[str], list[int]]:
    """Run `_INTERRUPTED_PARENT` in a session of its own (its SIGINTs reach only it and its workers);
    return the process, its first four output lines and its worker pids."""
    parent = subprocess.Popen([sys.executable, "-c", _INTERRUPTED_PARENT, mode], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines = [parent.stdout.readline().strip() for _ in range(4)]
    pids = [int(pid) for pid in lines[-1].split()] if lines[-1] else []
    return parent, lines, pids


def _gone(pids: list[int], timeout_s: float = 15.0) -> bool:
    """Whether every pid has exited (a zombie awaiting its reaper counts) within `timeout_s`."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                alive += [pid] if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE else []
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return True
        time.sleep(0.1)
    return False


def test_workers_ignore_interrupts_meant_for_their_caller():
    """SIGINT to the caller's process group, with workers starting, idle and busy: no traceback, no
    worker lost, the soft time bound still ends the busy one (same pid), and the workers exit with
    their caller."""
    parent, lines, pids = _start_interrupted_parent("exit")
    _, stderr = parent.communicate(timeout=120)
    assert parent.returncode == 0, stderr
    assert lines[0] == "[True, False]"
    verdict, seconds = lines[1].split()
    assert verdict == "False" and float(seconds) < 1.0 + SLACK_S  # soft timer, not the hard kill
    assert lines[2] == "True" and len(pids) == 2
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert _gone(pids)


def test_workers_exit_when_their_caller_is_killed():
    """No finalizer runs after SIGKILL: the closed pipe alone ends the workers, quietly."""
    parent, lines, pids = _start_interrupted_parent("wait")
    try:
        assert len(pids) == 2, lines
    finally:
        parent.kill()
        _, stderr = parent.communicate(timeout=60)
    assert _gone(pids)
    assert "Traceback" not in stderr, stderr


# --------------------------------------------------------------------------------------------------
# Code in responses is never executed


def _payloads(marker: Path) -> list[str]:
    return [
        f"__import__('os').system('touch {marker}')",
        f"__import__(\"os\").system(\"touch {marker}\")",
        "().__class__.__bases__[0].__subclasses__()",
        "lambda: 1",
        f"exec(\"import os; os.system('touch {marker}')\")",
        f"eval(chr(95)*2+'import'+chr(95)*2+'(\"os\").system(\"touch {marker}\")')",
        f"open('{marker}', 'w')",
        f"(lambda: __import__('os').system('touch {marker}'))()",
    ]


def test_code_payloads_are_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    for payload in _payloads(marker):
        for response in (
            "\\boxed{" + payload + "}",
            "<answer>" + payload + "</answer>",
            "<answer>The answer is $" + payload + "$.</answer>",
            "The final answer is $\\boxed{" + payload + "}$",
        ):
            assert is_correct(response, "1") is False, response
            assert is_correct(response, "['" + payload.replace("'", "") + "']") is False, response
        assert answers_equivalent(payload, "1") is False
        assert answers_equivalent("x", payload) is False
    boxed = ["\\boxed{" + payload + "}" for payload in _payloads(marker)]
    assert grade_many(boxed, ["1"] * len(boxed), progress=False) == [False] * len(boxed)
    assert not marker.exists()


def test_parse_expr_guard_allows_only_inert_text(tmp_path):
    sympy_parser = pytest.importorskip("sympy.parsing.sympy_parser")
    guarded = grading._inert_only(sympy_parser.parse_expr)
    assert guarded("2*x + 1") is not None
    assert float(guarded("3.5")) == 3.5
    marker = tmp_path / "pwned"
    for payload in _payloads(marker) + ["exit()", "x.func", "(1).__class__"]:
        with pytest.raises(ValueError):
            guarded(payload)
    assert not marker.exists()
