"""Rewards as plug-ins: what a reward declares, how a spec names one, how a runner calls it.

A reward is a plain Python function the user ships next to the spec (or in an installed
package)::

    from curriculum.registry import register_reward

    @register_reward(keys=["correct", "format", "length_penalty"], outcomes=["correct_rate"])
    def arith(prompts, completions, values, answer, **columns):
        rewards, correct = [], []
        for text, want in zip(completions, answer):
            ok = text.strip() == str(want)
            correct.append(ok)
            rewards.append(values["correct"] * ok + values["length_penalty"] * len(text) / 100)
        return rewards, {"correct_rate": correct}

It is called once per batch as ``fn(prompts=..., completions=..., values=..., **columns)``:
``values`` are the reward values in force at that call (the phase's preset, its inline
``penalties``, scaled by a penalty controller: they change live), ``columns`` the dataset
columns of each completion (one entry per completion, generations group-major).  It returns
one float per completion, or ``(rewards, outcomes)`` where ``outcomes`` maps an outcome metric
name to one value per completion (a bool or a number; None or NaN leaves that completion out).
Each outcome's mean over the batch becomes a per-step metric guards can read, and the
evaluation reports it with a 95 % interval.

A spec names the reward in ``[reward]``: ``name = "NAME"`` (registered with
``@register_reward``: the built-in ``dipg``, or one registered by a module in
``run.guard_modules``) or ``function = "MODULE:ATTR"`` (``arith/reward.py:score`` relative to
the spec's folder, or ``my_pkg.rewards:score``), with ``keys = [...]`` and ``outcomes = [...]``
when the function is not registered with them.

This module never imports jax.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

#: per-step metric names a reward's outcome may not take (the runner's own statistics)
_RESERVED_PREFIXES = ("reward_", "groups_")


@dataclass(frozen=True)
class RewardDef:
    """A reward: the function, the value keys it takes, the outcome metrics it reports.

    ``max_reward(values, **columns) -> float | None``: the largest reward it can pay under
    ``values`` (``columns``: one item's columns, or none for a bound over every item); used for
    ``top_reward_rate`` and the collapse detector's group outcomes.  ``presets``: built-in
    presets (name -> values) specs may use by name.  ``evaluate(texts, columns, values) ->
    {metric: rewards.Metric}``: an optional richer evaluation than the generic one.
    """

    name: str
    fn: Callable[..., Any]
    keys: tuple[str, ...]
    outcomes: tuple[str, ...] = ()
    max_reward: Callable[..., float | None] | None = None
    presets: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    evaluate: Callable[..., dict[str, Any]] | None = None
    source: str = ""

    def top(self, values: Mapping[str, float], columns: Mapping[str, Any] | None = None) -> float | None:
        """The maximum reward under ``values`` (for one item's columns), or None if undeclared."""
        if self.max_reward is None:
            return None
        v = self.max_reward(dict(values), **dict(columns or {}))
        if v is None:
            return None
        v = float(v)
        return v if math.isfinite(v) else None


class RewardSpecError(ValueError):
    """A problem with a spec's [reward] table: ``key`` is the key inside [reward]."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"reward.{key}: {message}")


def outcome_name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not name.isidentifier():
        return f"outcome metric names are identifiers (letters, digits, _), got {name!r}"
    if name.startswith(_RESERVED_PREFIXES) or name in ("loss", "kl", "grad_norm", "learning_rate"):
        return f"'{name}' is a metric the runner reports itself; give the outcome another name"
    return None


def split_function_ref(ref: str) -> tuple[str, str]:
    """'arith/reward.py:score' -> ('arith/reward.py', 'score'); ValueError when malformed."""
    if not isinstance(ref, str) or ref.count(":") != 1:
        raise ValueError(f"expected MODULE:FUNCTION (e.g. \"rewards/mine.py:score\" or \"my_pkg.rewards:score\"), got {ref!r}")
    mod, _, attr = ref.partition(":")
    mod, attr = mod.strip(), attr.strip()
    if not mod or not attr.isidentifier():
        raise ValueError(f"expected MODULE:FUNCTION with a function name after ':', got {ref!r}")
    return mod, attr


def resolve(table: Mapping[str, Any], base_dir: Path) -> RewardDef:
    """The RewardDef a ``[reward]`` table names (its modules must be importable: the spec checks
    them in a child process first).  Raises :class:`RewardSpecError`."""
    from curriculum import registry

    name, ref = table.get("name"), table.get("function")
    if table.get("judge") is not None and (ref is not None or (name is not None and name != "dipg")):
        raise RewardSpecError("judge", "a model judge is an option of the built-in dipg reward (it reads DIPG answers "
                              f"and contexts), not of reward '{ref if ref is not None else name}'")
    if ref is not None:
        if name is not None:
            raise RewardSpecError("function", "give either name (a registered reward) or function, not both")
        try:
            mod_entry, attr = split_function_ref(ref)
        except ValueError as e:
            raise RewardSpecError("function", str(e)) from None
        try:
            (mod_name,) = registry.import_guard_modules([mod_entry], Path(base_dir))
        except registry.GuardImportError as e:
            raise RewardSpecError("function", str(e).replace("guard module", "reward module")) from None
        import sys

        fn = getattr(sys.modules[mod_name], attr, None)
        if fn is None or not callable(fn):
            raise RewardSpecError("function", f"module '{mod_entry}' has no function '{attr}'")
        base = registry.reward_for_function(fn)
        if base is None:
            base = RewardDef(name=attr, fn=fn, keys=(), source=ref)
        else:
            base = RewardDef(**{**base.__dict__, "source": ref})
    else:
        rname = name if name is not None else "dipg"
        try:
            base = registry.get_reward(rname)
        except KeyError as e:
            raise RewardSpecError("name", str(e.args[0])) from None
    keys, outcomes = table.get("keys"), table.get("outcomes")
    upd: dict[str, Any] = {}
    if table.get("judge") is not None:
        from rewards.builtin import judged

        fn, evaluate = judged(dict(table["judge"]))
        upd.update(fn=fn, evaluate=evaluate, source="dipg + model judge")
    if keys is not None:
        if not isinstance(keys, list):
            raise RewardSpecError("keys", f"expected a list of key names, got {keys!r}")
        if base.keys and tuple(keys) != base.keys:
            raise RewardSpecError(
                "keys", f"reward '{base.name}' is registered with keys {', '.join(base.keys)}; remove keys or list exactly those"
            )
        upd["keys"] = tuple(keys)
    if outcomes is not None:
        if not isinstance(outcomes, list):
            raise RewardSpecError("outcomes", f"expected a list of metric names, got {outcomes!r}")
        upd["outcomes"] = tuple(outcomes)
    if upd:
        base = RewardDef(**{**base.__dict__, **upd})
    for k in base.keys:
        if not isinstance(k, str) or not k.isidentifier():
            raise RewardSpecError("keys", f"reward value keys are identifiers, got {k!r}")
    if len(set(base.keys)) != len(base.keys):
        raise RewardSpecError("keys", "a key is listed twice")
    for o in base.outcomes:
        why = outcome_name_problem(o)
        if why:
            raise RewardSpecError("outcomes", why)
    return base


def from_context(table: Mapping[str, Any] | None) -> RewardDef:
    """The reward of a runner's ``RunContext.reward`` (the validated spec's [reward] table, a
    function's module path already made absolute)."""
    return resolve(dict(table or {}), Path.cwd())


# --------------------------------------------------------------------------- calling


class LiveValues:
    """The reward values in force, shared between the runner and the reward call (thread-safe:
    Tunix calls rewards in a worker thread).  ``set(values, partial=True)`` merges."""

    def __init__(self, keys: Sequence[str], values: Mapping[str, float] | None = None) -> None:
        self.keys = tuple(keys)
        self._lock = threading.Lock()
        self._values: dict[str, float] = {}
        if values:
            self.set(values, partial=True)

    @property
    def values(self) -> dict[str, float]:
        with self._lock:
            return dict(self._values)

    def set(self, values: Mapping[str, float], partial: bool = False) -> None:
        new = {}
        for k, v in dict(values).items():
            if k not in self.keys:
                raise ValueError(f"unknown reward key {k!r}; the reward takes {', '.join(self.keys) or 'no keys'}")
            f = float(v)
            if not math.isfinite(f):
                raise ValueError(f"reward value {k}={v!r} is not finite")
            new[k] = f
        with self._lock:
            self._values = {**self._values, **new} if partial else new


@dataclass
class RewardCall:
    """What one call of a reward returned, checked: one reward and one value per outcome per
    completion (NaN where an outcome left a completion out)."""

    rewards: list[float]
    outcomes: dict[str, list[float]]

    def outcome_means(self, names: Sequence[str]) -> dict[str, float]:
        out = {}
        for n in names:
            vals = [v for v in self.outcomes.get(n, ()) if math.isfinite(v)]
            out[n] = sum(vals) / len(vals) if vals else math.nan
        return out


def _num(x: Any) -> float:
    if x is None:
        return math.nan
    if hasattr(x, "item") and not isinstance(x, (int, float, bool)):
        x = x.item()
    return float(x)


def call(defn: RewardDef, prompts: Sequence[Any], completions: Sequence[Any], values: Mapping[str, float], columns: Mapping[str, Any]) -> RewardCall:
    """Call the reward and check what it returned (ValueError naming the function otherwise)."""
    n = len(completions)
    res = defn.fn(prompts=list(prompts), completions=list(completions), values=dict(values), **dict(columns))
    who = f"reward '{defn.source or defn.name}'"
    outcomes_raw: Mapping[str, Any] = {}
    if isinstance(res, tuple):
        if len(res) != 2 or not isinstance(res[1], Mapping):
            raise ValueError(f"{who} returned a tuple; expected (rewards, {{outcome: values}})")
        res, outcomes_raw = res
    try:
        rewards = [_num(r) for r in res]
    except (TypeError, ValueError):
        raise ValueError(f"{who} must return one number per completion, got {type(res).__name__}") from None
    if len(rewards) != n:
        raise ValueError(f"{who} returned {len(rewards)} rewards for {n} completions")
    outcomes: dict[str, list[float]] = {}
    for name, vals in outcomes_raw.items():
        if name not in defn.outcomes:
            raise ValueError(
                f"{who} reported outcome '{name}', which it does not declare (declared: {', '.join(defn.outcomes) or 'none'})"
            )
        try:
            vs = [_num(v) for v in vals]
        except (TypeError, ValueError):
            raise ValueError(f"{who}: outcome '{name}' must hold one number or bool per completion") from None
        if len(vs) != n:
            raise ValueError(f"{who}: outcome '{name}' has {len(vs)} values for {n} completions")
        outcomes[name] = vs
    return RewardCall(rewards, outcomes)


def generic_evaluate(defn: RewardDef, rc: RewardCall) -> dict[str, Any]:
    """Evaluation metrics of scored completions: reward statistics with analytic intervals, each
    outcome's mean with a Wilson interval when it is a 0/1 rate, a normal one otherwise."""
    from rewards.metrics import Metric, reward_metrics, wilson

    fin = [r for r in rc.rewards if math.isfinite(r)]
    out: dict[str, Any] = dict(reward_metrics(fin))
    for name in defn.outcomes:
        vals = [v for v in rc.outcomes.get(name, ()) if math.isfinite(v)]
        n = len(vals)
        if n == 0:
            out[name] = Metric(math.nan, math.nan, math.nan, 0)
        elif all(v in (0.0, 1.0) for v in vals):
            s = int(sum(vals))
            lo, hi = wilson(s, n)
            out[name] = Metric(s / n, lo, hi, n)
        else:
            m = sum(vals) / n
            sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
            half = 1.959963984540054 * sd / math.sqrt(n)
            out[name] = Metric(m, m - half, m + half, n)
    return out


__all__ = ["RewardDef", "RewardSpecError", "RewardCall", "LiveValues", "resolve", "call", "generic_evaluate"]
