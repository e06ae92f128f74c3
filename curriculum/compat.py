"""Is a changed spec safe to resume a run with?

Safe (documented in the README): guard definitions and inline `when` expressions, budgets
(`max_steps`, `min_dwell`) and evaluation settings of phases, checkpoint cadence, progress and
wandb settings, and penalties of phases the run has not reached yet.  Everything else (phase
names, kinds or order, the model, data, runner, seed, presets already in use) would make the
checkpoint mean something else, so it is refused with a readable diff.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from curriculum.errors import RunDirError, SpecError
from curriculum.spec import Spec, load_spec

SAFE = (
    "guards.*",
    "transitions.*.when",
    "transitions.*.description",
    "phases.*.max_steps",
    "phases.*.min_dwell",
    "phases.*.eval.*",
    "phases.*.description",
    "run.checkpoint_every",
    "run.keep_checkpoints",
    "run.progress",
    "run.distributed",
    "run.wandb",
    "run.chunk_steps",
    "run.description",
    "run.default_profile",
    "run.max_steps",
)

#: What a branch (``resume --from-phase P --run-dir NEW``) may change on top of SAFE: the new run
#: starts from the weights taken when P began, so its seed, its name, the transitions and the
#: schedule of P and later phases (``next``, besides their penalties, presets and hyperparameters)
#: are the branch's own.  The model, data, runner and the phases trained before P stay fixed.
BRANCH_SAFE = ("run.seed", "run.name", "transitions", "transitions.*")


def _safe(key: str, patterns: tuple[str, ...] = SAFE) -> bool:
    """Is a changed key covered by SAFE?  A `*` stands for one key segment; a trailing `.*` for
    everything below (so phases.*.max_steps is a phase's budget, not phases.X.train.max_steps)."""
    parts = key.split(".")
    for pat in patterns:
        pp = pat.split(".")
        if pp[-1] == "*":
            head = pp[:-1]
            if len(parts) <= len(head):
                continue
        else:
            head = pp
            if len(parts) != len(head):
                continue
        if all(fnmatch.fnmatchcase(k, p) for k, p in zip(parts, head)):
            return True
    return False


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}.{i}"))
    else:
        out[prefix] = d
    return out


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    a, b = flatten(old), flatten(new)
    keys = sorted(set(a) | set(b))
    missing = object()
    return [(k, a.get(k, missing), b.get(k, missing)) for k in keys if a.get(k, missing) != b.get(k, missing)]


def unsafe_changes(old: Spec, new: Spec, visited: set[str], *, branch: str | None = None) -> list[str]:
    """What a resume (or, with ``branch`` = the branch phase, a branch) may not change.  For a
    branch, ``visited`` is the phases trained before the branch phase."""
    problems = []
    if list(old.phases) != list(new.phases):
        problems.append(f"phases: {', '.join(old.phases)}  ->  {', '.join(new.phases)} (renamed, removed or reordered)")
    for key, a, b in diff(old.raw, new.raw):
        if _safe(key) or (branch and _safe(key, BRANCH_SAFE)):
            continue
        parts = key.split(".")
        if parts[0] == "phases" and len(parts) > 2 and parts[1] not in visited:
            if parts[2] in ("penalties", "preset", "train", "controller") and parts[1] != branch:
                continue  # the run has not reached this phase yet
            if branch and parts[2] == "next":
                continue  # a branch's schedule from its phase on is its own
        shown_a = "(absent)" if not isinstance(a, (int, float, str, bool, list, dict, type(None))) else repr(a)
        shown_b = "(absent)" if not isinstance(b, (int, float, str, bool, list, dict, type(None))) else repr(b)
        problems.append(f"{key}: {shown_a}  ->  {shown_b}")
    return problems


def check_compatible(old: Spec, new_path: str | None, overrides: list[str], meta: dict[str, Any]) -> Spec:
    earlier = list(meta.get("overrides") or [])
    if new_path:
        try:
            new = load_spec(new_path, profile=meta.get("profile"), overrides=earlier + overrides)
        except SpecError as e:
            # The run's own --set overrides are re-applied to the changed spec.  When they no
            # longer fit it (e.g. they name a phase the new spec renamed), show the diff against
            # the changed spec itself, which is what the user needs to see.
            if not earlier:
                raise
            try:
                bare = load_spec(new_path, profile=meta.get("profile"), overrides=overrides)
            except SpecError:
                raise e from None
            _, visited = _visited(old, meta)
            problems = unsafe_changes(old, bare, visited) or []
            problems += [f"the run's earlier --set {', '.join(earlier)} no longer applies: {p}" for p in e.problems]
            raise RunDirError(_incompatible(problems)) from None
    else:
        new = load_spec(old.path, raw=old.raw, overrides=overrides)
        new.profile = old.profile
    _, visited = _visited(old, meta)
    problems = unsafe_changes(old, new, visited)
    if problems:
        raise RunDirError(_incompatible(problems))
    return new


def check_branch(
    old: Spec, new_path: str | None, overrides: list[str], meta: dict[str, Any], before: set[str], phase: str
) -> Spec:
    """The spec a branch from ``phase`` runs under: the run's own with ``--spec``/``--set``
    changes, checked against what the branch checkpoint holds (``before``: the phases trained
    before it; ``phase`` was entered, its penalties set, when the checkpoint was taken)."""
    new = load_spec(new_path, profile=meta.get("profile"), overrides=list(meta.get("overrides") or []) + overrides) \
        if new_path else load_spec(old.path, raw=old.raw, overrides=overrides)
    if not new_path:
        new.profile = old.profile
    problems = unsafe_changes(old, new, before, branch=phase)
    if problems:
        raise RunDirError(
            "the changed spec does not fit the branch checkpoint; these changes would make it mean "
            "something else:\n  " + "\n  ".join(problems) + "\nA branch may change, besides what a "
            "resume may: the seed, the run name, the transitions, the schedule (next) of the branch "
            "phase and later ones, and the penalties, presets and hyperparameters of the phases after "
            "the branch phase; the model, data, runner, the phases trained before the branch point "
            "and the branch phase's penalties (in force when its checkpoint was taken) stay as they were."
        )
    return new


def masked_overrides(new_path: str, overrides: list[str], meta: dict[str, Any]) -> list[str]:
    """Edits in ``new_path`` that the run's earlier ``--set`` overrides still mask.

    The overrides a run was started (or resumed) with are re-applied over a changed spec, so an
    edit of the same key in the file has no effect; each such key is named with the way to
    change it.  Compares the file with the spec source the run last used (spec.source.toml).
    """
    import tomllib

    earlier = list(meta.get("overrides") or [])
    run_dir = meta.get("_run_dir")
    if not earlier or not run_dir:
        return []
    now = {o.split("=", 1)[0].strip() for o in overrides}
    try:
        source = (Path(run_dir) / "spec.source.toml").read_text(encoding="utf-8")
        before = load_spec(new_path, profile=meta.get("profile"), raw=tomllib.loads(source), text=source)
        after = load_spec(new_path, profile=meta.get("profile"))
    except (OSError, ValueError, SpecError):
        return []
    fb, fa = flatten(before.raw), flatten(after.raw)
    out = []
    for o in earlier:
        key = o.split("=", 1)[0].strip()
        if key in now or fa.get(key) == fb.get(key):
            continue
        out.append(
            f"{key}: {new_path} changes it from {fb.get(key)!r} to {fa.get(key)!r}, but the run's earlier "
            f"--set {o} still applies over the file; add --set {key}=VALUE to this resume to change it"
        )
    return out


def _visited(old: Spec, meta: dict[str, Any]) -> tuple[Path | None, set[str]]:
    from curriculum.state import load_state

    if "_run_dir" not in meta:
        return None, set(old.phases)
    run_dir = Path(meta["_run_dir"])
    try:
        return run_dir, {v["phase"] for v in load_state(run_dir / "state.json").visits}
    except (OSError, ValueError):
        return run_dir, set(old.phases)


def _incompatible(problems: list[str]) -> str:
    return (
        "the changed spec is not compatible with the run's checkpoints; these changes would make "
        "them mean something else:\n  " + "\n  ".join(problems) + "\nSafe changes: guard definitions and "
        "thresholds, phase budgets (max_steps, min_dwell), eval settings, checkpoint cadence, and the "
        "penalties, presets and hyperparameters of phases the run has not reached. Start a new run "
        "(or branch with --from-phase) for anything else."
    )
