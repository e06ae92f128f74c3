"""TunixRunner: trains a model phase by phase with Google Tunix (PeftTrainer for SFT, GRPOLearner
over an RLCluster for GRPO), in chunks of steps, streaming one metrics dict per step.

This file holds what both kinds of phase share (model, tokenizer, phase setup, train loop,
evaluation, checkpoints); the SFT half is runners/tunix/sft.py, the GRPO half (cluster, learner,
reward probe, live penalties) runners/tunix/grpo.py.

How chunking works
------------------
Tunix's ``train()`` loops until its data ends and then closes the trainer / cluster (checkpoint
manager, metric loggers).  The runner therefore:

* keeps one trainer (SFT) or one RLCluster + GRPOLearner (GRPO) alive for the whole phase;
* runs one optimiser step per ``train()`` call: SFT gets a one-batch iterable, GRPO gets a
  persistent :class:`StepIterator` allowed to yield exactly one batch while
  ``training_config.max_steps`` is raised by one (so Tunix stops cleanly without touching
  the iterator again);
* replaces ``RLCluster.close`` by a no-op (:class:`_PhaseCluster`) and never configures Tunix's
  checkpoint manager or metric backends: no global ``jax.monitoring`` listeners are registered,
  nothing is closed between chunks.  wandb is the engine's (its tracker logs what train() yields).

The Tunix objects of a phase are built lazily (first ``train()`` or ``save()``), so ``restore``
may come before or after ``setup_phase``.  Checkpoints are written by
:mod:`runners.tunix.checkpoint` into the directory the engine gives.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator

import structlog

from runners.base import PhaseSetup, RunContext
from runners.tunix import config as cfgmod
from runners.tunix.config import (
    DataSection,
    EvalSettings,
    GrpoTrain,
    ModelSection,
    RunnerSection,
)
from runners.tunix.grpo import GrpoHalf
from runners.tunix.sft import SftHalf

log = structlog.get_logger()

EXTRA_METRICS = ("step_time", "perplexity", "pg_clipfrac", "reward_errors")


class TunixRunner(SftHalf, GrpoHalf):
    """The Tunix training back end (see module docstring)."""

    metric_names: frozenset[str] = cfgmod.METRIC_NAMES

    @classmethod
    def validate_config(cls, model: dict, data: dict, runner: dict) -> list[tuple[str, str]]:
        return cfgmod.validate_config(model, data, runner)

    @classmethod
    def validate_phase(cls, kind: str, train: dict) -> list[tuple[str, str]]:
        return cfgmod.validate_phase(kind, train)

    # ------------------------------------------------------------------ lifecycle

    def __init__(self) -> None:
        self.ctx: RunContext | None = None
        self.phase: PhaseSetup | None = None
        self.model = None
        self.global_step = 0
        self.phase_step = 0
        self._fresh_refs: set[str] = set()
        self.rng_counter = 0
        self._trainer = None  # SFT PeftTrainer
        self._cluster = None  # GRPO RLCluster
        self._learner = None
        self._iterator = None
        self._hp: Any = None  # parsed train table of the phase
        self._last_kind: str | None = None
        self._last_grpo_hp: GrpoTrain | None = None
        self._snapshots: dict[str, Any] = {}  # "sft" / "previous": trainable-state pure dicts
        self._pending: dict[str, Any] | None = None  # restored optimizer state etc.
        self._phase_pending: dict[str, Any] | None = None
        self._built = False
        self._eval_sampler = None
        self._eval_sampler_key = None
        self._schedule = None
        self._closed = False

    def open(self, ctx: RunContext) -> None:
        t0 = time.perf_counter()
        self.ctx = ctx
        self.m: ModelSection = cfgmod.parse_model(ctx.model)
        self.d: DataSection = cfgmod.parse_data(ctx.data)
        self.r: RunnerSection = cfgmod.parse_runner(ctx.runner)
        errs = cfgmod.check_model_paths(self.m)
        if errs:
            raise ValueError("; ".join(f"{k}: {v}" for k, v in errs))
        self.run_dir = Path(ctx.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.seed = int(self.d.seed if self.d.seed is not None else ctx.seed)
        # the rewards' default instructions are ~150 tiny-tokenizer tokens: the tiny model does
        # without them (the format is taught by SFT); real models get them unless overridden
        self.system_prompt: str | None = self.d.system_prompt
        if self.system_prompt is None and self.m.is_tiny:
            self.system_prompt = ""
        self._setup_env()

        import jax

        from runners.tunix import data as datamod
        from runners.tunix import model as modelmod
        from runners.tunix import text as textmod

        self._jax = jax
        self.mesh = modelmod.make_mesh()
        self.template = textmod.TEMPLATES[self.d.chat_template or textmod.default_template(self.m.family)]
        from curriculum import rewarding

        self._rdef = rewarding.from_context(ctx.reward)
        self.metric_names = cfgmod.METRIC_NAMES | frozenset(self._rdef.outcomes)  # + the reward's outcomes
        self.train_sets, self.eval_items = datamod.load_items(self.d, self.seed)
        self.train_items = self.train_sets["default"]
        if not self.train_items:
            raise ValueError("data: no training items")

        # tokenizer
        if self.m.is_tiny and self.m.init_from is None:
            texts = []
            for items in self.train_sets.values():
                for it in items:
                    texts.append(datamod.prompt_text(it, self.template, self.system_prompt))
                    if it.reference:
                        texts.append(it.reference)
            self.tokenizer, self.tokenizer_path = textmod.load_or_train_tiny_tokenizer(
                self.run_dir, texts, self.m.vocab_size, self.template
            )
            vocab = int(self.tokenizer.get_piece_size())
        else:
            policy = cfgmod.init_dir(self.m)  # init_from: the policy's own tokenizer
            source = policy / "tokenizer.model" if policy else (self.m.tokenizer_path or self.m.path)
            self.tokenizer_path = Path(source).expanduser()  # type: ignore[arg-type]
            self.tokenizer = textmod.load_tokenizer(self.tokenizer_path)
            vocab = None
        from tunix.generate import tokenizer_adapter

        self.tok = tokenizer_adapter.TokenizerAdapter(self.tokenizer)
        self.enc = _PlainEncoder(self.tok)  # text -> ids without special tokens (BOS added by us)
        self.pad_id = int(self.tok.pad_id())  # HF tokenizers without a pad token (Llama 3): EOS
        self.eos_id = int(self.tok.eos_id())
        probe = datamod.prompt_text(self.train_items[0], self.template, self.system_prompt)
        self.bos_id = _sampler_bos(self.tok, self.enc, probe)  # the BOS SFT rows start with
        end_id = textmod.token_id(self.tokenizer, self.template.assistant_end.strip())
        # Qwen's <|im_end|> ends the turn and is EOS: the SFT target gets it once, not twice
        self.end_id = None if end_id == self.eos_id else end_id
        self.stop_tokens = [self.eos_id] + ([self.end_id] if self.end_id is not None else [])

        # model
        self.model = self._build_base_model(vocab)
        self._check_vocab()
        from runners.tunix.model import is_lora, param_count

        self.lora = is_lora(self.model)
        log.info(
            "tunix_runner_opened",
            preset=self.m.preset,
            params=param_count(self.model),
            lora=self.lora,
            vocab=vocab or "pretrained",
            tokenizer=str(self.tokenizer_path),
            train_items=len(self.train_items),
            eval_items=len(self.eval_items),
            seconds=round(time.perf_counter() - t0, 2),
        )

    def _check_vocab(self) -> None:
        """A token id past the embedding table would be clamped silently by jax: refuse it."""
        from runners.tunix import text as textmod

        rows = int(self.model.embedder.input_embedding.shape[0])
        n = textmod.vocab_size(self.tokenizer)
        if n > rows:
            key = "model.tokenizer_path" if self.m.tokenizer_path else "model.path"
            raise ValueError(
                f"{key}: the tokenizer {self.tokenizer_path} has {n} tokens but the model's embedding "
                f"has {rows} rows (vocab_size): tokenizer and weights do not belong together"
            )

    def _setup_env(self) -> None:
        # wandb: the engine tracks metrics itself (one wandb run per process); the runner only
        # makes sure nothing in the process ever needs an API key.  An explicit [runner] wandb
        # wins ("disabled" always; otherwise unless WANDB_MODE is already set); without it,
        # WANDB_MODE defaults to offline only if nothing set it.
        if "wandb" in (self.ctx.runner or {}):
            if self.r.wandb == "disabled":
                os.environ["WANDB_MODE"] = "disabled"
            else:
                os.environ.setdefault("WANDB_MODE", self.r.wandb)
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if self.r.compilation_cache:
            import jax

            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
            cache = Path(self.r.compilation_cache_dir or os.path.join(base, "curriculum", "jax")).expanduser()
            try:
                jax.config.update("jax_compilation_cache_dir", str(cache))
                jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
                jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
            except Exception as exc:  # pragma: no cover - older jax
                log.warning("jax_compilation_cache_unavailable", error=str(exc))

    def _build_base_model(self, vocab: int | None):
        from runners.tunix import model as modelmod

        if self.m.init_from is not None:
            model = modelmod.build_from_policy(self.m, cfgmod.init_dir(self.m), self.mesh)
        elif self.m.is_tiny:
            init_seed = int(self.m.init_seed if self.m.init_seed is not None else self.seed)
            model = modelmod.build_tiny(self.m, int(vocab), init_seed, self.mesh)
        else:
            model = modelmod.build_real(self.m, self.mesh)
        if self.m.effective_lora_rank > 0:
            model = modelmod.apply_lora(model, self.m, self.mesh)
        return model

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._drop_phase_objects()

    # ------------------------------------------------------------------ phases

    def _drop_phase_objects(self) -> None:
        if self._learner is not None:
            try:
                self._learner.executor.shutdown(wait=False)
            except Exception:  # pragma: no cover
                pass
        self._trainer = None
        self._cluster = None
        self._learner = None
        self._iterator = None
        self._built = False

    def _trainable(self):
        from runners.tunix.model import trainable_filter

        return trainable_filter(self.model)

    def _snapshot(self) -> dict:
        """A host copy of the trainable weights (LoRA params only with LoRA)."""
        from runners.tunix.checkpoint import state_pure, to_str_tree

        return to_str_tree(state_pure(self.model, self._trainable()))

    def setup_phase(self, phase: PhaseSetup) -> None:
        if self.model is None:
            raise RuntimeError("open() must be called before setup_phase()")
        kind = phase.kind
        hp = cfgmod.parse_phase(kind, phase.train)
        # The SFT reference is the model as the last SFT phase left it.
        self._fresh_refs = set()  # KL references taken from the weights this phase starts with
        if self._last_kind == "sft" and kind != "sft":
            self._snapshots["sft"] = self._snapshot()
            self._fresh_refs.add("sft")
        pending = self._pending if self._pending and self._pending.get("phase") == phase.name else None
        if self._pending and pending is None:
            log.info("tunix_restore_phase_changed", saved_phase=self._pending.get("phase"), phase=phase.name)
        self._pending = None
        self._drop_phase_objects()
        self.phase = phase
        self._hp = hp
        self.phase_step = int(phase.start_phase_step)
        if pending is None:
            self.global_step = int(phase.global_step)
        elif int(phase.global_step) != self.global_step:
            log.warning(
                "tunix_global_step_mismatch", engine=int(phase.global_step), checkpoint=self.global_step
            )
            self.global_step = int(phase.global_step)
        if phase.penalties:
            self._ensure_live().set(dict(phase.penalties), partial=True)
        if kind == "grpo" and (pending is None or "previous" not in self._snapshots):
            self._snapshots["previous"] = self._snapshot()  # weights at the phase start
            self._fresh_refs.add("previous")
        self._phase_pending = pending
        self._built = False  # trainer / cluster are built lazily (first train() or save())
        self._last_kind = kind
        log.info(
            "tunix_phase_ready",
            phase=phase.name,
            kind=kind,
            global_step=self.global_step,
            phase_step=self.phase_step,
            resumed=pending is not None,
        )

    def _ensure_built(self) -> None:
        """Build the phase's Tunix objects (after setup_phase and, if any, restore)."""
        if self._built or self.phase is None or self.phase.kind not in ("sft", "grpo"):
            return
        t0 = time.perf_counter()
        pending, self._phase_pending = self._phase_pending, None
        if self.phase.kind == "sft":
            self._setup_sft(self._hp, self.phase, pending)
        else:
            self._setup_grpo(self._hp, self.phase, pending)
        self._built = True
        log.info("tunix_phase_built", phase=self.phase.name, seconds=round(time.perf_counter() - t0, 2))

    def _schedule_fn(self, hp, max_steps: int | None):
        import optax

        total = int(hp.schedule_steps or max_steps or 1000)
        peak = float(hp.learning_rate)
        floor = peak * float(hp.min_lr_ratio)
        warm = int(min(hp.warmup_steps, max(0, total - 1)))
        if hp.lr_schedule == "constant":
            main = optax.constant_schedule(peak)
        elif hp.lr_schedule == "cosine":
            main = optax.cosine_decay_schedule(peak, max(1, total - warm), alpha=floor / peak)
        else:
            main = optax.linear_schedule(peak, floor, max(1, total - warm))
        if warm > 0:
            return optax.join_schedules([optax.linear_schedule(0.0, peak, warm), main], [warm])
        return main

    def _optimizer(self, hp, max_steps: int | None):
        import optax

        self._schedule = self._schedule_fn(hp, max_steps)
        parts = []
        if hp.grad_clip:
            parts.append(optax.clip_by_global_norm(float(hp.grad_clip)))
        parts.append(
            optax.inject_hyperparams(optax.adamw)(
                learning_rate=self._schedule, b1=hp.b1, b2=hp.b2, weight_decay=hp.weight_decay
            )
        )
        return optax.chain(*parts)

    # ------------------------------------------------------------------ train

    def train(self, n_steps: int) -> Iterator[dict[str, float]]:
        if self.phase is None:
            raise RuntimeError("setup_phase() must be called before train()")
        kind = self.phase.kind
        if kind == "eval":
            return
        self._ensure_built()
        step_fn = self._sft_step if kind == "sft" else self._grpo_step
        for _ in range(int(n_steps)):
            t0 = time.perf_counter()
            metrics = step_fn()
            metrics["step_time"] = time.perf_counter() - t0
            self.global_step += 1
            self.phase_step += 1
            if self.phase_step % self.r.log_every == 0:
                log.info(
                    "tunix_step",
                    phase=self.phase.name,
                    step=self.global_step,
                    phase_step=self.phase_step,
                    **{k: round(v, 4) for k, v in metrics.items() if k in ("loss", "reward_mean", "kl", "step_time")},
                )
            yield metrics

    # ------------------------------------------------------------------ evaluation

    def _sampler(self, max_len: int):
        from tunix.generate import sampler as samplerlib

        cache = max_len + 8
        key = (id(self.model), cache)
        if self._eval_sampler is None or self._eval_sampler_key != key:
            self._eval_sampler = samplerlib.Sampler(
                self.model,
                self.tokenizer,
                samplerlib.CacheConfig(
                    cache_size=cache,
                    num_layers=self.model.config.num_layers,
                    num_kv_heads=self.model.config.num_kv_heads,
                    head_dim=self.model.config.head_dim,
                ),
            )
            self._eval_sampler_key = key
        return self._eval_sampler

    def generate(
        self,
        prompts: list[str],
        max_new_tokens: int,
        *,
        temperature: float = 0.0,
        seed: int = 0,
        batch_size: int | None = None,
    ) -> list[str]:
        """Complete chat-formatted prompts (greedy when temperature == 0), in fixed-size batches."""
        import jax

        bs = int(batch_size or self.r.eval_batch_size)
        lens = [len(self.enc.encode(p)) + 1 for p in prompts]
        max_prompt = 1 << max(4, (max(lens) - 1).bit_length())  # Tunix pads prompts to a power of 2
        sampler = self._sampler(max_prompt + max_new_tokens)
        out: list[str] = []
        for i in range(0, len(prompts), bs):
            chunk = list(prompts[i : i + bs])
            n_real = len(chunk)
            chunk += [chunk[-1]] * (bs - n_real)  # constant batch shape: one compilation
            kw: dict[str, Any] = {}
            if temperature > 0:
                kw = {"temperature": float(temperature), "top_p": 1.0, "seed": jax.random.PRNGKey(seed + i)}
            with jax.set_mesh(self.mesh):
                res = sampler(
                    chunk,
                    max_generation_steps=max_new_tokens,
                    max_prompt_length=max_prompt,
                    eos_tokens=self.stop_tokens,
                    **kw,
                )
            out.extend(res.text[:n_real])
        return out

    def evaluate(self) -> dict[str, float]:
        from curriculum import rewarding

        from runners.tunix import data as datamod

        phase = self.phase
        raw = dict(phase.eval) if phase is not None and phase.eval else {}
        ev = EvalSettings.model_validate({k: v for k, v in raw.items() if v is not None})
        items = self.eval_items[: ev.num_items] if ev.num_items else list(self.eval_items)
        if not items:
            return {"n_items": 0.0}
        # the evaluation preset the engine chose (eval.penalties), else the values in force
        preset = dict(ev.penalties) if ev.penalties else dict(self._ensure_live().values)
        t0 = time.perf_counter()
        prompts = [datamod.prompt_text(it, self.template, self.system_prompt) for it in items]
        k = int(ev.samples)
        temperature = 0.0 if (ev.greedy and k == 1) else float(ev.temperature)
        rep_prompts = [p for p in prompts for _ in range(k)]
        rep_items = [it for it in items for _ in range(k)]
        texts = self.generate(rep_prompts, ev.max_new_tokens, temperature=temperature, seed=self.seed + 104729)
        rdef = self._reward_def()
        columns = datamod.columns_of(rep_items)
        rc = None  # the per-completion call, made once: the generic metrics and the rows share it
        if rdef.evaluate is not None:
            agg = rdef.evaluate(texts, columns, preset)
        else:
            rc = rewarding.call(rdef, rep_prompts, texts, preset, columns)
            agg = rewarding.generic_evaluate(rdef, rc)
        out: dict[str, float] = {}
        for name, mt in agg.items():
            out[name] = float(mt.value)
            out[f"{name}_lo"] = float(mt.lo)
            out[f"{name}_hi"] = float(mt.hi)
        out["n_items"] = float(len(items))
        self.last_eval_texts = texts
        if self.ctx is not None and self.ctx.process_index == 0:
            self._write_eval_samples(rep_items, texts, rc or rewarding.call(rdef, rep_prompts, texts, preset, columns))
        log.info(
            "tunix_evaluated",
            phase=phase.name if phase else None,
            n_items=len(items),
            samples=k,
            seconds=round(time.perf_counter() - t0, 2),
            reward_mean=round(out.get("reward_mean", math.nan), 4),
            **{o: round(out.get(o, math.nan), 4) for o in self._reward_def().outcomes[:4]},
        )
        return out

    def _write_eval_samples(self, items, texts, rc) -> None:
        """RUN_DIR/evals/step-NNNNNNN-PHASE.jsonl: every evaluated response with its item id, its
        reward and outcomes under the evaluation preset (``rc``; written whole, atomically; a
        rerun of the same evaluation after a resume replaces it)."""
        from curriculum.state import atomic_write_text

        from runners.datasets import as_example

        lines = []
        for i, (it, text) in enumerate(zip(items, texts)):
            ex = as_example(it)
            row = {"id": ex.id, "user": ex.user, "response": text, "reward": rc.rewards[i]}
            row.update({k: v[i] for k, v in rc.outcomes.items()})
            row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            lines.append(json.dumps(row, ensure_ascii=False))
        name = self.phase.name if self.phase is not None else "eval"
        path = Path(self.ctx.run_dir) / "evals" / f"step-{self.global_step:07d}-{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "".join(line + "\n" for line in lines))

    # ------------------------------------------------------------------ checkpoints

    def _optimizer_obj(self):
        if self._trainer is not None:
            return self._trainer.optimizer
        if self._cluster is not None:
            return self._cluster.actor_trainer.optimizer
        return None

    def save(self, ckpt_dir: Path) -> None:
        from runners.tunix import checkpoint as ck

        t0 = time.perf_counter()
        self._ensure_built()  # a boundary checkpoint right after setup_phase holds the fresh optimizer
        arrays: dict[str, Any] = {"model": ck.state_pure(self.model, self._trainable())}
        opt = self._optimizer_obj()
        if opt is not None:
            arrays["opt"] = ck.state_pure(opt)
        for name, snap in self._snapshots.items():
            arrays[f"ref_{name}"] = snap
        phase = self.phase
        meta = {
            "global_step": self.global_step,
            "phase": phase.name if phase else None,
            "kind": phase.kind if phase else None,
            "phase_step": self.phase_step,
            "opt_steps": getattr(self, "_opt_steps", 0),
            "rng_counter": self.rng_counter,
            "last_kind": self._last_kind,
            "lora": self.lora,
            "preset": self.m.preset,
            "seed": self.seed,
            "sft_cursor": self._sft_data.cursor.state() if getattr(self, "_sft_data", None) else None,
            "grpo_cursor": (
                {"sets": {n: pd.cursor.state() for n, pd in self._prompt_sets.items()}, "mix_drawn": int(getattr(self, "_mix_drawn", 0))}
                if getattr(self, "_prompt_sets", None)
                else None
            ),
            "penalties": dict(self._live.values) if getattr(self, "_live", None) is not None else None,
            "actor_train_steps": self._cluster.actor_trainer.train_steps if self._cluster is not None else None,
        }
        ck.save(Path(ckpt_dir), arrays, meta)
        log.info("tunix_saved", dir=str(ckpt_dir), step=self.global_step, seconds=round(time.perf_counter() - t0, 2))

    def _load_weights(self, ckpt_dir: Path, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Load a checkpoint's policy weights into the model; returns (arrays, meta)."""
        from runners.tunix import checkpoint as ck

        if self.model is None:
            raise RuntimeError(f"open() must be called before {what}()")
        arrays, meta = ck.load(Path(ckpt_dir))
        if bool(meta.get("lora")) != bool(self.lora):
            raise ValueError(
                f"checkpoint {ckpt_dir} was saved with lora={meta.get('lora')} but model.lora_rank gives lora={self.lora}"
            )
        ck.load_into(self.model, arrays["model"], self._trainable())
        self._eval_sampler = None
        return arrays, meta

    def restore(self, ckpt_dir: Path) -> None:
        arrays, meta = self._load_weights(ckpt_dir, "restore")
        self._snapshots = {k[len("ref_") :]: v for k, v in arrays.items() if k.startswith("ref_")}
        self.global_step = int(meta["global_step"])
        self._truncate_recorded_rewards()
        self.rng_counter = int(meta.get("rng_counter", 0))
        self._last_kind = meta.get("last_kind")
        if meta.get("penalties"):
            self.set_penalties(meta["penalties"])
        pending = {
            "phase": meta.get("phase"),
            "opt": arrays.get("opt"),
            "opt_steps": int(meta.get("opt_steps", 0)),
            "phase_step": int(meta.get("phase_step", 0)),
        }
        # data positions are run-global (they carry across phases): apply them whatever phase comes
        self._cursors = {"sft": meta.get("sft_cursor"), "grpo": meta.get("grpo_cursor")}
        self._apply_cursors()
        if self.phase is None:  # the protocol order: restore, then setup_phase applies `pending`
            self._pending = pending
        else:  # setup_phase came first (the engine's resume order): redo its work on these weights
            ph = self.phase
            same = pending["phase"] == ph.name
            if not same:
                log.info("tunix_restore_phase_changed", saved_phase=pending["phase"], phase=ph.name)
                if meta.get("last_kind") == "sft" and ph.kind != "sft":
                    self._snapshots["sft"] = self._snapshot()
                if ph.kind == "grpo":
                    self._snapshots["previous"] = self._snapshot()
            elif ph.kind == "grpo" and "previous" not in self._snapshots:
                self._snapshots["previous"] = self._snapshot()
            self._drop_phase_objects()
            self._phase_pending = pending if same else None
            self._built = False
            self._last_kind = ph.kind
        log.info("tunix_restored", dir=str(ckpt_dir), step=self.global_step, phase=meta.get("phase"))

    def restore_policy(self, ckpt_dir: Path) -> None:
        """A rewind: load the policy weights (LoRA or full) saved in ``ckpt_dir`` into the phase
        just set up; steps, data positions, sampling keys and penalties go on.  The KL references
        this phase took from its starting weights ("previous", and "sft" right after an SFT
        phase) become the restored weights."""
        _, meta = self._load_weights(ckpt_dir, "restore_policy")
        for name in self._fresh_refs:  # references meant as "the weights at the phase start"
            self._snapshots[name] = self._snapshot()
        self._drop_phase_objects()
        self._built = False
        log.info("tunix_policy_restored", dir=str(ckpt_dir), saved_step=meta.get("global_step"), step=self.global_step)

    def _apply_pending(self, p: dict[str, Any]) -> None:
        from runners.tunix import checkpoint as ck

        opt = self._optimizer_obj()
        if p.get("opt") is not None and opt is not None:
            ck.load_into(opt, p["opt"])
        self._opt_steps = int(p.get("opt_steps", 0))

    def _apply_cursors(self) -> None:
        """Move freshly built data streams to the restored positions (once per stream)."""
        cur = getattr(self, "_cursors", None) or {}
        if cur.get("sft") and getattr(self, "_sft_data", None) is not None:
            self._sft_data.cursor.load(cur.pop("sft"))
        if cur.get("grpo") and getattr(self, "_prompt_sets", None) is not None:
            g = cur.pop("grpo")
            if "sets" not in g:  # a checkpoint from before named datasets: the default stream
                g = {"sets": {"default": g}, "mix_drawn": 0}
            for n, st in g["sets"].items():
                if n in self._prompt_sets:
                    self._prompt_sets[n].cursor.load(st)
            self._mix_drawn = int(g.get("mix_drawn", 0))


def _sampler_bos(adapter, enc: "_PlainEncoder", prompt: str) -> int | None:
    """The BOS id Tunix's Sampler puts before a prompt (rollouts and eval), or None.

    SFT rows are ``[BOS] prompt | response`` with this BOS, so SFT and generation see the same
    prompt tokens.  It is not simply ``bos_id()``: the Sampler prepends it only when truthy (never
    an id of 0; Qwen has none), and an HF tokenizer's post-processor may add it (Llama 3), which
    the Sampler then de-duplicates.  Tunix's own ``Sampler.tokenize`` is applied to a real prompt.
    """
    from types import SimpleNamespace

    from tunix.generate import sampler as samplerlib

    sampled = [int(x) for x in samplerlib.Sampler.tokenize(SimpleNamespace(tokenizer=adapter), prompt)]
    plain = enc.encode(prompt)
    lead = sampled[: len(sampled) - len(plain)]
    if sampled[len(lead) :] != plain or len(lead) > 1 or any(i < 0 for i in lead):
        log.warning(
            "tokenizer_prompt_mismatch",
            detail="Tunix's sampler encodes prompts differently from [BOS] + text; SFT rows may differ from rollouts",
            sampler_head=sampled[:8],
            plain_head=plain[:8],
        )
        bos = adapter.bos_id()
        return int(bos) if bos is not None and int(bos) >= 0 else None
    return lead[0] if lead else None


class _PlainEncoder:
    """Encodes text without special tokens: HF tokenizers would add BOS to every piece."""

    def __init__(self, adapter) -> None:
        self.adapter = adapter
        self.hf = hasattr(adapter.tokenizer, "convert_tokens_to_ids")

    def encode(self, text: str) -> list[int]:
        if self.hf:
            return list(self.adapter.tokenizer.encode(text, add_special_tokens=False))
        return list(self.adapter.encode(text))

