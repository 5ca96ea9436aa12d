"""Generated question sets: tasks a 135M model can learn by RL within a CPU budget.

A 135M model gains little from a few RL steps on real word problems: on ASDiv, 8 GRPO / Dr. GRPO steps
moved held-out accuracy by +0 to +3 points, inside the noise of 256 questions (params.yaml's rl
comments). The CPU default therefore trains RL on a task of the same kind, shape and answer format
that the cold-start model half solves: one-operation word problems, where the operation is named by
the phrasing ("gets 7 more", "gives away 3", "boxes with 4 in each", "shares ... equally among 5").
What RL can teach here in minutes is choosing the operation from the phrasing and small-number
arithmetic: it shows the mechanics of the papers (a held-out gain from rule-based rewards, the length
and std diagnostics), not mathematical reasoning. ASDiv stays the in-domain set of every other stage.

Rows are made by `random.Random(seed)` (Mersenne Twister; stable across Python versions), each
`problem` text at most once, so a pool is the same list on every machine and row ranges split it
like a file: params name `{synthetic: {task, seed, size}, offset, limit}`.

    from r1repro.synthetic_tasks import generate
    rows = generate("word_ops", size=1800, seed=0)   # [{"id", "problem", "answer"}, ...]
"""

from __future__ import annotations

import random
from collections.abc import Callable

NAMES = ("Tom", "Ann", "Raj", "Mia", "Leo", "Zoe", "Sam", "Ivy", "Ben", "Lia", "Omar", "Kim")
ITEMS = ("apples", "pens", "cards", "books", "stickers", "marbles", "shells", "coins", "cookies", "stamps")
OPERATIONS = ("add", "sub", "mul", "div")


def word_ops_question(rng: random.Random) -> tuple[str, int]:
    """One word problem whose single operation (+, -, x, /) is named by its phrasing, and its answer.

    Numbers are kept small (sums under 100, one-digit factors, exact quotients) so that the
    arithmetic is within a 135M model's reach and the operation is what decides the answer.
    """
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    operation = rng.choice(OPERATIONS)
    if operation == "add":
        a, b = rng.randint(3, 60), rng.randint(2, 40)
        return f"{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?", a + b
    if operation == "sub":
        a, b = rng.randint(10, 80), rng.randint(2, 9)
        return (f"{name} has {a} {item}. {name} gives away {b} {item}. "
                f"How many {item} does {name} have left?", a - b)
    if operation == "mul":
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        return f"{name} has {a} boxes with {b} {item} in each box. How many {item} does {name} have?", a * b
    quotient, friends = rng.randint(2, 9), rng.randint(2, 6)
    return (f"{name} shares {quotient * friends} {item} equally among {friends} friends. "
            f"How many {item} does each friend get?", quotient)


TASKS: dict[str, Callable[[random.Random], tuple[str, int]]] = {"word_ops": word_ops_question}


def generate(task: str, size: int, seed: int) -> list[dict]:
    """`size` distinct rows of a generated task, the same on every call with the same arguments.

    Args:
        task: a key of `TASKS`.
        size: rows in the pool (row ranges of it are the splits).
        seed: the generator's seed.

    Returns:
        Rows `{"id": "<task>-00000", "problem": str, "answer": str}`, each problem text once.

    Raises:
        ValueError: unknown task, or a size the task cannot fill with distinct problems.
    """
    if task not in TASKS:
        raise ValueError(f"unknown synthetic task {task!r}; valid: {', '.join(TASKS)}")
    make, rng = TASKS[task], random.Random(seed)
    seen: set[str] = set()
    rows: list[dict] = []
    # Duplicates are skipped, not retried forever: a pool far beyond the task's distinct problems stops.
    for _ in range(size * 20):
        problem, answer = make(rng)
        if problem in seen:
            continue
        seen.add(problem)
        rows.append({"id": f"{task}-{len(rows):05d}", "problem": problem, "answer": str(answer)})
        if len(rows) == size:
            return rows
    raise ValueError(f"synthetic task {task!r} made only {len(rows)} distinct problems of the {size} asked; "
                     "lower its `size`")
