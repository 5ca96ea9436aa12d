"""Checked worked solutions for arithmetic word problems: stage 2's default cold-start data.

A solver reads the numbers in a question (digits, and number words such as "thirty-three"), searches
expressions of one or two operations over them (+, -, *, /, exact `Fraction` arithmetic) for one that
gives the gold answer, and writes each step with its value, then checks each step by its inverse, in
DeepSeek-R1's readable format (the reasoning, then a summary):

    <think>
    The question gives 58 and 45.
    58 - 45 = 13.
    Let me double-check: 13 + 45 = 58. Correct.
    </think>
    <answer>58 - 45 = 13, so the answer is \\boxed{13}.</answer>

The text is parsed back and every equation recomputed before an example is kept
(`verify_worked_response`); questions where no expression fits are dropped (the yield is reported).
Departure from the paper: R1's cold-start data are long model-written traces; ours are short and
templated, because the CPU default's 135M model answers in 128 tokens and must learn the format in a
few optimizer steps.

    examples, stats = build_worked_examples(rows, count=64, seed=1234)
    stats.yield_rate
"""

from __future__ import annotations

import ast
import itertools
import operator
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from r1repro import grading, rewards
from r1repro.sft_examples import ColdStartExample


# ---------------------------------------------------------------------------------------------------
# Numbers in a question
# ---------------------------------------------------------------------------------------------------

_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
          "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ("hundred", "thousand")
_WORD_VALUES = {w: i for i, w in enumerate(_UNITS)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}
# Words that stand for a number on their own ("twice as many", "a dozen eggs").
_MULTIPLES = {"twice": 2, "double": 2, "thrice": 3, "triple": 3, "dozen": 12}
_WORD = "|".join([*_WORD_VALUES, *_SCALES])
# A run of number words: "thirty-three", "nine hundred twenty-seven", "two thousand and five".
# "and" joins only after a scale word: "three and four apples" is two numbers.
_JOIN = r"(?:[- ]|(?:(?<=hundred)|(?<=thousand))\sand\s)"
_WORDS_RE = re.compile(rf"\b(?:{_WORD})(?:{_JOIN}(?:{_WORD}))*\b|\b(?:{'|'.join(_MULTIPLES)})\b",
                       re.IGNORECASE)
_DIGITS_RE = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?")


def _words_value(text: str) -> int | None:
    """The value of a run of number words; None for a lone "one" or "zero" (mostly pronouns and idioms)."""
    words = re.findall(r"[a-z]+", text.lower())
    if len(words) == 1 and words[0] in _MULTIPLES:
        return _MULTIPLES[words[0]]
    if words in (["one"], ["zero"]):
        return None
    total = current = 0
    for word in words:
        if word in _WORD_VALUES:
            current += _WORD_VALUES[word]
        elif word == "hundred":
            current = max(current, 1) * 100
        elif word == "thousand":
            total, current = total + max(current, 1) * 1000, 0
    return total + current


@dataclass(frozen=True)
class Mention:
    """A number written in a question.

    Attributes:
        value: its exact value.
        text: how the question writes it ("33", "thirty-three", "1,200").
        start: its character offset, so mentions keep the question's order.
    """

    value: Fraction
    text: str
    start: int


def find_numbers(text: str) -> list[Mention]:
    """The numbers a question mentions, in order: digits (with thousands commas or decimals) and words.

    Args:
        text: the question.

    Returns:
        One `Mention` per occurrence; a number given twice is two mentions (both may be needed).
    """
    found = []
    for match in _DIGITS_RE.finditer(text):
        digits = match.group(1).replace(",", "") + (match.group(2) or "")
        found.append(Mention(Fraction(digits), match.group(0), match.start()))
    for match in _WORDS_RE.finditer(text):
        value = _words_value(match.group(0))
        if value is not None:
            found.append(Mention(Fraction(value), match.group(0), match.start()))
    return sorted(found, key=lambda m: m.start)


def parse_gold(answer: str) -> Fraction | None:
    """A gold answer such as "65", "2.5", "1,200" or "1/6" as a Fraction; None when it is not a number."""
    try:
        return Fraction(str(answer).replace(",", "").strip())
    except (ValueError, ZeroDivisionError):
        return None


def format_number(value: Fraction) -> str | None:
    """A readable, exact decimal for `value` ("13", "2.5"); None when it has no finite decimal form."""
    den = value.denominator
    while den % 2 == 0:
        den //= 2
    while den % 5 == 0:
        den //= 5
    if den != 1:
        return None  # 10/3 would need rounding, and every written step must be exact
    if value.denominator == 1:
        return str(value.numerator)
    text = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
    return text.rstrip("0").rstrip(".")


# ---------------------------------------------------------------------------------------------------
# Expression search
# ---------------------------------------------------------------------------------------------------

OPS = ("+", "-", "*", "/")
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
# Which operation a phrase in the question hints at; used only to choose among expressions that all
# give the gold answer, so that the one written down is the likeliest to be the intended reasoning.
_CUES = {
    "+": ("total", "in all", "altogether", "together", "combined", "sum", "both", "more", "added"),
    "-": ("left", "remain", "more than", "fewer", "less", "difference", "how many more", "gave",
          "lost", "spent", "got off", "ate", "sold", "away", "still"),
    "*": ("each", "every", "per", "times", "twice", "rows", "dozen", "groups of"),
    "/": ("each", "per", "equally", "split", "share", "divide", "ratio", "average", "every"),
}


@dataclass(frozen=True)
class Step:
    """One written operation: `left op right = result`."""

    left: Fraction
    op: str
    right: Fraction
    result: Fraction


@dataclass(frozen=True)
class Solution:
    """An expression over a question's numbers, as steps, a one-line formula and the mentions it uses."""

    steps: tuple[Step, ...]
    formula: str
    uses: tuple[int, ...]

    @property
    def value(self) -> Fraction:
        """The final result."""
        return self.steps[-1].result


def apply_op(op: str, left: Fraction, right: Fraction) -> Fraction | None:
    """`left op right`, or None for steps a worked solution should not contain.

    Skipped: division by zero, results that are not positive or have no exact decimal, and steps that
    change nothing or cancel (x + 0, x * 1, 1 * x, x / 1, x - x, x / x), which only pad a solution.
    """
    identity = 0 if op in "+-" else 1
    if right == identity or (op in "+*" and left == identity) or (op in "-/" and left == right):
        return None
    if op == "/" and right == 0:
        return None
    result = _ARITH[op](left, right)
    if result <= 0 or format_number(result) is None:
        return None
    return result


def _text(value: Fraction) -> str:
    text = format_number(value)
    assert text is not None  # apply_op only keeps values with an exact decimal
    return text


def _operand(text: str, op: str, outer: str, on_right: bool) -> str:
    """Parenthesize an inner expression where the outer operation would otherwise change its meaning."""
    weaker = _PRECEDENCE[op] < _PRECEDENCE[outer]
    same_level_right = on_right and _PRECEDENCE[op] == _PRECEDENCE[outer] and outer in "-/"
    return f"({text})" if weaker or same_level_right else text


def _one_op(mentions: Sequence[Mention]) -> Iterator[Solution]:
    for i, j in itertools.permutations(range(len(mentions)), 2):
        a, b = mentions[i].value, mentions[j].value
        for op in OPS:
            if op in "+*" and i > j:
                continue  # commutative: write it once, in the question's order
            result = apply_op(op, a, b)
            if result is not None:
                yield Solution((Step(a, op, b, result),), f"{_text(a)} {op} {_text(b)}", (i, j))


def _two_ops(mentions: Sequence[Mention]) -> Iterator[Solution]:
    for first in _one_op(mentions):
        inner = first.steps[0]
        for k, mention in enumerate(mentions):
            if k in first.uses:
                continue
            c = mention.value
            for outer in OPS:
                # (a op b) outer c, then c outer (a op b): both shapes of a two-operation tree.
                for on_right in (False, True):
                    left, right = (c, inner.result) if on_right else (inner.result, c)
                    result = apply_op(outer, left, right)
                    if result is None:
                        continue
                    sub = _operand(first.formula, inner.op, outer, on_right)
                    formula = f"{_text(c)} {outer} {sub}" if on_right else f"{sub} {outer} {_text(c)}"
                    yield Solution((inner, Step(left, outer, right, result)), formula, first.uses + (k,))


def _cue_score(question: str, solution: Solution) -> int:
    lowered = question.lower()
    return sum(any(cue in lowered for cue in _CUES[step.op]) for step in solution.steps)


def solve(question: str, gold: Fraction, mentions: Sequence[Mention] | None = None) -> Solution | None:
    """The simplest expression over the question's numbers that equals the gold answer.

    One operation is tried before two. Among expressions that fit, the one whose operations the
    question's wording hints at most is chosen, then the one using numbers earliest in the question
    (ties broken by operation order, so the choice is deterministic).

    Args:
        question: the problem text.
        gold: the gold answer.
        mentions: the question's numbers (default: `find_numbers(question)`).

    Returns:
        The chosen `Solution`, or None when no expression of at most two operations fits.
    """
    mentions = find_numbers(question) if mentions is None else mentions
    for search in (_one_op, _two_ops):
        fits = [s for s in search(mentions) if s.value == gold]
        if fits:
            return min(fits, key=lambda s: (-_cue_score(question, s), s.uses,
                                            tuple(OPS.index(st.op) for st in s.steps)))
    return None


# ---------------------------------------------------------------------------------------------------
# Writing and re-checking a worked solution
# ---------------------------------------------------------------------------------------------------

_INVERSE = {"+": "-", "-": "+", "*": "/", "/": "*"}
_CHECK_OPENERS = ("Let me double-check", "Let me verify", "Let me check my work")
_CHECK_VERDICTS = ("Correct.", "That matches.", "The steps are right.")
_NUMBER = r"\d+(?:\.\d+)?"
_EQUATION_RE = re.compile(rf"({_NUMBER}) ([-+*/]) ({_NUMBER}) = ({_NUMBER})")


def _check_of(step: Step) -> str:
    """The step undone: the result with the inverse operation gives back the left operand."""
    return f"{_text(step.result)} {_INVERSE[step.op]} {_text(step.right)} = {_text(step.left)}"


def _list_numbers(mentions: Sequence[Mention]) -> str:
    texts = [_text(m.value) for m in mentions]
    return texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1]


def render_solution(mentions: Sequence[Mention], solution: Solution, rng: random.Random) -> str:
    """The response text: numbers, steps, a check of every step, then the summary and boxed answer.

    Args:
        mentions: the question's numbers (listed first, as a reader would start).
        solution: the steps to write.
        rng: picks the wording of the check, so examples are not all identical.

    Returns:
        The full response, starting with `<think>`.
    """
    lines = [f"The question gives {_list_numbers(mentions)}."]
    lines += [f"{_text(s.left)} {s.op} {_text(s.right)} = {_text(s.result)}." for s in solution.steps]
    checks = " and ".join(_check_of(s) for s in solution.steps)
    lines.append(f"{rng.choice(_CHECK_OPENERS)}: {checks}. {rng.choice(_CHECK_VERDICTS)}")
    answer = _text(solution.value)
    summary = f"{solution.formula} = {answer}, so the answer is \\boxed{{{answer}}}."
    return "<think>\n" + "\n".join(lines) + "\n</think>\n<answer>" + summary + "</answer>"


def _eval_formula(formula: str) -> Fraction:
    """Evaluate `formula` (numbers, + - * /, parentheses) exactly; anything else raises ValueError."""

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return Fraction(str(node.value))
        if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPS:
            return _ARITH[_AST_OPS[type(node.op)]](walk(node.left), walk(node.right))
        raise ValueError(f"not plain arithmetic: {ast.dump(node)}")

    return walk(ast.parse(formula, mode="eval").body)


_AST_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def verify_worked_response(response: str, gold: Fraction, steps: int) -> bool:
    """Re-check a written solution from its text alone, independently of the search that made it.

    Every equation `x op y = z` in the think block is recomputed exactly; there must be two per step
    (the step and its check). The summary formula must evaluate to the boxed answer, which must equal
    the gold answer, and the response must pass the R1 format reward.

    Args:
        response: the full response text.
        gold: the gold answer.
        steps: how many operations the solution has.

    Returns:
        True when all of that holds.
    """
    if rewards.format_score(response) != 1.0:
        return False
    equations = _EQUATION_RE.findall(rewards.reasoning_text(response))
    if len(equations) != 2 * steps:
        return False
    for left, op, right, result in equations:
        if _ARITH[op](Fraction(left), Fraction(right)) != Fraction(result):
            return False
    boxed = parse_gold(grading.extract_answer(response) or "")
    summary = re.search(r"<answer>(.*) = (" + _NUMBER + "), so", response)
    if boxed is None or summary is None or boxed != gold:
        return False
    return _eval_formula(summary.group(1)) == gold == Fraction(summary.group(2))


# ---------------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------------


@dataclass
class WorkedStats:
    """What the solver made of the questions it was given (the yield)."""

    questions: int = 0
    solved: int = 0
    no_gold: int = 0
    too_few_numbers: int = 0
    no_expression: int = 0
    unverified: int = 0
    too_long: int = 0

    @property
    def yield_rate(self) -> float:
        """Share of the questions tried that gave a kept example."""
        return self.solved / self.questions if self.questions else 0.0


def worked_example(row: dict, rng: random.Random, max_numbers: int = 8,
                   stats: WorkedStats | None = None) -> ColdStartExample | None:
    """A checked worked solution for one question row, or None when none can be made.

    Args:
        row: {"id", "problem", "answer"}.
        rng: chooses the check's wording.
        max_numbers: questions mentioning more numbers are skipped (the search grows as n^3).
        stats: counts why a question was dropped, when given.

    Returns:
        The example, or None.
    """
    stats = stats if stats is not None else WorkedStats()
    gold = parse_gold(row["answer"])
    mentions = find_numbers(row["problem"])
    if gold is None or gold <= 0:
        stats.no_gold += 1
        return None
    if not 2 <= len(mentions) <= max_numbers:
        stats.too_few_numbers += 1
        return None
    solution = solve(row["problem"], gold, mentions)
    if solution is None:
        stats.no_expression += 1
        return None
    response = render_solution(mentions, solution, rng)
    if not verify_worked_response(response, gold, len(solution.steps)):
        stats.unverified += 1
        return None
    return ColdStartExample(str(row.get("id", "")), row["problem"], str(row["answer"]), response, "worked")


def build_worked_examples(rows: Sequence[dict], count: int | None = None, seed: int = 0,
                          max_numbers: int = 8, tokenizer: Any = None,
                          max_tokens: int | None = None) -> tuple[list[ColdStartExample], WorkedStats]:
    """Worked solutions for training questions, checked step by step (see the module docstring).

    Args:
        rows: training question rows ({"id", "problem", "answer"}); never evaluation questions.
        count: stop once this many examples are made (None: try every row).
        seed: orders the rows and picks wordings; the same rows and seed give the same examples.
        max_numbers: see `worked_example`.
        tokenizer, max_tokens: when both are given, responses longer than `max_tokens` tokens are
            dropped, so the model never learns an answer longer than its generation budget.

    Returns:
        (examples, stats); `stats.yield_rate` is the share of tried questions that gave an example.
        Measured (seed 1234): ASDiv rows 0-1499 yield 80% (1207), 71% under a 112-token budget;
        GSM8K's first 500 yield 46%, many fitting only by coincidence, since its multi-step problems
        rarely take two operations; hence ASDiv for the CPU default.
    """
    rng = random.Random(seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    examples: list[ColdStartExample] = []
    stats = WorkedStats()
    for index in order:
        if count is not None and len(examples) >= count:
            break
        stats.questions += 1
        example = worked_example(rows[index], rng, max_numbers, stats)
        if example is None:
            continue
        if tokenizer is not None and max_tokens is not None and _token_count(tokenizer, example.response) > max_tokens:
            stats.too_long += 1
            continue
        stats.solved += 1
        examples.append(example)
    return examples, stats


def _token_count(tokenizer: Any, text: str) -> int:
    # +1: the end-of-turn token the model must also emit within its budget.
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1
