"""Record real GRPO reward traces from the Tunix runner (tiny Gemma 3, CPU) and show what the
collapse detector does on them.

    python bench/record_tunix_traces.py [--out tests/data/tunix_traces] [--sft 300] [--steps 120]

One run of the real Tunix code path: SFT, then GRPO under the soft preset, then GRPO under a
deliberately harsh preset (every penalty x4: fabrication, wrong answers and format errors cost
far more than a cautious answer earns, which pushes a policy toward identical cautious groups),
with `[runner] record_rewards = true`.  The two GRPO phases' rewards are written as replay
traces (OUT/soft.jsonl, OUT/harsh.jsonl), then each is replayed through the detector with the
soft trace as its baseline, and the script prints, per trace: steps, groups per step, the share
of flat / spread / top groups, the detector's largest statistic against its threshold, and
whether (and where) it alarmed.  Takes about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curriculum.collapse import collapse_config, collapse_init, collapse_update  # noqa: E402
from runners.replay import load_trace  # noqa: E402

SPEC = """
[run]
name = "record-traces"
seed = {seed}
checkpoint_every = 1000
progress = false
wandb = "disabled"

[runner]
kind = "tunix"
record_rewards = true

[model]
preset = "tiny"

[data]
source = "synthetic"

[presets.harsh]
base = "medium"
hallucination_penalty = -40
hallucinated_trace_penalty = -60
incorrect_answer_penalty = -40
proof_inconsistency_penalty = -40
missing_trace_penalty = -40
format_mismatch_penalty = -40

[phases.sft]
kind = "sft"
max_steps = {sft}
eval = {{ enabled = false }}

[phases.soft]
kind = "grpo"
preset = "soft"
max_steps = {steps}
eval = {{ enabled = false }}

[phases.harsh]
kind = "grpo"
preset = "harsh"
max_steps = {steps}
eval = {{ enabled = false }}
"""


def detector_on(trace: list[dict], baseline: list[dict] | None) -> dict:
    cfg = collapse_config({"baseline": "previous_phase" if baseline else "warmup"})
    st = collapse_init(cfg)
    fired = None
    max_s = 0.0
    for i, rec in enumerate(trace, start=1):
        st, out = collapse_update(cfg, st, {**rec["metrics"], "reward_mean": _mean(rec["rewards"])}, baseline)
        max_s = max(max_s, out.statistic)
        if out.fired and fired is None:
            fired = (i, out.evidence.get("onset_phase_step"))
    return {"max_statistic": max_s, "threshold": cfg.h, "alarm": fired, "vetoes": st["vetoes"]}


def _mean(xs: list[float]) -> float:
    v = [x for x in xs if x == x]
    return sum(v) / len(v) if v else float("nan")


def summary(name: str, trace: list[dict], det: dict) -> str:
    n = len(trace)
    groups = sum(sum(r["metrics"].get(f"groups_{o}", 0) for o in ("flat", "spread", "top", "saturated")) for r in trace)
    share = {o: sum(r["metrics"].get(f"groups_{o}", 0) for r in trace) / max(groups, 1) for o in ("flat", "spread", "top", "saturated")}
    alarm = f"alarm at phase step {det['alarm'][0]} (onset ~{det['alarm'][1]})" if det["alarm"] else "no alarm"
    return (f"{name:>6}: {n} steps, {groups / max(n, 1):.1f} groups/step, flat {share['flat']:.2f} spread "
            f"{share['spread']:.2f} top {share['top']:.2f} saturated {share['saturated']:.2f}, mean reward "
            f"{sum(_mean(r['rewards']) for r in trace) / max(n, 1):+.1f}; detector max {det['max_statistic']:.2f} "
            f"vs threshold {det['threshold']:.2f}: {alarm}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "tests" / "data" / "tunix_traces"))
    ap.add_argument("--sft", type=int, default=300)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--analyse-only", action="store_true", help="replay traces already in --out")
    a = ap.parse_args()
    out = Path(a.out)
    if not a.analyse_only:
        with tempfile.TemporaryDirectory() as tmp:
            spec = Path(tmp) / "record.toml"
            spec.write_text(SPEC.format(seed=a.seed, sft=a.sft, steps=a.steps))
            rd = Path(tmp) / "run"
            env = dict(os.environ, WANDB_MODE="disabled")
            p = subprocess.run([sys.executable, "-m", "curriculum.cli", "run", str(spec), "--run-dir", str(rd),
                                "--no-report"], cwd=ROOT, env=env)
            if p.returncode != 0:
                print(f"the recording run failed (exit {p.returncode})", file=sys.stderr)
                return 1
            out.mkdir(parents=True, exist_ok=True)
            lines = [json.loads(x) for x in (rd / "rewards.jsonl").read_text().splitlines() if x.strip()]
            for phase in ("soft", "harsh"):
                with open(out / f"{phase}.jsonl", "w") as fh:
                    for x in lines:
                        if x.get("phase") == phase:
                            fh.write(json.dumps(x) + "\n")
            (out / "README.md").write_text(
                "Real GRPO reward traces of the tiny Gemma 3 on CPU (Tunix runner, `record_rewards = true`),\n"
                f"made by `python bench/record_tunix_traces.py --sft {a.sft} --steps {a.steps} --seed {a.seed}`:\n"
                "soft.jsonl under the soft preset, harsh.jsonl under the harsh preset that script declares\n"
                "(every penalty x4), continuing from the soft phase's weights.  Replay format (runners/replay.py).\n"
            )
    soft, harsh = load_trace(out / "soft.jsonl"), load_trace(out / "harsh.jsonl")
    base = [{**r["metrics"], "reward_mean": _mean(r["rewards"])} for r in soft]
    print(summary("soft", soft, detector_on(soft, None)))
    print(summary("harsh", harsh, detector_on(harsh, base)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
