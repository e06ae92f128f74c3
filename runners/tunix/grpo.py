"""The GRPO half of the Tunix runner: an RLCluster + GRPOLearner kept alive for the phase, one
step per call, the reward called through a probe that keeps what it saw (rewards, outcomes,
per-group top rewards) for the step's metrics, the KL reference, live penalty values and the
recorded reward trace.  Mixed into :class:`runners.tunix.runner.TunixRunner`."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import structlog

from runners.base import PhaseSetup, reward_step_stats
from runners.tunix import config as cfgmod
from runners.tunix.config import GrpoTrain

log = structlog.get_logger()


class GrpoHalf:
    """``_setup_grpo`` builds the phase's cluster and learner; ``_grpo_step`` takes one step;
    ``set_penalties`` changes the reward's values between steps."""


    def _reference_model(self, hp: GrpoTrain):
        from runners.tunix.checkpoint import load_into
        from runners.tunix.model import clone_model

        if hp.beta == 0.0:
            return None
        if hp.kl_reference == "base":
            vocab = int(self.tokenizer.get_piece_size()) if self.m.is_tiny else None
            return self._build_base_model(vocab)
        snap = self._snapshots.get(hp.kl_reference)
        if snap is None and hp.kl_reference == "sft":
            log.warning("kl_reference_sft_missing", detail="no SFT phase before; using the phase-start weights")
            snap = self._snapshots.get("previous")
        ref = clone_model(self.model)
        if snap is not None:
            load_into(ref, snap, self._trainable())
        return ref

    def _setup_grpo(self, hp: GrpoTrain, phase: PhaseSetup, pending) -> None:
        import jax
        from tunix.rl import rl_cluster as rlc
        from tunix.rl.grpo import grpo_learner
        from tunix.rl.rollout import base_rollout

        from runners.tunix import data as datamod

        if getattr(self, "_prompt_sets", None) is None:
            self._prompt_sets = {
                n: datamod.PromptData(items, self.template, self.system_prompt, self.seed + 31 * i, self.d.shuffle)
                for i, (n, items) in enumerate(self.train_sets.items())
            }
            self._prompt_data = self._prompt_sets["default"]
            lens = [len(self.enc.encode(p)) + 1 for pd in self._prompt_sets.values() for p in pd.prompts]
            self._longest_prompt = max(lens)
            self._apply_cursors()
        sel = cfgmod.phase_data(phase.train)
        weights = {"default": 1.0} if sel is None else ({sel: 1.0} if isinstance(sel, str) else dict(sel))
        self._mixer = datamod.MixedPrompts(self._prompt_sets, weights, self.seed)
        self._mixer.drawn = int(getattr(self, "_mix_drawn", 0))
        prev = self._last_grpo_hp
        if prev is not None and (prev.beta != hp.beta or prev.epsilon != hp.epsilon):
            log.info(
                "grpo_recompile",
                reason="beta/epsilon changed at a phase boundary",
                beta=[prev.beta, hp.beta],
                epsilon=[prev.epsilon, hp.epsilon],
                phase=phase.name,
            )
        max_prompt = max(hp.max_prompt_length, self._longest_prompt)
        if max_prompt > hp.max_prompt_length:
            log.info("grpo_max_prompt_length_raised", configured=hp.max_prompt_length, used=max_prompt)
        self._grpo_max_prompt = max_prompt
        rollout = base_rollout.RolloutConfig(
            max_tokens_to_generate=hp.max_new_tokens,
            max_prompt_length=max_prompt,
            kv_cache_size=max_prompt + hp.max_new_tokens + 8,
            temperature=hp.temperature,
            top_p=hp.top_p,
            top_k=hp.top_k,
            eos_tokens=list(self.stop_tokens),
            seed=jax.random.PRNGKey(0),
        )
        tcfg = rlc.RLTrainingConfig(
            actor_optimizer=self._optimizer(hp, phase.max_steps),
            eval_every_n_steps=1 << 30,
            max_steps=0,
            checkpoint_root_directory=None,
            metrics_logging_options=None,
            pbar_description=None,
        )
        ccfg = rlc.ClusterConfig(
            role_to_mesh={rlc.Role.ACTOR: self.mesh, rlc.Role.REFERENCE: self.mesh, rlc.Role.ROLLOUT: self.mesh},
            rollout_engine="vanilla",
            offload_to_cpu=False,
            training_config=tcfg,
            rollout_config=rollout,
        )
        ref = self._reference_model(hp)
        with jax.set_mesh(self.mesh):
            cluster = _PhaseCluster(actor=self.model, reference=ref, tokenizer=self.tokenizer, cluster_config=ccfg)
        if cluster.actor_trainer.model is not self.model:  # Tunix resharded it: follow the trained copy
            self.model = cluster.actor_trainer.model
        self._reward = self._make_reward()
        probe = self._reward

        def on_metrics(buf, probe=probe):  # called by Tunix when a step's RL metrics are logged
            m = buf.metrics.get("completions/mean_length")
            if m is not None and m[0]:
                probe.completion_length = float(sum(float(v) for v in m[0]) / len(m[0]))

        cluster.with_external_metrics_logger(on_metrics)
        algo = grpo_learner.GRPOConfig(
            num_generations=hp.num_generations,
            num_iterations=hp.num_iterations,
            beta=hp.beta,
            epsilon=hp.epsilon,
            kl_loss_mode=hp.kl_loss_mode,
        )
        self._learner = grpo_learner.GRPOLearner(cluster, algo, reward_fns=[self._reward])
        self._cluster = cluster
        self._iterator = datamod.StepIterator(self._mixer, hp.batch_size)
        self._rollout_cfg = rollout
        self._opt_steps = 0
        self._last_grpo_hp = hp
        if pending is not None:
            self._apply_pending(pending)

    def _reward_def(self):
        if getattr(self, "_rdef", None) is None:  # reward plumbing works before open() (tests)
            from curriculum import rewarding

            self._rdef = rewarding.from_context(self.ctx.reward if self.ctx is not None else {})
        return self._rdef

    def _ensure_live(self):
        from curriculum.rewarding import LiveValues

        if getattr(self, "_live", None) is None:
            rdef = self._reward_def()
            self._live = LiveValues(rdef.keys, next(iter(rdef.presets.values()), None))
        return self._live

    def _make_reward(self):
        return _RewardProbe(self._reward_def(), self._ensure_live())

    def set_penalties(self, values: Mapping[str, float]) -> None:
        """New reward values (all the reward's keys, or a subset merged over the current ones); the next
        GRPO step's reward call reads them (no rebuild, no recompile)."""
        values = {k: float(v) for k, v in dict(values).items()}
        if not values:
            return
        self._ensure_live().set(values, partial=True)

    def _grpo_step(self) -> dict[str, float]:
        import jax
        import numpy as np

        hp: GrpoTrain = self._hp
        cluster, learner = self._cluster, self._learner
        # fresh sampling key every step (Tunix reuses one key when the seed is unset), from the
        # run's seed: with data.seed pinned, runs (or branches of one checkpoint) that differ only
        # in run.seed see the same data split and order but sample different completions
        self._rollout_cfg.seed = jax.random.fold_in(jax.random.PRNGKey(int(self.ctx.seed)), self.rng_counter)
        self.rng_counter += 1
        cluster.cluster_config.training_config.max_steps = cluster.actor_trainer.train_steps + 1
        self._iterator.allowance = 1
        self._reward.reset()
        with jax.set_mesh(self.mesh):
            learner.train(self._iterator)
        self._mix_drawn = self._mixer.drawn
        if self._reward.failure is not None:
            raise self._reward.failure
        if self._reward.rewards is None:
            raise RuntimeError("GRPO step produced no rewards (data iterator exhausted?)")
        out = reward_metrics(self._reward_def(), self._reward, self._live.values, hp.num_generations)
        out["reward_errors"] = float(self._reward.errors)
        buf = cluster.actor_trainer._prev_buffered_train_metrics  # this step (Tunix logs it one step late)
        out["loss"] = float(buf.loss) if buf is not None else math.nan

        def metric(name):
            if buf is None or name not in buf.additional_metrics:
                return math.nan
            return float(np.mean([np.asarray(v) for v in buf.additional_metrics[name][0]]))

        out["grad_norm"] = metric("grad_norm")
        out["kl"] = metric("kl") if hp.beta != 0.0 else 0.0
        out["pg_clipfrac"] = metric("pg_clipfrac")
        out["completion_length"] = float(self._reward.completion_length) if self._reward.completion_length is not None else math.nan
        out["learning_rate"] = float(self._schedule(self._opt_steps))
        self._opt_steps += 1
        if self.r.record_rewards:
            self._record_rewards(out, hp.num_generations)
        return out

    def _record_rewards(self, out: Mapping[str, float], group_size: int) -> None:
        """One replay-trace line (process 0): the rewards, group-major, and the group counts
        computed against each item's own top reward (which a replay could not recompute)."""
        if self.ctx is None or self.ctx.process_index != 0:
            return
        keep = ("groups_flat", "groups_spread", "groups_top", "groups_saturated", "top_reward_rate")
        line = {
            "step": self.global_step + 1,
            "phase": self.phase.name if self.phase else None,
            "group_size": int(group_size),
            "rewards": [float(r) if math.isfinite(r) else None for r in self._reward.rewards],
            "metrics": {k: out[k] for k in keep if k in out and math.isfinite(out[k])},
        }
        with open(Path(self.ctx.run_dir) / "rewards.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")

    def _truncate_recorded_rewards(self) -> None:
        """After a restore: drop recorded steps the resumed run will train again."""
        path = Path(self.ctx.run_dir) / "rewards.jsonl" if self.ctx is not None else None
        if not self.r.record_rewards or path is None or not path.is_file() or self.ctx.process_index != 0:
            return
        kept = []
        for raw in path.read_text(encoding="utf-8").splitlines():
            try:
                if int(json.loads(raw)["step"]) <= self.global_step:
                    kept.append(raw)
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line from a kill
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        os.replace(tmp, path)


def reward_metrics(rdef: Any, probe: "_RewardProbe", values: Mapping[str, float], group_size: int) -> dict[str, float]:
    """One GRPO step's reward metrics: :func:`reward_step_stats` (group-major rewards), with
    ``top_reward_rate`` against the reward's ``max_reward`` under the values in force for each
    group's item (NaN when the reward declares none), plus the batch means of its outcomes."""
    g = max(1, int(group_size))
    n = len(probe.rewards)
    tops = [rdef.top(values, probe.item_columns(i)) for i in range(0, n, g)]
    out = reward_step_stats(list(probe.rewards), g, top_reward=None if any(t is None for t in tops) else tops)
    out.update(probe.outcome_means)
    return out


class _RewardProbe:
    """The reward as Tunix calls it (``fn(prompts, completions, **columns)``, in a worker
    thread): calls the spec's reward with the values in force and keeps what the call saw."""

    _NOT_COLUMNS = ("mode", "trajectory_ids")

    def __init__(self, rdef, live) -> None:
        self.rdef = rdef
        self.live = live
        self.__name__ = f"{rdef.name}_reward"
        self.reset()

    def reset(self) -> None:
        self.rewards = None
        self.completions: list[str] = []
        self.columns: dict[str, list[Any]] = {}
        self.outcome_means: dict[str, float] = {}
        self.errors = 0
        self.failure: Exception | None = None
        self.completion_length = None

    def item_columns(self, i: int) -> dict[str, Any]:
        return {k: v[i] for k, v in self.columns.items()}

    def __call__(self, prompts=None, completions=None, **kw):
        from curriculum import rewarding

        completions = [str(c) for c in (completions or [])]
        n = len(completions)
        cols: dict[str, list[Any]] = {}
        for k, v in kw.items():
            if k in self._NOT_COLUMNS:
                continue
            try:
                vals = list(v)
            except TypeError:
                continue
            if len(vals) == n:
                cols[k] = [x.item() if hasattr(x, "item") else x for x in vals]
        try:
            rc = rewarding.call(self.rdef, list(prompts or []), completions, self.live.values, cols)
        except Exception as exc:  # noqa: BLE001 - re-raised by the runner, outside Tunix's thread
            self.failure = RuntimeError(f"reward '{self.rdef.source or self.rdef.name}' failed: {type(exc).__name__}: {exc}")
            self.failure.__cause__ = exc
            return [0.0] * n
        self.rewards = rc.rewards
        self.completions = completions
        self.columns = cols
        self.outcome_means = rc.outcome_means(self.rdef.outcomes)
        # completions the reward left out of every outcome it declares (DIPG: a scorer failure)
        outs = [rc.outcomes[o] for o in self.rdef.outcomes if o in rc.outcomes]
        self.errors = sum(1 for i in range(n) if outs and all(not math.isfinite(o[i]) for o in outs))
        return rc.rewards


def _phase_cluster_cls():
    from tunix.rl import rl_cluster as rlc

    class PhaseCluster(rlc.RLCluster):
        """An RLCluster whose close() (called by Tunix at the end of every train()) is deferred."""

        def close(self):  # noqa: D401 - Tunix calls this after every chunk
            return None

        def really_close(self):
            super().close()

    return PhaseCluster


class _LazyCls:
    def __call__(self, *a, **kw):
        return _phase_cluster_cls()(*a, **kw)


_PhaseCluster = _LazyCls()
