"""Question sets through `datasets` (r1repro.hub_data): local files and folders stand in for the hub."""

from __future__ import annotations

import json

import pytest
import yaml

from r1repro import data
from r1repro.config import BenchmarkSubset, HubQuestions
from r1repro.data import DataError

MATH_ROWS = [
    {"problem": "What is $1+1$?", "level": "Level 1", "type": "Algebra", "solution": "Add: $\\boxed{2}$."},
    {"problem": "Solve $x^2=9$, $x>0$.", "level": "Level 3", "type": "Algebra",
     "solution": "So $x = \\boxed{3}$."},
    {"problem": "Simplify $\\frac{6}{8}$.", "level": "Level 5", "type": "Prealgebra",
     "solution": "It is $\\boxed{\\frac{3}{4}}$."},
    {"problem": "What is $2 \\cdot 5$?", "level": "Level 4", "type": "Prealgebra",
     "solution": "We get $\\boxed{10}$."},
]
HARD = {"level": ["Level 3", "Level 4", "Level 5"]}


@pytest.fixture
def math_jsonl(tmp_path):
    path = tmp_path / "math_train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MATH_ROWS))
    return path


def test_math_levels_3_to_5_with_boxed_answers(math_jsonl):
    spec = HubQuestions(id=str(math_jsonl), problem="problem", answer="solution", answer_in_boxed=True,
                        where=HARD)
    rows = data.load_subset("unused", BenchmarkSubset(hub=spec))
    assert [r["answer"] for r in rows] == ["3", "\\frac{3}{4}", "10"]
    assert rows[0]["problem"] == "Solve $x^2=9$, $x>0$." and len({r["id"] for r in rows}) == 3
    window = data.load_subset("unused", BenchmarkSubset(hub=spec, offset=1, limit=1))
    assert [r["answer"] for r in window] == ["\\frac{3}{4}"]


def test_a_saved_dataset_folder_loads_by_split(tmp_path):
    import datasets

    folder = tmp_path / "math_saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(MATH_ROWS)}).save_to_disk(str(folder))
    spec = HubQuestions(id=str(folder), answer="solution", answer_in_boxed=True)
    assert [r["answer"] for r in data.load_subset("unused", BenchmarkSubset(hub=spec))] == \
        ["2", "3", "\\frac{3}{4}", "10"]


@pytest.mark.parametrize("spec, message", [
    ({"answer": "final"}, "no column 'final'"),
    ({"answer": "problem", "answer_in_boxed": True}, "no \\\\boxed"),
    ({"answer": "solution", "where": {"level": ["Level 9"]}}, "no rows left"),
])
def test_bad_mappings_name_the_key(math_jsonl, spec, message):
    with pytest.raises(DataError, match=message):
        data.load_subset("unused", BenchmarkSubset(hub=HubQuestions(id=str(math_jsonl), **spec)))


def test_an_unreachable_hub_id_says_how_to_work_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    spec = HubQuestions(id="no-such-owner/no-such-dataset-r1repro", answer="solution")
    with pytest.raises(DataError, match="local path"):
        data.load_subset("unused", BenchmarkSubset(hub=spec))


def test_a_subset_names_exactly_one_source(math_jsonl):
    with pytest.raises(ValueError, match="exactly one"):
        BenchmarkSubset(file="train/asdiv.jsonl", hub=HubQuestions(id=str(math_jsonl)))
    with pytest.raises(ValueError, match="exactly one"):
        BenchmarkSubset()
    assert BenchmarkSubset(hub=HubQuestions(id="a/b")).source == "hub:a/b"


def test_the_gpu_profile_trains_on_math_levels_3_to_5(repo_root):
    from r1repro.config import load_params

    rl = load_params(repo_root, profile="gpu").rl
    assert rl.prompts.hub is not None and rl.prompts.hub.where == HARD
    assert rl.prompts.hub.answer_in_boxed and rl.template == "qwen_math"
    assert not rl.prompt_filter.enabled and rl.runs["dr_grpo"].loss_type == "dr_grpo"


def test_hub_errors_name_the_params_key(math_jsonl):
    spec = HubQuestions(id=str(math_jsonl), answer="final")
    with pytest.raises(DataError, match=r"^rl\.prompts\.hub\.id "):
        data.load_subset("unused", BenchmarkSubset(hub=spec), key="rl.prompts")
    solutions = HubQuestions(id=str(math_jsonl), answer="solution", answer_in_boxed=True)
    with pytest.raises(DataError, match=r"rl\.prompts\.offset"):
        data.load_subset("unused", BenchmarkSubset(hub=solutions, offset=99), key="rl.prompts")


def test_rows_without_a_boxed_answer_are_skipped_counted_and_warned(tmp_path, caplog):
    unboxed = {"problem": "Find $y$.", "level": "Level 4", "type": "Algebra", "solution": "So y is 7."}
    path = tmp_path / "math_train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*MATH_ROWS, unboxed, unboxed]))
    spec = HubQuestions(id=str(path), answer="solution", answer_in_boxed=True, where=HARD)
    with caplog.at_level("WARNING", logger="r1repro.hub_data"):
        rows = data.load_subset("unused", BenchmarkSubset(hub=spec, limit=2), key="rl.prompts")
    assert [r["answer"] for r in rows] == ["3", "\\frac{3}{4}"]  # the window is taken from the kept rows
    assert rows.skipped == {"no_boxed_answer": {"rows": 2, "example": "math_train.jsonl-train-00004"}}
    (warning,) = caplog.records
    assert "rl.prompts.hub.id" in warning.getMessage() and "skipped 2 of 5 rows" in warning.getMessage()
    assert "math_train.jsonl-train-00004" in warning.getMessage()
    assert data.load_subset("unused", BenchmarkSubset(hub=HubQuestions(id=str(path), answer="solution"))).skipped == {}


def _papers_folder(tmp_path):
    """A tiny stand-in for the Dr. GRPO paper's `math_lvl3to5_8k` (a DatasetDict saved to disk: train
    with a bare final answer, eval with MATH500's columns)."""
    import datasets

    folder = tmp_path / "math_lvl3to5_8k"
    train = [{"problem": "Solve $x^2=9$, $x>0$.", "answer": "3", "level": 3, "subject": "Algebra"},
             {"problem": "Simplify $\\frac{6}{8}$.", "answer": "\\frac{3}{4}", "level": 5, "subject": "Prealgebra"}]
    evaluation = [{"input": "What is $2+2$?", "gt_answer": "4", "output": "$\\boxed{4}$"}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(train),
                          "eval": datasets.Dataset.from_list(evaluation)}).save_to_disk(str(folder))
    return folder


def test_the_papers_saved_dataset_dict_loads_by_split(tmp_path):
    folder = _papers_folder(tmp_path)
    spec = HubQuestions(id=str(folder), split="train", problem="problem", answer="answer")
    rows = data.load_subset("unused", BenchmarkSubset(hub=spec), key="rl.prompts")
    assert [(r["problem"], r["answer"]) for r in rows] == [("Solve $x^2=9$, $x>0$.", "3"),
                                                           ("Simplify $\\frac{6}{8}$.", "\\frac{3}{4}")]
    assert rows.skipped == {}
    heldout = HubQuestions(id=str(folder), split="eval", problem="input", answer="gt_answer")
    assert data.load_subset("unused", BenchmarkSubset(hub=heldout))[0]["answer"] == "4"
    with pytest.raises(DataError, match=r"^rl\.prompts\.hub\.split: .* no split 'test' \(splits: train, eval\)"):
        data.load_subset("unused", BenchmarkSubset(hub=HubQuestions(id=str(folder), split="test")),
                         key="rl.prompts")


def test_a_local_path_that_is_not_there_is_named(tmp_path):
    spec = HubQuestions(id=str(tmp_path / "math_lvl3to5_8k"))
    with pytest.raises(DataError, match=r"^rl\.prompts\.hub\.id: .*does not exist; fix the path"):
        data.load_subset("unused", BenchmarkSubset(hub=spec), key="rl.prompts")


@pytest.mark.parametrize("profile", ["gpu", "gpu1"])
def test_the_profiles_show_how_to_train_on_the_papers_file(repo_root, tmp_path, profile):
    """The commented alternative beside rl.prompts in each GPU profile loads the paper's folder as written."""
    lines = (repo_root / "profiles" / f"{profile}.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("# hub: {id: /path/to/"))
    example = [lines[start]]
    while not example[-1].rstrip().endswith("}"):
        example.append(lines[start + len(example)])
    hub = yaml.safe_load("\n".join(line.replace("#", "", 1) for line in example))["hub"]
    assert hub["id"].endswith("datasets/train/math_lvl3to5_8k") and hub["split"] == "train"
    spec = HubQuestions(**{**hub, "id": str(_papers_folder(tmp_path))})
    assert [r["answer"] for r in data.load_subset("unused", BenchmarkSubset(hub=spec))] == ["3", "\\frac{3}{4}"]
