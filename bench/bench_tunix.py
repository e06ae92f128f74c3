"""Benchmark (a) of issue 3: per-step time and peak RSS of SFT and GRPO on the tiny preset.

    python bench/bench_tunix.py                       # defaults = the recommended cpu profile
    python bench/bench_tunix.py --sft-seconds 60 --grpo-steps 10 --eval-every 100

Runs the real TunixRunner (same code the engine drives): SFT for a time budget or a step count,
greedy evaluations on the held-out set along the way, then GRPO steps; prints one line per
measurement and a JSON summary at the end.  Peak RSS is the process's ru_maxrss (includes jax).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-items", type=int, default=2000)
    ap.add_argument("--eval-items", type=int, default=100)
    ap.add_argument("--system-prompt", default="")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--sft-steps", type=int, default=300)
    ap.add_argument("--sft-seconds", type=float, default=0.0, help="stop SFT after this many seconds (0: use steps)")
    ap.add_argument("--sft-batch", type=int, default=16)
    ap.add_argument("--sft-seq", type=int, default=224)
    ap.add_argument("--length-bucket", type=int, default=64)
    ap.add_argument("--sft-lr", type=float, default=3e-3)
    ap.add_argument("--sft-warmup", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=0, help="greedy eval every N SFT steps (0: only at the end)")
    ap.add_argument("--eval-n", type=int, default=100)
    ap.add_argument("--eval-tokens", type=int, default=128)
    ap.add_argument("--grpo-steps", type=int, default=20)
    ap.add_argument("--grpo-batch", type=int, default=2)
    ap.add_argument("--grpo-g", type=int, default=4)
    ap.add_argument("--grpo-tokens", type=int, default=112)
    ap.add_argument("--grpo-lr", type=float, default=1e-4)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--wandb", default="disabled")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    from rewards import PRESETS

    from runners.base import PhaseSetup, RunContext
    from runners.tunix.runner import TunixRunner

    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="bench_tunix_"))
    model = {
        "num_layers": args.layers,
        "embed_dim": args.dim,
        "hidden_dim": args.hidden,
        "num_heads": args.heads,
        "head_dim": args.head_dim,
        "vocab_size": args.vocab,
    }
    data = {"num_items": args.num_items, "eval_items": args.eval_items, "system_prompt": args.system_prompt}
    runner = TunixRunner()
    runner.open(RunContext(run_dir=run_dir, seed=args.seed, model=model, data=data, runner={"wandb": args.wandb}))
    t_open = time.perf_counter() - t_start
    print(f"open: {t_open:.1f}s  rss {rss_gib():.2f} GiB", flush=True)

    sft_steps = args.sft_steps if args.sft_seconds <= 0 else 10**6
    sched_steps = args.sft_steps
    ev = {"max_new_tokens": args.eval_tokens, "num_items": args.eval_n}
    sft = PhaseSetup(
        name="sft", kind="sft", ordinal=0, max_steps=sched_steps, start_phase_step=0, global_step=0,
        penalties=dict(PRESETS["soft"]),
        train={"batch_size": args.sft_batch, "max_seq_len": args.sft_seq, "learning_rate": args.sft_lr,
               "warmup_steps": args.sft_warmup, "lr_schedule": "cosine",
               "length_bucket": args.length_bucket},
        eval=ev,
    )
    runner.setup_phase(sft)
    runner._ensure_built()  # (normally the first train() builds it)
    data_rows = runner._sft_data
    print(f"sft rows {len(data_rows)}  truncated {data_rows.truncated}  max len {int(data_rows.lengths.max())}"
          f"  mean len {float(data_rows.lengths.mean()):.1f}", flush=True)
    times: list[float] = []
    evals: list[dict] = []
    t_sft = time.perf_counter()
    step = 0
    for m in runner.train(sft_steps):
        step += 1
        times.append(m["step_time"])
        if step % 50 == 0:
            print(f"sft step {step}: loss {m['loss']:.3f}  {m['step_time']*1000:.0f} ms  "
                  f"elapsed {time.perf_counter()-t_sft:.0f}s  rss {rss_gib():.2f} GiB", flush=True)
        if args.eval_every and step % args.eval_every == 0:
            e = runner.evaluate()
            evals.append({"step": step, "elapsed": time.perf_counter() - t_sft, **e})
            print(f"  eval@{step}: format_ok {1-e['format_error_rate']:.2f}  safe {e['safe_rate']:.2f}  "
                  f"correct {e['correct_rate']:.2f}  halluc {e['hallucination_rate']:.2f}", flush=True)
        if args.sft_seconds > 0 and time.perf_counter() - t_sft >= args.sft_seconds:
            break
    sft_wall = time.perf_counter() - t_sft
    t_ev = time.perf_counter()
    e = runner.evaluate()
    ev_wall = time.perf_counter() - t_ev
    evals.append({"step": step, "elapsed": sft_wall, **e})
    print(f"sft done: {step} steps in {sft_wall:.0f}s; eval {ev_wall:.1f}s: format_ok {1-e['format_error_rate']:.3f}"
          f"  safe {e['safe_rate']:.2f}  correct {e['correct_rate']:.2f}  halluc {e['hallucination_rate']:.2f}", flush=True)
    from rewards import parse_response

    bad = []
    for t, it in zip(runner.last_eval_texts, runner.eval_items):
        pr = parse_response(t)
        if not pr.ok:
            bad.append((it.type, pr.error, t))
    for t in runner.last_eval_texts[:2]:
        print("   sample:", t[:300].replace("\n", "\\n"))
    for typ, err, t in bad[:4]:
        print(f"   malformed ({typ}, {err}, {len(runner.tok.encode(t))} tokens):", t[:400].replace("\n", "\\n"))
    rss_after_sft = rss_gib()

    grpo_times: list[float] = []
    grpo = PhaseSetup(
        name="soft", kind="grpo", ordinal=1, max_steps=args.grpo_steps, start_phase_step=0,
        global_step=runner.global_step, penalties=dict(PRESETS["soft"]),
        train={"batch_size": args.grpo_batch, "num_generations": args.grpo_g, "max_new_tokens": args.grpo_tokens,
               "learning_rate": args.grpo_lr, "beta": args.beta},
        eval=ev, previous_phase="sft",
    )
    t_setup = time.perf_counter()
    runner.setup_phase(grpo)
    grpo_setup = time.perf_counter() - t_setup
    for m in runner.train(args.grpo_steps):
        grpo_times.append(m["step_time"])
        print(f"grpo step {len(grpo_times)}: {m['step_time']*1000:.0f} ms  reward {m['reward_mean']:.2f}"
              f"  kl {m['kl']:.4f}  len {m['completion_length']:.0f}  format_err {m['format_error_rate']:.2f}", flush=True)
    ck = run_dir / "bench_ckpt"
    t_save = time.perf_counter()
    runner.save(ck)
    save_s = time.perf_counter() - t_save
    runner.close()

    def med(x):
        return statistics.median(x) if x else float("nan")

    summary = {
        "open_s": round(t_open, 2),
        "sft_steps": step,
        "sft_first_step_s": round(times[0], 2) if times else None,
        "sft_step_ms_median": round(1000 * med(times[1:]), 1),
        "sft_wall_s": round(sft_wall, 1),
        "sft_eval_s": round(ev_wall, 1),
        "sft_format_ok": round(1 - evals[-1]["format_error_rate"], 4),
        "sft_safe_rate": round(evals[-1]["safe_rate"], 4),
        "sft_correct_rate": round(evals[-1]["correct_rate"], 4),
        "rss_after_sft_gib": round(rss_after_sft, 2),
        "grpo_setup_s": round(grpo_setup, 2),
        "grpo_first_step_s": round(grpo_times[0], 2) if grpo_times else None,
        "grpo_step_ms_median": round(1000 * med(grpo_times[1:]), 1),
        "save_s": round(save_s, 2),
        "peak_rss_gib": round(rss_gib(), 2),
        "total_s": round(time.perf_counter() - t_start, 1),
        "evals": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in x.items()
                   if k in ("step", "elapsed", "format_error_rate", "safe_rate", "correct_rate", "hallucination_rate")}
                  for x in evals],
    }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
