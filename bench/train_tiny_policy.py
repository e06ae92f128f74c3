"""Train the tiny DIPG policy the default run starts from (issue 14) and ship it in the package.

    python bench/train_tiny_policy.py                      # writes runners/tunix/assets/tiny-dipg/
    python bench/train_tiny_policy.py --steps 300 --out /tmp/policy   # a shorter try elsewhere

What it does, through the runner's real code path (``TunixRunner``: the local SentencePiece
tokenizer, Tunix ``PeftTrainer`` SFT with the loss on the assistant part, greedy evaluation
scored by ``rewards/``):

1. opens the runner with the default run's ``[model]`` (tiny Gemma 3, full fine-tune) and
   ``[data]`` tables, so the shipped weights were trained on exactly the default run's training
   split and never saw its held-out evaluation items;
2. trains SFT for ``--steps`` steps (cosine schedule over those steps);
3. evaluates greedily on the held-out set and prints the rates, with the verbatim-proof rate
   (the grader's ``grounded`` flag: every quoted proof span is in the context) per task type;
4. writes ``model.safetensors`` + ``config.json`` (Hugging Face Gemma 3 layout, float32),
   ``tokenizer.model`` and ``policy.json`` (command, seed, data, step count, measured figures);
5. loads the written directory back the way a run does (``[model] init_from``) and checks that
   greedy generations on the first evaluation prompts are identical.

One training at a time: it uses the whole CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: the default run's [model] and [data] tables (examples/dipg.toml): the split must match
MODEL = {"preset": "tiny"}
DATA = {"source": "synthetic", "num_items": 2000, "eval_items": 300}


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024)


def grounded_by_type(texts, items) -> dict[str, tuple[int, int]]:
    """(verbatim proofs, n) per task type and overall: the grader's ``grounded`` flag."""
    from rewards import PRESETS, score

    out: dict[str, list[int]] = {}
    for t, it in zip(texts, items):
        g = int(score(t, it, PRESETS["soft"]).flags["grounded"])
        for key in (it.type, "all"):
            s = out.setdefault(key, [0, 0])
            s[0] += g
            s[1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "runners" / "tunix" / "assets" / "tiny-dipg"))
    ap.add_argument("--seed", type=int, default=42, help="run seed: data split and weight init (default run's)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seq", type=int, default=224)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--snapshot-every", type=int, default=0,
                    help="also write the weights and tokenizer to OUT-stepN every N steps (no eval, no card)")
    ap.add_argument("--stop-after", type=int, default=None,
                    help="stop after this many steps of the --steps schedule (default: all of them)")
    ap.add_argument("--package-snapshot", default=None, metavar="DIR",
                    help="train nothing: evaluate and package DIR, a --snapshot-every snapshot of the run "
                         "that --steps/--stop-after describe (same weights: the training is deterministic)")
    ap.add_argument("--work-dir", default=None, help="where the tokenizer is trained (default: a temp dir)")
    args = ap.parse_args(argv)

    from rewards import PRESETS

    from runners.base import PhaseSetup, RunContext
    from runners.tunix.runner import TunixRunner

    t0 = time.perf_counter()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="tiny_policy_"))
    stop = int(args.stop_after or args.steps)
    runner = TunixRunner()
    model = dict(MODEL, init_from=str(Path(args.package_snapshot).resolve())) if args.package_snapshot else dict(MODEL)
    runner.open(RunContext(run_dir=work, seed=args.seed, model=model, data=dict(DATA), runner={"wandb": "disabled"}))
    train = {"batch_size": args.batch, "max_seq_len": args.seq, "learning_rate": args.lr, "lr_schedule": "cosine"}
    runner.setup_phase(PhaseSetup(
        name="sft", kind="sft", ordinal=0, max_steps=args.steps, start_phase_step=0, global_step=0,
        penalties=dict(PRESETS["soft"]), train=train, eval={"max_new_tokens": 128},
    ))
    from runners.tunix.model import save_gemma3_safetensors

    t_train = time.perf_counter()
    loss = math.nan
    for m in runner.train(0 if args.package_snapshot else stop):
        loss = m["loss"]
        if args.snapshot_every and runner.phase_step % args.snapshot_every == 0 and runner.phase_step < args.steps:
            snap = Path(f"{args.out}-step{runner.phase_step}")
            save_gemma3_safetensors(runner.model, snap)
            shutil.copyfile(runner.tokenizer_path, snap / "tokenizer.model")
        if runner.phase_step % args.log_every == 0:
            print(f"sft step {runner.phase_step}: loss {loss:.3f}  elapsed {time.perf_counter() - t_train:.0f}s"
                  f"  rss {rss_gib():.2f} GiB", flush=True)
    train_s = time.perf_counter() - t_train

    t_ev = time.perf_counter()
    ev = runner.evaluate()
    eval_s = time.perf_counter() - t_ev
    texts = list(runner.last_eval_texts)
    from runners.datasets import to_dipg

    items = [to_dipg(x) for x in runner.eval_items]
    grounded = grounded_by_type(texts, items)
    rates = {k: round(ev[k], 4) for k in ("format_error_rate", "safe_rate", "hallucination_rate", "correct_rate",
                                          "abstention_accuracy", "consistency_rate")}
    print(f"eval ({len(items)} held-out items, greedy, {eval_s:.0f}s): {json.dumps(rates)}", flush=True)
    for k, (s, n) in grounded.items():
        print(f"  verbatim proofs {k}: {s}/{n} = {s / n:.2f}", flush=True)

    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_gemma3_safetensors(runner.model, tmp)
    shutil.copyfile(runner.tokenizer_path, tmp / "tokenizer.model")
    from runners.tunix import data as datamod

    probe = [datamod.prompt_text(it, runner.template, runner.system_prompt) for it in items[:8]]
    before = runner.generate(probe, 128, batch_size=8)
    runner.close()

    recipe = f"python bench/train_tiny_policy.py --seed {args.seed} --steps {args.steps}"
    recipe += f" --batch {args.batch} --lr {args.lr:g} --seq {args.seq}" + (f" --stop-after {stop}" if stop != args.steps else "")
    card = {
        "what": "tiny Gemma 3 DIPG policy: SFT from random init on the synthetic vignettes (SYNTHETIC, NOT MEDICAL ADVICE)",
        "command": recipe,
        "made_by": "python bench/train_tiny_policy.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": args.seed,
        "model": dict(MODEL, params=None),
        "data": DATA,
        "sft": dict(train, schedule_steps=args.steps, steps=stop,
                    final_loss=None if args.package_snapshot else round(loss, 4)),
        "train_seconds": None if args.package_snapshot else round(train_s, 1),
        "eval": {
            "items": len(items),
            "greedy": True,
            "max_new_tokens": 128,
            "rates": rates,
            "verbatim_proofs": {k: {"n": n, "verbatim": s, "rate": round(s / n, 4)} for k, (s, n) in grounded.items()},
        },
    }
    from runners.tunix.model import param_count

    # load the written files back the way a run does and check the generations are the same
    check = TunixRunner()
    check.open(RunContext(run_dir=work / "reload", seed=args.seed, model=dict(MODEL, init_from=str(tmp)),
                          data=dict(DATA), runner={"wandb": "disabled"}))
    after = check.generate(probe, 128, batch_size=8)
    card["model"]["params"] = param_count(check.model)
    check.close()
    if after != before:
        print("ERROR: the reloaded policy generates differently from the trained one", file=sys.stderr)
        return 1
    (tmp / "policy.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.1f} MB); reload check: {len(probe)} greedy generations identical")
    print(json.dumps({"train_seconds": round(train_s, 1), "total_seconds": round(time.perf_counter() - t0, 1),
                      "peak_rss_gib": round(rss_gib(), 2), **card["eval"]["verbatim_proofs"]["all"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
