"""Run the pipeline on a profile in a scratch copy of the checkout, never in the checkout itself.

    python -m r1repro.profile_run smoke                  # what `make repro PROFILE=smoke` runs
    python -m r1repro.profile_run gpu --prepare-only     # make the copy and pick the profile, run nothing

Every stage writes tracked files (results/, committed with `cache: false`, and dvc.lock), and those of the
checkout are the default run's (profile none). A run on another profile in place would overwrite them and
leave `git status` dirty. So such a run happens in `runs/<profile>/` (git-ignored), a copy of the files git
lists: tracked ones and new ones that are not ignored, so uncommitted edits run too, as a user expects.

The copy is its own git repository (one commit): DVC and dvclive find the git repository above them, and
the checkout's, which ignores runs/, would refuse the copy's dvc.yaml and dvc.lock. A second run refreshes
the copy (changed files copied, files gone from the checkout deleted) but keeps what the runs made
(results/, dvc.lock, models/, .cache/), so DVC reruns only what changed and resumes as it does in place.
data/ is copied and verified against data.dvc; models/base is hard-linked (the import_model stage
replaces the folder whole through r1repro.io.staged_dir, and DVC deletes it before that stage reruns,
so no file is ever written through a link). DVC in the copy uses the checkout's cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from r1repro.config import ConfigError, load_params, repo_root

# Where the copies go, one folder per profile; git-ignored and dvc-ignored in the checkout.
RUNS_DIR = "runs"
# What the runs write in the copy: taken from the checkout only when the copy is made (so that DVC can
# skip the stages a profile leaves unchanged, e.g. import_model), kept on every refresh after that.
RUN_OWNED = ("results/", "dvc.lock", "models/", ".cache/")
DATA_DIR = "data"
BASE_MODEL = "models/base"
# The copy's DVC cache setting (git-ignored in .dvc/.gitignore, so never copied from the checkout).
DVC_CACHE = ".dvc/cache"
DVC_LOCAL_CONFIG = ".dvc/config.local"
GIT_IDENTITY = ["-c", "user.name=r1repro profile run", "-c", "user.email=profile-run@localhost"]


class ProfileRunError(ConfigError):
    """A profile run that cannot start; the message names the profile or file and the fix."""


def run_dir(root: Path, profile: str) -> Path:
    """The copy a profile runs in: runs/<profile>/ under the checkout."""
    return root / RUNS_DIR / profile


def check_profile(root: Path, profile: str) -> None:
    """Refuse `none` and unknown or invalid profiles before anything is copied.

    load_params names an unknown profile with the valid ones, and a bad key by its dotted name.
    """
    if profile in ("none", ""):
        raise ProfileRunError("profile none runs in the checkout itself (`make repro`), not in a copy; "
                              "name a profile in profiles/, e.g. smoke")
    load_params(root, profile)


def _git(args: list[str], cwd: Path) -> str:
    """Run git, with an error naming the folder and the command when it fails."""
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    except FileNotFoundError as err:
        raise ProfileRunError("git not found: install git; a profile run copies the files git lists") from err
    except subprocess.CalledProcessError as err:
        raise ProfileRunError(f"{cwd}: `git {' '.join(args)}` failed ({err.stderr.strip()}); a profile "
                              "run needs a git checkout") from err
    return result.stdout


def listed_files(folder: Path) -> set[str]:
    """Files git tracks or would add in `folder` (not ignored), that exist: what a copy holds."""
    names = _git(["ls-files", "-z", "--cached", "--others", "--exclude-standard"], folder).split("\0")
    return {name for name in names if name and not name.startswith(f"{RUNS_DIR}/")  # copies: never nested
            and ((folder / name).is_file() or (folder / name).is_symlink())}


def run_owned(rel: str) -> bool:
    """Whether a path of the copy belongs to its runs (see RUN_OWNED)."""
    return any(rel == owned or rel.startswith(owned) for owned in RUN_OWNED)


def copy_file(src: Path, dest: Path) -> bool:
    """Copy `src` to `dest` unless it already holds the same bytes; return whether it copied.

    The old file is unlinked first, so that a copy never writes through a link.
    """
    if src.is_symlink():
        if dest.is_symlink() and os.readlink(dest) == os.readlink(src):
            return False
    elif dest.is_file() and not dest.is_symlink() and dest.stat().st_size == src.stat().st_size \
            and dest.read_bytes() == src.read_bytes():
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    if src.is_symlink():
        dest.symlink_to(os.readlink(src))
    else:
        shutil.copy2(src, dest)
    return True


def remove_file(copy: Path, rel: str) -> None:
    """Delete a file of the copy and the folders it leaves empty."""
    path = copy / rel
    path.unlink()
    for folder in path.parents:
        if folder == copy or any(folder.iterdir()):
            break
        folder.rmdir()


def sync_files(root: Path, copy: Path, new: bool) -> tuple[int, int]:
    """Bring the copy's files up to date with the checkout; return (copied, deleted).

    A new copy takes every listed file, results and dvc.lock included; a refresh leaves those alone.
    """
    listed = listed_files(root)
    wanted = listed if new else {rel for rel in listed if not run_owned(rel)}
    copied = sum(copy_file(root / rel, copy / rel) for rel in sorted(wanted))
    stale = sorted(rel for rel in listed_files(copy) - listed if not run_owned(rel)) if not new else []
    for rel in stale:
        remove_file(copy, rel)
    return copied, len(stale)


def init_git(root: Path, copy: Path) -> None:
    """Make the copy a git repository of its own, with one commit naming the checkout it came from."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                          text=True).stdout.strip() or "no commit"
    _git(["init", "-q"], copy)
    _git([*GIT_IDENTITY, "commit", "-q", "--allow-empty", "-m",
          f"profile run copy of {root} at {head} (its files are not committed here)"], copy)


def copy_data(root: Path, copy: Path) -> None:
    """Give the copy a data/ that matches data.dvc: kept when it does, else copied from the checkout."""
    from r1repro.data import verify_folder

    dest = copy / DATA_DIR
    try:
        verify_folder(dest, copy)
        return
    except ConfigError:
        pass
    source = root / DATA_DIR
    if not source.is_dir():
        raise ProfileRunError(f"{source}: not found; run `make data` (python -m r1repro.data fetch) first")
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(source.resolve(), dest)
    verify_folder(dest, copy)


def _link_or_copy(src: str, dest: str) -> None:
    """Hard-link a file (no second copy of the weights), or copy it across file systems."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def link_base_model(root: Path, copy: Path) -> None:
    """Give a new copy the checkout's imported base model, so its import_model stage need not rerun.

    An existing copy keeps its own: a profile may import another model.
    """
    source, dest = root / BASE_MODEL, copy / BASE_MODEL
    if dest.exists() or not (source / "config.json").is_file():
        return
    shutil.copytree(source.resolve(), dest, copy_function=_link_or_copy)


def use_checkout_cache(root: Path, copy: Path) -> None:
    """Point DVC in the copy at the checkout's cache (`dvc cache dir --local`, written directly)."""
    path = copy / DVC_LOCAL_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"[cache]\n    dir = {(root / DVC_CACHE).resolve()}\n", encoding="utf-8")


def prepare(root: Path, profile: str) -> Path:
    """Check the profile, then make or refresh its copy; return the copy's folder."""
    check_profile(root, profile)
    copy = run_dir(root, profile)
    new = not (copy / ".git").is_dir()
    if new:
        shutil.rmtree(copy, ignore_errors=True)  # a copy interrupted before its git init
        copy.mkdir(parents=True)
    copied, deleted = sync_files(root, copy, new)
    if new:
        init_git(root, copy)
    copy_data(root, copy)
    link_base_model(root, copy)
    use_checkout_cache(root, copy)
    print(f"{copy.relative_to(root)}: {'made' if new else 'refreshed'} ({copied} files copied, "
          f"{deleted} deleted)")
    return copy


def run_env(copy: Path) -> dict[str, str]:
    """The environment of the steps: the copy's code first, this interpreter's tools (dvc) on PATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def steps(profile: str, prepare_only: bool) -> list[list[str]]:
    """The commands `make repro` runs, for the copy: pick the profile, check, then `dvc repro`."""
    python = [sys.executable, "-m"]
    chosen = [[*python, "r1repro.config", "use", profile]]
    if prepare_only:
        return chosen
    return [*chosen, [*python, "r1repro.config", "check"], [*python, "r1repro.prerequisites"],
            [*python, "dvc", "repro"]]


def run_steps(copy: Path, commands: list[list[str]]) -> int:
    """Run each command in the copy, stopping at the first that fails; return its exit code."""
    env = run_env(copy)
    for command in commands:
        code = subprocess.run(command, cwd=copy, env=env).returncode
        if code:
            print(f"error: `{' '.join(command[1:])}` failed in {copy} (exit {code})", file=sys.stderr)
            return code
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m r1repro.profile_run",
                                     description="Run the pipeline on a profile in runs/PROFILE/.")
    parser.add_argument("profile", help="a file name in profiles/ without .yaml, e.g. smoke")
    parser.add_argument("--prepare-only", action="store_true",
                        help="make or refresh the copy and pick the profile; run no stage")
    args = parser.parse_args(argv)
    try:
        root = repo_root()
        copy = prepare(root, args.profile)
    except (ConfigError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    code = run_steps(copy, steps(args.profile, args.prepare_only))
    where = copy.relative_to(root)
    if code == 0 and args.prepare_only:
        print(f"profile {args.profile}: {where} is ready; run it with `make repro PROFILE={args.profile}`")
    elif code == 0:
        print(f"profile {args.profile}: results in {where / 'results'} (the checkout's results/ stay the "
              f"default run's; `cd {where} && dvc metrics show` lists them)")
    return code


if __name__ == "__main__":
    sys.exit(main())
