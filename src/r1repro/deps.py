"""Each stage's code dependencies, computed from the imports of its notebook or module: never kept by hand.

    python -m r1repro.deps --check    # exit 1 (and list the differences) when dvc.yaml's deps drifted
    python -m r1repro.deps --write    # rewrite each stage's deps in dvc.yaml (comments kept)
    python -m r1repro.deps            # print each stage's closure

A stage depends on every `src/r1repro` module its code can reach: the transitive closure of imports
starting from the notebook's code cells (or the script module a stage runs), with imports inside
functions counted (`data.py` imports `hub_data` only on the hub path, which the GPU profile takes) and
module names written as strings counted too (`r1repro.distributed` starts `"r1repro.rl"` in a launched
process). Over-counting costs a rerun; under-counting lets `dvc status` say "up to date" over results
the code no longer makes, so every reachable module is listed.

A stage's deps in dvc.yaml are: its notebook, the code closure, then its inputs (models, data, the
result folders the report reads; from `r1repro.pipeline`); the `params` stage reads params.yaml and
the profiles.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

from r1repro.pipeline import PIPELINE, Stage

PACKAGE = "r1repro"
PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_PREFIX = f"src/{PACKAGE}/"
# A string that is exactly "r1repro.<module>": a module started by name (a launched process's job
# module, a `-m` command). Prose that mentions a module (docstrings) is not an import.
_MODULE_STRING = re.compile(rf"{PACKAGE}\.([A-Za-z_]\w*)")
# What the params stage resolves (r1repro.config): the base file and every profile, with the git-ignored
# profiles/active.yaml that names the active one (a folder dep: that file may be absent, meaning none).
PARAMS_INPUTS = ("params.yaml", "profiles")


def _modules_named(tree: ast.AST, known: set[str]) -> set[str]:
    """r1repro modules an AST imports anywhere (functions included) or names in a string."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from r1repro import rl, io` names modules; `from r1repro.rl import x` the module itself.
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = _MODULE_STRING.fullmatch(node.value)
            names = [node.value] if match else []
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == PACKAGE and len(parts) > 1 and parts[1] in known:
                found.add(parts[1])
    return found


def known_modules(package_dir: Path = PACKAGE_DIR) -> set[str]:
    """The module names of the package (file stems under src/r1repro)."""
    return {p.stem for p in package_dir.glob("*.py") if p.stem != "__init__"}


def notebook_source(path: Path) -> str:
    """The code cells of a notebook joined into one Python source (IPython magics dropped)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    lines = []
    for cell in cells:
        if cell.get("cell_type") == "code":
            source = "".join(cell.get("source", []))
            lines += [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def import_closure(roots: set[str], sources: dict[str, str] | None = None,
                   package_dir: Path = PACKAGE_DIR) -> set[str]:
    """Every r1repro module reachable from `roots` by imports (the roots included).

    Args:
        roots: module names to start from (e.g. {"stage", "rl"}).
        sources: extra code to start from, {label: Python source} (a notebook's cells); not a module.
        package_dir: the package folder.

    Returns:
        Module names (file stems), `__init__` included: importing any module runs it.
    """
    known = known_modules(package_dir)
    unknown = roots - known
    if unknown:
        raise ValueError(f"not modules of {PACKAGE}: {', '.join(sorted(unknown))}")
    todo = set(roots)
    for label, source in (sources or {}).items():
        todo |= _modules_named(ast.parse(source, filename=label), known)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        seen.add(name)
        path = package_dir / f"{name}.py"
        todo |= _modules_named(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), known) - seen
    return seen | {"__init__"}


def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """{module: the r1repro modules it imports, anywhere in its code}."""
    known = known_modules(package_dir)
    return {name: _modules_named(ast.parse((package_dir / f"{name}.py").read_text(encoding="utf-8")), known) - {name}
            for name in known}


def import_cycles(package_dir: Path = PACKAGE_DIR) -> list[list[str]]:
    """Every module path that imports its way back to its start (each cycle once, smallest name first)."""
    graph, found = import_graph(package_dir), set()

    def walk(path: list[str]) -> None:
        for nxt in sorted(graph[path[-1]]):
            if nxt in path:
                cycle = path[path.index(nxt):]
                turn = cycle.index(min(cycle))
                found.add(tuple(cycle[turn:] + cycle[:turn]))
            else:
                walk(path + [nxt])

    for name in graph:
        walk([name])
    return [list(c) for c in sorted(found)]


def code_closure(s: Stage, root: Path) -> set[str]:
    """The modules a stage's code reaches: its notebook's imports and the runner, or its script module,
    and the module its launched training processes run (`Stage.trains`)."""
    trains = {s.trains} if s.trains else set()
    if s.notebook:
        notebook = root / "notebooks" / s.notebook
        return import_closure({"stage"} | trains, {str(notebook): notebook_source(notebook)})
    return import_closure({s.module} | trains)


def stage_deps(s: Stage, root: Path) -> list[str]:
    """What dvc.yaml should list as the stage's deps, in a stable order."""
    head = [f"notebooks/{s.notebook}"] if s.notebook else []
    code = [f"{SOURCE_PREFIX}{m}.py" for m in sorted(code_closure(s, root))]
    inputs = list(PARAMS_INPUTS) if s.name == "params" else list(s.inputs)
    return head + code + inputs


def expected_deps(root: Path) -> dict[str, list[str]]:
    """{stage: deps} for every stage of the pipeline table."""
    return {s.name: stage_deps(s, root) for s in PIPELINE}


def _yaml():
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip: comments and layout of dvc.yaml survive a rewrite
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 110
    return yaml


def declared_deps(dvc_yaml: Path) -> dict[str, list[str]]:
    """{stage: deps} as dvc.yaml lists them now."""
    stages = _yaml().load(dvc_yaml.read_text(encoding="utf-8"))["stages"]
    return {name: [str(d) for d in spec.get("deps", [])] for name, spec in stages.items()}


def differences(root: Path) -> list[str]:
    """One line per stage whose dvc.yaml deps differ from the computed ones (empty: in step)."""
    declared, expected = declared_deps(root / "dvc.yaml"), expected_deps(root)
    lines = []
    for name in sorted(set(declared) | set(expected)):
        if name not in expected:
            lines.append(f"{name}: in dvc.yaml but not in r1repro.pipeline.PIPELINE")
        elif name not in declared:
            lines.append(f"{name}: in r1repro.pipeline.PIPELINE but not in dvc.yaml")
        elif declared[name] != expected[name]:
            missing = [d for d in expected[name] if d not in declared[name]]
            extra = [d for d in declared[name] if d not in expected[name]]
            what = "; ".join(filter(None, [missing and f"missing {', '.join(missing)}",
                                           extra and f"not used {', '.join(extra)}"])) or "order differs"
            lines.append(f"{name}: {what}")
    return lines


def write_deps(root: Path) -> list[str]:
    """Rewrite the deps of each stage in dvc.yaml to the computed ones; return the stages changed."""
    from ruamel.yaml.comments import CommentedSeq

    path = root / "dvc.yaml"
    yaml = _yaml()
    document = yaml.load(path.read_text(encoding="utf-8"))
    changed = []
    for name, deps in expected_deps(root).items():
        spec = document["stages"].get(name)
        if spec is None:
            raise KeyError(f"dvc.yaml has no stage {name!r}: add it (cmd, params, outs) first")
        if [str(d) for d in spec.get("deps", [])] != deps:
            spec["deps"] = CommentedSeq(deps)
            changed.append(name)
    if changed:
        from io import StringIO

        from r1repro.io import atomic_write_text

        buffer = StringIO()
        yaml.dump(document, buffer)
        atomic_write_text(path, buffer.getvalue())
    return changed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from r1repro.config import repo_root

    root = repo_root()
    if argv == ["--check"]:
        problems = differences(root)
        for line in problems:
            print(f"dvc.yaml deps: {line}", file=sys.stderr)
        if problems:
            print("fix: python -m r1repro.deps --write (or make deps)", file=sys.stderr)
            return 1
        print("dvc.yaml deps: in step with the code")
        return 0
    if argv == ["--write"]:
        changed = write_deps(root)
        print(f"dvc.yaml: deps rewritten for {', '.join(changed)}" if changed else "dvc.yaml: deps unchanged")
        return 0
    if not argv:
        for name, deps in expected_deps(root).items():
            print(f"{name}:\n" + "".join(f"  - {d}\n" for d in deps), end="")
        return 0
    print("usage: python -m r1repro.deps [--check | --write]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
