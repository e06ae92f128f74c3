"""The SFT half of the Tunix runner: a PeftTrainer kept alive for the phase, one optimiser step
per call (loss on the assistant part only).  Mixed into :class:`runners.tunix.runner.TunixRunner`,
whose state (model, tokenizer, data, settings) these methods use."""

from __future__ import annotations

import math

import structlog

from runners.base import PhaseSetup
from runners.tunix import config as cfgmod
from runners.tunix.config import SftTrain

log = structlog.get_logger()


class SftHalf:
    """``_setup_sft`` builds the phase's trainer; ``_sft_step`` takes one step."""


    def _setup_sft(self, hp: SftTrain, phase: PhaseSetup, pending) -> None:
        from tunix.sft import peft_trainer
        from tunix.sft import utils as sft_utils

        from runners.tunix import data as datamod

        sel = cfgmod.phase_data(phase.train)
        name = sel if isinstance(sel, str) else (next(iter(sel)) if isinstance(sel, dict) else "default")
        if getattr(self, "_sft_data", None) is None or self._sft_data_key != (hp.max_seq_len, name):
            old = getattr(self, "_sft_data", None)
            same_rows = old is not None and self._sft_data_key[1] == name
            self._sft_data = datamod.SftData(
                self.train_sets[name],
                self.enc,
                self.template,
                self.system_prompt,
                hp.max_seq_len,
                self.seed,
                self.pad_id,
                self.bos_id,
                self.eos_id,
                self.end_id,
                shuffle=self.d.shuffle,
            )
            self._sft_data_key = (hp.max_seq_len, name)
            if same_rows:  # same rows, new length: keep the position
                self._sft_data.cursor.load(old.cursor.state())
            self._apply_cursors()
            if self._sft_data.truncated:
                log.warning(
                    "sft_rows_truncated",
                    rows=self._sft_data.truncated,
                    dropped=self._sft_data.dropped,
                    of=len(self.train_items),
                    max_seq_len=hp.max_seq_len,
                )
        pad = self.pad_id

        def gen_input(x):
            valid = x.input_tokens != pad
            return {
                "input_tokens": x.input_tokens,
                "input_mask": x.input_mask,  # 1 on assistant tokens only -> loss on the response
                "positions": sft_utils.build_positions_from_mask(valid),
                "attention_mask": sft_utils.make_causal_attn_mask(valid),
            }

        tcfg = peft_trainer.TrainingConfig(
            eval_every_n_steps=1 << 30,
            max_steps=None,
            checkpoint_root_directory=None,
            metrics_logging_options=None,
            pbar_description=None,
        )
        with self._jax.set_mesh(self.mesh):
            trainer = peft_trainer.PeftTrainer(self.model, self._optimizer(hp, phase.max_steps), tcfg)
        trainer.with_gen_model_input_fn(gen_input)
        trainer.is_managed_externally = True  # no max_steps check, no close() at the end of train()
        self._trainer = trainer
        self._opt_steps = 0
        if pending is not None:
            self._apply_pending(pending)

    def _sft_step(self) -> dict[str, float]:
        import numpy as np
        from tunix.sft import peft_trainer

        hp: SftTrain = self._hp
        toks, mask = self._sft_data.next_batch(hp.batch_size, hp.length_bucket)
        ex = peft_trainer.TrainingInput(input_tokens=toks, input_mask=mask)
        with self._jax.set_mesh(self.mesh):
            self._trainer.train([ex])
        buf = self._trainer._prev_buffered_train_metrics  # this step's buffer (Tunix writes it one step late)
        loss = float(buf.loss)
        gn = buf.additional_metrics.get("grad_norm", ([math.nan], None))[0]
        lr = float(self._schedule(self._opt_steps))
        self._opt_steps += 1
        return {
            "loss": loss,
            "perplexity": float(math.exp(min(loss, 50.0))),
            "grad_norm": float(np.mean([np.asarray(v) for v in gn])),
            "learning_rate": lr,
        }
