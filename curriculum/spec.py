"""The curriculum spec: TOML -> validated, resolved objects.

Every problem is reported as one paragraph naming the file, the key path, the line where it can
be found and what was expected, with the closest valid name for a typo.  All problems found are
reported together, so a user fixes a spec in one pass.

Order of resolution: read TOML (tomli) -> apply the profile (deep merge of [profiles.NAME])
-> apply --set overrides -> structural validation (pydantic) -> semantic validation
(references, reachability, guards compile, runner-specific tables).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomli
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from curriculum import limits
from curriculum.errors import SpecError, one_of, suggest, where

END = "end"  # pseudo-phase: the run finishes


class _Strict(BaseModel):
    # strict: TOML is typed, so "50" is not a step count and true is not a penalty (lax
    # pydantic would quietly coerce both); ints are still accepted where floats are expected.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True, allow_inf_nan=False)


class RunSection(_Strict):
    name: str = "run"
    seed: int = Field(0, ge=0, lt=2**63)  # numpy seeding refuses negative seeds
    # run-wide budget: the run ends (reason "run_budget", the phase evaluated as at any end) once
    # the global step reaches it, whatever phase it is in; None: only the phases' budgets
    max_steps: int | None = Field(None, ge=1)
    start: str | None = None
    default_profile: str | None = None
    chunk_steps: int = Field(1, ge=1)
    checkpoint_every: int = Field(0, ge=0)  # 0: only phase boundaries
    keep_checkpoints: int = Field(2, ge=1)  # periodic ones; boundary checkpoints are never pruned
    wandb: Literal["offline", "disabled", "online"] = "offline"
    guard_modules: list[str] = Field(default_factory=list)
    extra_metrics: list[str] = Field(default_factory=list)
    window: int = Field(0, ge=0, le=limits.MAX_WINDOW)  # minimum history kept per metric (guards may need more)
    progress: bool = True
    # Several processes (a TPU pod): "auto" joins when CURRICULUM_NUM_PROCESSES > 1 is set,
    # "jax" always joins via jax.distributed's cluster detection, "single" never joins.
    distributed: Literal["auto", "jax", "single"] = "auto"
    # A step with NaN/inf rewards or trainer numbers is always counted and logged; then "skip"
    # trains on (guard statistics ignore non-finite values), "stop_phase" ends the phase with
    # reason "nonfinite", and "penalty" is "skip" for the engine: the reward function itself
    # (DIPG's scores a scorer failure as format_mismatch_penalty) decides what a bad completion gets.
    on_nonfinite: Literal["skip", "penalty", "stop_phase"] = "skip"
    description: str = ""


class JudgeSection(_Strict):
    # an optional model judge for the built-in dipg reward (rewards/model_judge.py): a Gemma 3
    # checkpoint in a local directory (relative to the spec's folder), never downloaded
    path: str
    use: Literal["eval", "train", "both"] = "eval"  # evaluations, training rewards, or both
    threshold: float = Field(0.5, ge=0.0, le=1.0)  # P(yes) below this: the answer is unsupported
    max_prompt_tokens: int = Field(1024, ge=16)
    batch_size: int = Field(8, ge=1)
    template: Literal["gemma", "chatml", "plain"] | None = None  # default: gemma
    dtype: Literal["float32", "bfloat16"] = "float32"  # the judge's weights (bfloat16: half the memory)


class RewardSection(_Strict):
    # a registered reward (built-in "dipg", the default, or one a guard_modules module registers)
    name: str | None = None
    # or the function itself: "MODULE:FUNCTION" ("rewards/mine.py:score" inside the spec's folder,
    # or "my_pkg.rewards:score"); see curriculum/rewarding.py for how it is called
    function: str | None = None
    keys: list[str] | None = None  # the value keys its presets hold (when not registered with them)
    outcomes: list[str] | None = None  # the outcome metrics it reports (idem)
    top_reward: float | None = None  # default: the reward's max_reward under the values in force
    eval_preset: str | None = None  # default: the phase's own preset
    judge: JudgeSection | None = None  # off by default


class EvalSection(_Strict):
    enabled: bool = True
    num_items: int | None = Field(None, ge=1)
    samples: int = Field(1, ge=1)
    greedy: bool = True
    max_new_tokens: int | None = Field(None, ge=1)
    preset: str | None = None


class PhaseSection(_Strict):
    kind: Literal["sft", "grpo", "eval"]
    max_steps: int | None = Field(None, ge=1)
    next: str | None = None
    min_dwell: int = Field(0, ge=0)
    preset: str | None = None
    penalties: dict[str, float] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    eval: EvalSection = Field(default_factory=EvalSection)
    controller: dict[str, Any] | None = None
    description: str = ""

    @field_validator("penalties")
    @classmethod
    def _finite(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            if not math.isfinite(x):
                raise ValueError(f"penalty {k} must be a finite number, got {x}")
        return v


class TransitionSection(_Strict):
    from_: str = Field(alias="from")
    to: str
    guard: str | None = None
    when: str | None = None
    description: str = ""
    # restore the policy from the newest checkpoint taken before the estimated onset (the
    # collapse detector's change point; the firing step for other guards) when taken
    rewind: bool = False


class SpecModel(_Strict):
    run: RunSection = Field(default_factory=RunSection)
    reward: RewardSection = Field(default_factory=RewardSection)
    runner: dict[str, Any] = Field(default_factory=lambda: {"kind": "simulated"})
    model: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = Field(default_factory=dict)
    phases: dict[str, PhaseSection]
    transitions: list[TransitionSection] = Field(default_factory=list)
    guards: dict[str, dict[str, Any]] = Field(default_factory=dict)


@dataclass
class Transition:
    source: str
    dest: str
    guard: str  # guard name (inline `when` guards are named "SOURCE->DEST")
    order: int
    rewind: bool = False


@dataclass
class Spec:
    """A validated, resolved spec.  `raw` is the resolved dict (profile and --set applied)."""

    path: Path | None
    raw: dict[str, Any]
    model: SpecModel
    profile: str | None
    presets: dict[str, dict[str, float]]  # fully resolved (base applied), declared + built-in
    transitions: list[Transition]
    guards: dict[str, Any]  # name -> compiled curriculum.guards.Guard
    metric_names: frozenset[str]
    function_names: frozenset[str]
    overrides: list[str] = field(default_factory=list)
    reward: Any = None  # curriculum.rewarding.RewardDef: the reward this spec trains with

    @property
    def phases(self) -> dict[str, PhaseSection]:
        return self.model.phases

    @property
    def start(self) -> str:
        return self.model.run.start or next(iter(self.model.phases))

    @property
    def runner_kind(self) -> str:
        return str(self.model.runner.get("kind", "simulated"))

    def next_phase(self, phase: str) -> str:
        """Where a phase goes when its step budget runs out."""
        p = self.phases[phase]
        if p.next:
            return p.next
        names = list(self.phases)
        i = names.index(phase)
        return names[i + 1] if i + 1 < len(names) else END

    def transitions_from(self, phase: str) -> list[Transition]:
        return [t for t in self.transitions if t.source == phase]

    def penalties_for(self, phase: str) -> tuple[str | None, dict[str, float]]:
        """(preset name, values in force) for a phase: the preset plus inline overrides."""
        p = self.phases[phase]
        if p.preset is None:
            return None, dict(p.penalties)
        vals = dict(self.presets[p.preset])
        vals.update(p.penalties)
        return p.preset, vals

    def window_capacity(self) -> int:
        cap = max(1, self.model.run.window)
        for g in self.guards.values():
            for n in g.windows_needed().values():
                cap = max(cap, int(n))
        return cap

    def history_capacities(self) -> tuple[int, dict[str, int]]:
        """(values kept per metric by default, metric -> more kept for the guards that read it)."""
        return history_capacities(self)

    def digest(self) -> str:
        blob = json.dumps(self.raw, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def history_capacities(spec: Spec) -> tuple[int, dict[str, int]]:
    """How many values of each metric the engine keeps (in memory and in every checkpoint).

    Each metric keeps the longest window a guard or a penalty controller reads of it, the
    others ``run.window`` (at least 1).  Where the windows read cannot be known (a custom guard
    without a ``windows`` table, a custom function inside an expression), every metric keeps
    the largest window, as before per-metric capacities existed; ``ema(m, alpha)`` and
    ``count(m)`` without a window read all that is kept, so ``m`` keeps the largest window.
    """
    from curriculum import expr as ex

    default = max(1, spec.model.run.window)
    need: dict[str, int] = {}
    unknown = False
    whole: set[str] = set()
    for g in spec.guards.values():
        for m, n in g.windows_needed().items():
            need[m] = max(need.get(m, 0), int(n))
        if g.kind == "custom" and not g.windows:
            unknown = True
        for node in (g.when, g.until):
            for n in ex.walk(node) if node is not None else ():
                if not isinstance(n, ex.Call):
                    continue
                if n.func not in ex.BUILTIN_FUNCTIONS:
                    unknown = True
                elif n.func in ("ema", "count") and n.args and isinstance(n.args[0], ex.Name):
                    if len(n.args) == (2 if n.func == "ema" else 1):
                        whole.add(n.args[0].name)
    for ph in spec.phases.values():
        c = ph.controller
        if c and isinstance(c.get("metric"), str):
            need[c["metric"]] = max(need.get(c["metric"], 0), int(c.get("window", 1)))
    top = max([default, *need.values()])
    if unknown:
        return top, {}
    caps = {m: n for m, n in need.items() if n > default}
    caps.update({m: top for m in whole})
    return default, caps


# --------------------------------------------------------------------------- loading


def read_toml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"{path}: spec file not found"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError([f"{path}: cannot read the spec file ({e})"]) from None
    try:
        return tomli.loads(text), text
    except (tomli.TOMLDecodeError, RecursionError) as e:  # tomli raises RecursionError past 400 levels
        raise SpecError([f"{path}: not valid TOML: {e}"]) from None


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """'phases.soft.max_steps=50' -> (['phases','soft','max_steps'], 50).

    The value is read as a TOML value (numbers, booleans, strings, arrays, inline tables); a
    bare word that is not valid TOML is taken as a string.  Never evaluated as code.
    """
    if "=" not in item:
        raise SpecError([f"--set {item!r}: expected KEY=VALUE, e.g. --set phases.soft.max_steps=50"])
    key, _, value = item.partition("=")
    key = key.strip()
    parts = [p.strip() for p in key.split(".")]
    if not key or any(not p for p in parts):
        raise SpecError([f"--set {item!r}: the key must be a dotted path such as phases.soft.max_steps"])
    try:
        parsed = tomli.loads(f"v = {value.strip()}")["v"]
    except (tomli.TOMLDecodeError, RecursionError):
        parsed = value.strip()
    return parts, parsed


def _apply_override(raw: dict[str, Any], parts: list[str], value: Any, item: str) -> None:
    node = raw
    for i, p in enumerate(parts[:-1]):
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            path = ".".join(parts[: i + 1])
            raise SpecError([f"--set {item!r}: {path} is a value, not a table"])
        node = nxt
    node[parts[-1]] = value


def load_spec(
    path: str | Path | None,
    *,
    profile: str | None = None,
    overrides: list[str] | None = None,
    raw: dict[str, Any] | None = None,
    text: str | None = None,
) -> Spec:
    """Load, resolve and validate a spec.  Raises SpecError listing every problem found."""
    p = Path(path) if path is not None else None
    if raw is None:
        assert p is not None
        raw, text = read_toml(p)
    fname = str(p) if p else "<spec>"
    raw = copy.deepcopy(raw)

    profiles = raw.pop("profiles", {}) or {}
    if not isinstance(profiles, dict):
        raise SpecError([f"{where(fname, text, ('profiles',))}: expected a table of profiles"])
    run_tbl = raw.get("run") if isinstance(raw.get("run"), dict) else {}
    chosen = profile if profile is not None else run_tbl.get("default_profile")
    if chosen is not None:
        if not isinstance(chosen, str):
            raise SpecError([f"{where(fname, text, ('run', 'default_profile'))}: expected a profile name (a string), got {chosen!r}"])
        if chosen not in profiles:
            key = ("run", "default_profile") if profile is None else ("profiles",)
            raise SpecError(
                [
                    f"{where(fname, text, key)}: unknown profile '{chosen}'; expected "
                    f"{one_of(profiles)}{suggest(chosen, profiles)}"
                ]
            )
        prof = profiles[chosen]
        if not isinstance(prof, dict):
            raise SpecError([f"{where(fname, text, ('profiles', chosen))}: expected a table"])
        raw = deep_merge(raw, prof)
        # The profile is applied: the resolved spec (stored in the run directory and loaded again
        # on resume, without its profiles) must not ask for it a second time.
        if isinstance(raw.get("run"), dict):
            raw["run"].pop("default_profile", None)

    for item in overrides or []:
        parts, value = parse_override(item)
        _apply_override(raw, parts, value, item)

    return _validate(raw, p, fname, text, chosen, list(overrides or []))


def _pydantic_problems(err: ValidationError, fname: str, text: str | None) -> list[str]:
    out = []
    fields_by_loc = {
        (): SpecModel,
        ("run",): RunSection,
        ("reward",): RewardSection,
        ("reward", "judge"): JudgeSection,
    }
    for e in err.errors():
        loc = tuple(e["loc"])
        shown = tuple("from" if x == "from_" else x for x in loc)
        if e["type"] == "extra_forbidden":
            parent = loc[:-1]
            model = fields_by_loc.get(parent)
            if model is None and len(parent) == 2 and parent[0] == "phases":
                model = PhaseSection
            if model is None and len(parent) == 3 and parent[0] == "phases" and parent[2] == "eval":
                model = EvalSection
            if model is None and len(parent) == 2 and parent[0] == "transitions":
                model = TransitionSection
            names = [f.alias or n for n, f in model.model_fields.items()] if model else []
            out.append(
                f"{where(fname, text, shown)}: unknown key '{loc[-1]}'; expected "
                f"{one_of(names)}{suggest(str(loc[-1]), names)}"
            )
        elif e["type"] == "missing":
            out.append(f"{where(fname, text, shown)}: required key is missing")
        else:
            got = e.get("input")
            got_s = repr(got) if not isinstance(got, dict) else "a table"
            out.append(f"{where(fname, text, shown)}: {e['msg']} (got {got_s})")
    return out


def _validate(
    raw: dict[str, Any],
    p: Path | None,
    fname: str,
    text: str | None,
    profile: str | None,
    overrides: list[str],
) -> Spec:
    # Imports here keep `curriculum.spec` importable without the guard layer's cost at import.
    from curriculum import modcheck, registry
    from curriculum.guards import GuardConfigError, compile_guard
    import runners

    def W(*key: Any) -> str:
        return where(fname, text, tuple(key))

    if "phases" not in raw or not raw.get("phases"):
        raise SpecError([f"{W('phases')}: no phases declared; expected at least one [phases.NAME] table"])
    huge = _beyond_range(raw, fname, text)
    if huge:
        raise SpecError(huge)
    try:
        model = SpecModel.model_validate(raw)
    except ValidationError as e:
        raise SpecError(_pydantic_problems(e, fname, text)) from None

    problems: list[str] = _name_and_size_problems(model, fname, text)
    if problems:  # a bad name or a table past its limit: checking on would only repeat it
        raise SpecError(problems)
    phases = model.phases
    names = list(phases)
    targets = names + [END]

    # run.start
    if model.run.start is not None and model.run.start not in phases:
        problems.append(
            f"{W('run', 'start')}: unknown phase '{model.run.start}'; expected "
            f"{one_of(names)}{suggest(model.run.start, names)}"
        )

    # runner kind + runner tables
    kind = str(model.runner.get("kind", "simulated"))
    hooks = None
    if kind not in runners.RUNNER_KINDS:
        problems.append(
            f"{W('runner', 'kind')}: unknown runner '{kind}'; expected "
            f"{one_of(runners.RUNNER_KINDS)}{suggest(kind, runners.RUNNER_KINDS)}"
        )
    else:
        hooks = runners.get_hooks(kind)
        model.data = copy.deepcopy(model.data)  # the stored spec (raw) keeps the paths as written
        _absolute_data_paths(model.data, p.parent if p else Path.cwd())
        for key, msg in hooks.validate_config(model.model, model.data, model.runner):
            problems.append(f"{W(*key.split('.'))}: {msg}")

    base_dir = (p.parent if p else Path.cwd()).resolve()  # the import check runs in base_dir: never relative to it
    # user code: checked where it lies and imported in a child process with a time limit first
    unsafe = modcheck.check(list(model.run.guard_modules), base_dir)
    if unsafe:  # the guards would only repeat it as unknown functions
        raise SpecError(problems + [f"{W('run', 'guard_modules')}: {why}" for why in unsafe])
    try:
        registry.import_guard_modules(list(model.run.guard_modules), base_dir)
    except Exception as e:  # noqa: BLE001 - reported as a spec problem
        problems.append(f"{W('run', 'guard_modules')}: {e}")

    # the reward: registered by name, or a function named by module (checked like guard modules)
    reward_def = _resolve_reward(model, base_dir, W, problems)
    if reward_def is None:  # every preset and penalty would only repeat it
        raise SpecError(problems)
    REWARD_KEYS = reward_def.keys
    PRESETS = reward_def.presets
    if hooks is not None and hasattr(hooks, "validate_reward"):
        for key, msg in hooks.validate_reward(reward_def):
            problems.append(f"{W(*key.split('.'))}: {msg}")

    # presets: resolve `base`, check keys
    resolved: dict[str, dict[str, float]] = {k: dict(v) for k, v in PRESETS.items()}
    declared = model.presets

    def resolve(name: str, stack: tuple[str, ...]) -> dict[str, float] | None:
        if name in stack:
            problems.append(f"{W('presets', name, 'base')}: presets inherit in a cycle: {' -> '.join(stack + (name,))}")
            return None
        if name not in declared:
            return resolved.get(name)
        tbl = dict(declared[name])
        base = tbl.pop("base", None)
        vals: dict[str, float] = {}
        if base is not None:
            if not isinstance(base, str) or (base not in declared and base not in PRESETS):
                choices = sorted(set(declared) | set(PRESETS))
                problems.append(
                    f"{W('presets', name, 'base')}: unknown preset {base!r}; expected "
                    f"{one_of(choices)}{suggest(str(base), choices)}"
                )
                return None
            b = resolve(base, stack + (name,))
            if b is None:
                return None
            vals.update(b)
        ok = True
        for k, v in tbl.items():
            if k not in REWARD_KEYS:
                problems.append(
                    f"{W('presets', name, k)}: unknown reward key '{k}'; expected "
                    f"{one_of(REWARD_KEYS)}{suggest(k, REWARD_KEYS)}"
                )
                ok = False
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                problems.append(f"{W('presets', name, k)}: expected a finite number, got {v!r}")
                ok = False
            else:
                vals[k] = float(v)
        missing = [k for k in REWARD_KEYS if k not in vals]
        if missing and ok:
            problems.append(
                f"{W('presets', name)}: preset '{name}' is missing "
                f"{', '.join(missing)}; declare every key of reward '{reward_def.name}'"
                + (f" or set base = \"{next(iter(PRESETS))}\" to inherit" if PRESETS else "")
            )
            ok = False
        if ok:
            resolved[name] = vals
            return vals
        return None

    for name in declared:
        resolve(name, ())
    preset_names = sorted(set(declared) | set(PRESETS))

    # phases
    for name, ph in phases.items():
        if ph.next is not None and ph.next not in targets:
            problems.append(
                f"{W('phases', name, 'next')}: unknown phase '{ph.next}'; expected "
                f"{one_of(targets)}{suggest(ph.next, targets)}"
            )
        if ph.preset is not None and ph.preset not in preset_names:
            problems.append(
                f"{W('phases', name, 'preset')}: unknown preset '{ph.preset}'; expected "
                f"{one_of(preset_names)}{suggest(ph.preset, preset_names)}"
            )
        if ph.kind == "grpo" and ph.preset is None and REWARD_KEYS:
            problems.append(
                f"{W('phases', name)}: a grpo phase needs preset = NAME; expected {one_of(preset_names)}"
            )
        for k in ph.penalties:
            if k not in REWARD_KEYS:
                problems.append(
                    f"{W('phases', name, 'penalties', k)}: unknown reward key '{k}'; expected "
                    f"{one_of(REWARD_KEYS)}{suggest(k, REWARD_KEYS)}"
                )
        if ph.eval.preset is not None and ph.eval.preset not in preset_names:
            problems.append(
                f"{W('phases', name, 'eval', 'preset')}: unknown preset '{ph.eval.preset}'; expected "
                f"{one_of(preset_names)}{suggest(ph.eval.preset, preset_names)}"
            )
        if (
            ph.kind == "sft"
            and ph.eval.enabled
            and ph.eval.preset is None
            and model.reward.eval_preset is None
            and REWARD_KEYS
            and not PRESETS
        ):
            problems.append(
                f"{W('phases', name, 'eval')}: an sft phase has no preset, and reward '{reward_def.name}' has no "
                f"built-in one to score its evaluation with; set [reward] eval_preset = NAME or eval.preset "
                f"(expected {one_of(preset_names)}), or eval = {{ enabled = false }}"
            )
        if ph.kind == "eval" and ph.max_steps is not None:
            problems.append(f"{W('phases', name, 'max_steps')}: an eval phase trains no steps; remove max_steps")
        if hooks is not None:
            for key, msg in hooks.validate_phase(ph.kind, ph.train):
                sub = key.split(".")
                if sub and sub[0] == "train":
                    sub = sub[1:]
                problems.append(f"{W('phases', name, 'train', *sub)}: {msg}")
            if hasattr(hooks, "validate_phase_data"):
                for key, msg in hooks.validate_phase_data(ph.kind, ph.train, model.data):
                    problems.append(f"{W('phases', name, *key.split('.'))}: {msg}")
    if model.reward.eval_preset is not None and model.reward.eval_preset not in preset_names:
        problems.append(
            f"{W('reward', 'eval_preset')}: unknown preset '{model.reward.eval_preset}'; expected "
            f"{one_of(preset_names)}{suggest(model.reward.eval_preset, preset_names)}"
        )

    # custom guard modules (done first: they may register the reward), then metric and function names
    metric_names = set(model.run.extra_metrics) | set(reward_def.outcomes)
    if hooks is not None:
        metric_names |= set(getattr(hooks, "METRIC_NAMES", None) or runners.ALL_METRICS)
    functions = frozenset(registry.guard_function_names())

    guards: dict[str, Any] = {}
    for gname, tbl in model.guards.items():
        if not isinstance(tbl, dict):
            problems.append(f"{W('guards', gname)}: expected a table")
            continue
        gtype = tbl.get("type", "expr")
        if not isinstance(gtype, str):
            problems.append(
                f"{W('guards', gname, 'type')}: expected a guard type name (a string such as \"collapse\"), got {gtype!r}"
            )
            continue
        try:
            guards[gname] = compile_guard(gname, tbl, metric_names, functions)
        except GuardConfigError as e:
            problems.append(f"{W('guards', gname, *(e.key.split('.') if e.key else []))}: {e.message}")
            continue
        too_big = _guard_window_problems(gname, guards[gname], W)
        if too_big:
            problems.extend(too_big)
            continue
        for ref in sorted(guards[gname].phases_referenced() - set(names)):
            key = "baseline_phase" if tbl.get("type") == "collapse" else ("when" if "when" in tbl else "until")
            problems.append(
                f"{W('guards', gname, key)}: unknown phase '{ref}'; expected "
                f"{one_of(names)}{suggest(ref, names)}"
            )

    transitions: list[Transition] = []
    for i, t in enumerate(model.transitions):
        for side, val in (("from", t.from_), ("to", t.to)):
            if val not in names:
                problems.append(
                    f"{W('transitions', i, side)} (transition #{i + 1}): unknown phase '{val}'; expected "
                    f"{one_of(names)}{suggest(val, names)}"
                )
        if (t.guard is None) == (t.when is None):
            problems.append(
                f"{W('transitions', i)} (transition #{i + 1}, {t.from_} -> {t.to}): give exactly one of "
                "guard = NAME (a [guards.NAME] table) or when = EXPRESSION"
            )
            continue
        if t.guard is not None:
            if t.guard not in model.guards:
                problems.append(
                    f"{W('transitions', i, 'guard')} (transition #{i + 1}): unknown guard '{t.guard}'; "
                    f"expected {one_of(model.guards)}{suggest(t.guard, model.guards)}"
                )
                continue
            gname = t.guard
        else:
            gname = f"{t.from_}->{t.to}"
            try:
                guards[gname] = compile_guard(gname, {"when": t.when}, metric_names, functions)
            except GuardConfigError as e:
                problems.append(f"{W('transitions', i, 'when')} (transition #{i + 1}): {e.message}")
                continue
            bad_refs = sorted(guards[gname].phases_referenced() - set(names))
            for ref in bad_refs:
                problems.append(
                    f"{W('transitions', i, 'when')} (transition #{i + 1}): unknown phase '{ref}'; expected "
                    f"{one_of(names)}{suggest(ref, names)}"
                )
            if bad_refs:
                continue
        transitions.append(Transition(t.from_, t.to, gname, i, rewind=t.rewind))

    # controllers
    for name, ph in phases.items():
        if ph.controller is not None:
            for key, msg in _check_controller(ph.controller, metric_names):
                problems.append(f"{W('phases', name, 'controller', *key)}: {msg}")
            if ph.kind != "grpo":
                problems.append(f"{W('phases', name, 'controller')}: a penalty controller needs a grpo phase")

    # graph: reachability and a way out of every phase
    if not problems:
        start = model.run.start or names[0]
        succ: dict[str, set[str]] = {n: set() for n in names}
        for n, ph in phases.items():
            nxt = ph.next or (names[names.index(n) + 1] if names.index(n) + 1 < len(names) else END)
            if ph.max_steps is not None or ph.kind == "eval":
                succ[n].add(nxt)
        for t in transitions:
            succ[t.source].add(t.dest)
        seen = {start}
        todo = deque([start])
        while todo:
            cur = todo.popleft()
            for nx in succ.get(cur, ()):
                if nx != END and nx not in seen:
                    seen.add(nx)
                    todo.append(nx)
        for n in names:
            if n not in seen:
                problems.append(
                    f"{W('phases', n)}: phase '{n}' is unreachable from the start phase '{start}'; "
                    "add a transition into it or a `next` that leads to it"
                )
            if not succ[n]:
                problems.append(
                    f"{W('phases', n)}: phase '{n}' has no way out: it has no max_steps and no "
                    "transition leaves it; give it max_steps or a [[transitions]] entry from it"
                )

    if problems:
        raise SpecError(problems)

    return Spec(
        path=p,
        raw=raw,
        model=model,
        profile=profile,
        presets=resolved,
        transitions=transitions,
        guards=guards,
        metric_names=frozenset(metric_names),
        function_names=functions,
        overrides=overrides,
        reward=reward_def,
    )


def _absolute_data_paths(data: dict[str, Any], base_dir: Path) -> None:
    """A jsonl dataset's paths are relative to the spec's folder: made absolute in the resolved
    model (the stored spec keeps them as written), so a runner finds them from any directory."""
    if data.get("source") != "jsonl":
        return

    def fix(tbl: Any) -> None:
        if not isinstance(tbl, dict):
            return
        for k in ("path", "eval_path"):
            v = tbl.get(k)
            if isinstance(v, str) and v and "\x00" not in v and not Path(v).expanduser().is_absolute():
                tbl[k] = str((base_dir / v).resolve())

    fix(data)
    sets = data.get("sets")
    if isinstance(sets, dict):
        for t in sets.values():
            fix(t)


def _resolve_reward(model: SpecModel, base_dir: Path, W: Any, problems: list[str]) -> Any:
    """The spec's reward (a curriculum.rewarding.RewardDef), or None after adding the problem.

    A ``function`` in a module file is checked like a guard module (inside the spec's folder,
    imported in a child process with a time limit first); the resolved spec then names it by
    absolute path, so a runner finds it whatever its working directory.
    """
    from curriculum import modcheck, rewarding

    tbl = model.reward.model_dump()
    if tbl.get("judge") is not None:
        from rewards.model_judge import problem_with_dir

        jpath = (base_dir / Path(tbl["judge"]["path"]).expanduser()).resolve()
        why = problem_with_dir(jpath)
        if why:
            problems.append(f"{W('reward', 'judge', 'path')}: {why}")
            return None
        tbl["judge"]["path"] = str(jpath)
        model.reward.judge.path = str(jpath)  # type: ignore[union-attr]  # (a runner finds it from any folder)
    ref = tbl.get("function")
    if ref is not None:
        try:
            mod, attr = rewarding.split_function_ref(ref)
        except ValueError as e:
            problems.append(f"{W('reward', 'function')}: {e}")
            return None
        unsafe = modcheck.check([mod], base_dir)
        if unsafe:
            problems.extend(f"{W('reward', 'function')}: {why.replace('guard module', 'reward module')}" for why in unsafe)
            return None
    try:
        d = rewarding.resolve(tbl, base_dir)
    except rewarding.RewardSpecError as e:
        problems.append(f"{W('reward', e.key)}: {e.message}")
        return None
    if ref is not None and modcheck._is_path(mod):
        model.reward.function = f"{(base_dir / mod).resolve()}:{attr}"
    return d


_INT64 = 2**63


def _beyond_range(raw: dict[str, Any], fname: str, text: str | None) -> list[str]:
    """Integers outside TOML's 64-bit range, anywhere in the spec (a 400-digit number would
    otherwise reach float() deep inside a guard or a controller and overflow there)."""
    out: list[str] = []
    todo: list[tuple[tuple[Any, ...], Any]] = [((), raw)]
    while todo and len(out) < 20:
        key, v = todo.pop()
        if isinstance(v, dict):
            todo.extend((key + (k,), x) for k, x in v.items())
        elif isinstance(v, list):
            todo.extend((key + (i,), x) for i, x in enumerate(v))
        elif isinstance(v, int) and not isinstance(v, bool) and not -_INT64 <= v < _INT64:
            digits = len(str(abs(v)))
            out.append(
                f"{where(fname, text, key)}: a {digits}-digit integer is beyond the 64-bit range "
                f"(TOML integers lie in -2^63 .. 2^63-1 and floats below about 1.8e308)"
            )
    return sorted(out)


def _name_and_size_problems(model: SpecModel, fname: str, text: str | None) -> list[str]:
    """Names are data (they become file names): run, phase, guard and preset names follow
    limits.NAME_PATTERN; the number of phases, guards, transitions and modules is bounded."""
    out: list[str] = []

    def W(*key: Any) -> str:
        return where(fname, text, tuple(key))

    why = limits.name_problem(model.run.name)
    if why:
        out.append(f"{W('run', 'name')}: {why}")
    for section, table in (("phases", model.phases), ("guards", model.guards), ("presets", model.presets)):
        for name in table:
            why = limits.name_problem(name)
            if why:
                out.append(f"{W(section, name)}: {why}")
    for key, n, cap in (
        (("phases",), len(model.phases), limits.MAX_PHASES),
        (("guards",), len(model.guards), limits.MAX_GUARDS),
        (("transitions",), len(model.transitions), limits.MAX_TRANSITIONS),
        (("run", "guard_modules"), len(model.run.guard_modules), limits.MAX_GUARD_MODULES),
    ):
        if n > cap:
            out.append(f"{W(*key)}: {n} entries, at most {cap} are accepted")
    return out


def _guard_window_problems(gname: str, guard: Any, W: Any) -> list[str]:
    """Every window a guard keeps is at most limits.MAX_WINDOW steps (the history allocates it)."""
    out: list[str] = []
    cfg = guard.collapse
    if cfg is not None:
        for key in ("baseline_window", "warmup"):
            n = int(getattr(cfg, key))
            if n > limits.MAX_WINDOW:
                out.append(f"{W('guards', gname, key)}: {n} steps is too large; at most {limits.MAX_WINDOW}")
    for metric, n in sorted(guard.windows.items()):
        if n > limits.MAX_WINDOW:
            out.append(
                f"{W('guards', gname, 'windows', metric)}: {n} steps is too large; at most {limits.MAX_WINDOW}"
            )
    return out


def _check_controller(tbl: dict[str, Any], metrics: set[str]) -> list[tuple[tuple[str, ...], str]]:
    """A phase's `controller` table: a PID-Lagrangian controller on the penalty scale."""
    from curriculum.controllers import ControllerConfigError

    from curriculum.controllers import CONTROLLER_KINDS

    kind = tbl.get("type", "pid")
    if not isinstance(kind, str) or kind not in CONTROLLER_KINDS:
        return [(("type",), f"unknown controller type {kind!r}; expected {one_of(CONTROLLER_KINDS)}{suggest(str(kind), CONTROLLER_KINDS) if isinstance(kind, str) else ''}")]
    m = tbl.get("metric")
    if not isinstance(m, str):
        return [(("metric",), "expected the name of the metric to hold at `target`, e.g. \"hallucination_rate\"")]
    if m not in metrics:
        return [(("metric",), f"unknown metric '{m}'; expected {one_of(metrics)}{suggest(m, metrics)}")]
    w = tbl.get("window", 1)
    if isinstance(w, bool) or not isinstance(w, int) or w < 1:
        return [(("window",), f"expected a positive integer number of steps, got {w!r}")]
    if w > limits.MAX_WINDOW:
        return [(("window",), f"{w} steps is too large; at most {limits.MAX_WINDOW}")]
    try:
        pid_config_from_table(tbl)
    except ControllerConfigError as e:
        return [((e.key,), e.message)]
    return []


def pid_config_from_table(tbl: dict[str, Any]):
    """The config of a phase's controller table, by its kind (type/metric/window are the core's keys)."""
    from curriculum.controllers import CONTROLLER_KINDS

    return CONTROLLER_KINDS[tbl.get("type", "pid")].config(tbl)
