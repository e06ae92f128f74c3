"""Does the adaptive curriculum pay off?  Arms from one SFT checkpoint, several seeds, same GRPO steps.

    python bench/study.py                                  # CPU default: 3 arms x 3 seeds x 102 steps, Tunix
    python bench/study.py --seeds 1 2 3 4 5 --grpo-steps 200   # more seeds, longer trials
    python bench/study.py --sft-run runs/my-sft            # start from an SFT run already made
    python bench/study.py --ray auto --ray-workers 2       # each trial a Ray task (local cluster)
    python bench/study.py --ray 10.0.0.5:6379              # ... or on a running Ray cluster

One SFT run of the spec is trained first (its GRPO phase ``soft`` given one step, only so that the
checkpoint taken when ``soft`` begins exists); every trial then branches from that checkpoint
(`curriculum resume SFT --from-phase soft --run-dir TRIAL --set run.seed=S --set ...`), so all
arms start GRPO from the very same weights and differ only in their schedule and seed.  Every
trial runs exactly ``--grpo-steps`` GRPO steps (``run.max_steps`` caps the adaptive arm):

  hand      the report's hand schedule scaled down: soft, then medium, then soft, fixed budgets
            (a third of the steps each, no guards)
  adaptive  the spec's own curriculum (examples/dipg.toml: escalate on `strong`, revert on
            `collapse` with rewind), soft's budget the whole study budget
  soft      soft penalties only: the hand schedule's budgets with the medium block at soft

Trials are subprocesses (`curriculum resume ...`), one after another by default; with ``--ray``
each is a Ray task needing one CPU (run directories must be on a filesystem every node sees).
At the end `curriculum compare` writes OUT/compare/compare.md and compare.png and the table is
printed, followed by each arm's final evaluation pooled over seeds and its difference from the
hand schedule (95% Wilson / Newcombe intervals), and each arm minus the hand schedule seed by seed
(paired item by item over the final evaluations' items) with the mean over seeds and a t interval
across seeds, the figure that counts training noise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

log = structlog.get_logger("study")

ARMS = ("hand", "adaptive", "soft")
BRANCH_PHASE = "soft"
RATES = (("safe_rate", "safe"), ("grounded_rate", "verbatim"), ("hallucination_rate", "halluc."),
         ("refusal_rate", "refusal"), ("consistency_rate", "consist."), ("format_error_rate", "format err."))
#: the rates of the per-seed table (arm against the first arm, same seed)
SEED_RATES = RATES[:3]


def arm_overrides(arm: str, grpo_steps: int, start_step: int) -> list[str]:
    """The --set overrides that turn the SFT run's spec into one arm (branching at soft)."""
    cap = [f"run.max_steps={start_step + grpo_steps}"]
    if arm == "adaptive":
        return cap + [f"phases.soft.max_steps={grpo_steps}", "phases.soft.eval.enabled=true"]
    a = grpo_steps // 3
    fixed = cap + [
        "transitions=[]",
        "phases.soft.next=medium",
        "phases.soft.min_dwell=0",
        f"phases.soft.max_steps={a}",
        # only the final evaluation is compared: skip the two in between (a third of a trial's time
        # on a busy 2-core machine)
        "phases.soft.eval.enabled=false",
        "phases.medium.eval.enabled=false",
        "phases.medium.next=recovery",
        "phases.medium.min_dwell=0",
        f"phases.medium.max_steps={a}",
        f"phases.recovery.max_steps={grpo_steps - 2 * a}",
    ]
    if arm == "hand":
        return fixed
    if arm == "soft":
        return fixed + ["phases.medium.preset=soft"]
    raise ValueError(f"unknown arm {arm!r}; expected one of {', '.join(ARMS)}")


def _cli(args: list[str], log_path: Path) -> tuple[int, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as f:
        rc = subprocess.call([sys.executable, "-m", "curriculum.cli", *args], stdout=f, stderr=subprocess.STDOUT,
                             env=env, cwd=str(ROOT))
    return rc, time.perf_counter() - t0


def run_trial(trial: dict[str, Any]) -> dict[str, Any]:
    """One trial: a branch of the SFT run (a subprocess), then its final evaluation."""
    out = Path(trial["run_dir"])
    args = ["resume", trial["sft_run"], "--from-phase", BRANCH_PHASE, "--run-dir", str(out),
            "--no-progress", "--no-report", "--set", f"run.seed={trial['seed']}"]
    for o in trial["overrides"]:
        args += ["--set", o]
    rc, secs = _cli(args, out.parent / f"{out.name}.log")
    res = {**trial, "rc": rc, "seconds": round(secs, 1), "host": os.uname().nodename, "worker_pid": os.getpid()}
    if rc == 0:
        res["final"] = final_eval(out)
    return res


def final_eval(run_dir: Path) -> dict[str, Any]:
    from curriculum.report import load_run

    run = load_run(run_dir)
    ev = [v for v in run.visits if v.eval]
    if not ev:
        return {}
    last = ev[-1]
    n = int(last.eval.get("n_items") or 0)
    grpo = sum(v.n_steps for v in run.visits if v.name != "sft")
    return {"phase": last.name, "n_items": n, "grpo_steps": grpo,
            "transitions": [f"{t.from_phase}->{t.to_phase}@{t.step} ({t.reason})" for t in run.transitions],
            **{k: last.eval_interval(k).value for k, _ in RATES if last.eval_interval(k) is not None}}


def _wilson(k: float, n: int) -> tuple[float, float, float]:
    if n <= 0:
        return (math.nan, math.nan, math.nan)
    z = 1.959963984540054
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (p, max(0.0, c - h), min(1.0, c + h))


def pooled(results: list[dict[str, Any]], arms: list[str]) -> str:
    """Each arm's final rates pooled over seeds, and its difference from the first arm."""
    from curriculum.report.load import Interval, _diff_interval

    iv: dict[str, dict[str, Interval]] = {}
    seeds: dict[str, int] = {}
    for arm in arms:
        done = [r["final"] for r in results if r["arm"] == arm and r.get("final")]
        seeds[arm] = len(done)
        iv[arm] = {}
        for key, _ in RATES:
            got = [(f[key] * f["n_items"], f["n_items"]) for f in done if key in f and f["n_items"]]
            k, n = sum(g[0] for g in got), sum(g[1] for g in got)
            iv[arm][key] = Interval(*_wilson(round(k), n))
    head = "| arm | seeds | " + " | ".join(f"final {lab}" for _, lab in RATES) + " |"
    L = ["Final evaluation pooled over seeds (95% Wilson intervals):", "", head,
         "|---|---:|" + "---|" * len(RATES)]
    for arm in arms:
        L.append(f"| {arm} | {seeds[arm]} | " + " | ".join(iv[arm][k].fmt() for k, _ in RATES) + " |")
    base = arms[0]
    L += ["", f"Difference from {base}, pooled (95% Newcombe intervals; one that excludes 0 is beyond noise):", "",
          "| arm | " + " | ".join(lab for _, lab in RATES) + " |", "|---|" + "---|" * len(RATES)]
    for arm in arms[1:]:
        L.append(f"| {arm} | " + " | ".join(_diff_interval(iv[base][k], iv[arm][k]).fmt(sign=True)
                                            for k, _ in RATES) + " |")
    return "\n".join(L) + "\n"


def _last_eval(run_dir: Path):
    from curriculum.report import load_run
    from curriculum.report.load import eval_samples

    run = load_run(run_dir)
    ev = [v for v in run.visits if v.eval]
    return (ev[-1], eval_samples(run, ev[-1])) if ev else (None, None)


def by_seed(results: list[dict[str, Any]], arms: list[str]) -> str:
    """Each arm against the first arm trained with the same seed (the same SFT weights, data and
    sampling seed; only the schedule differs), item by item over the final evaluations' common
    items (Newcombe's paired interval; the independent one when a run wrote no per-item rows),
    then the mean difference over seeds with a t interval across seeds (training noise)."""
    from scipy import stats

    from curriculum.report.load import _diff_interval, _paired_outcomes, paired_diff_interval

    base = arms[0]
    done = {(r["arm"], r["seed"]): Path(r["run_dir"]) for r in results if r["rc"] == 0 and r.get("final")}
    seeds = sorted({s for _, s in done})
    evals = {k: _last_eval(v) for k, v in done.items()}
    L = [f"Each arm minus {base} with the same seed, final evaluations item by item (95% Newcombe "
         "intervals, paired over the items both judged); last line: the mean over seeds with a 95% t "
         "interval across seeds:", "",
         "| arm | seed | items | " + " | ".join(lab for _, lab in SEED_RATES) + " |",
         "|---|---|---|" + "---|" * len(SEED_RATES)]
    for arm in arms[1:]:
        diffs: dict[str, list[float]] = {k: [] for k, _ in SEED_RATES}
        for s in seeds:
            if (base, s) not in evals or (arm, s) not in evals or evals[(base, s)][0] is None \
                    or evals[(arm, s)][0] is None:
                continue
            (va, rows_a), (vb, rows_b) = evals[(base, s)], evals[(arm, s)]
            cells, items = [], "independent"
            for key, _ in SEED_RATES:
                pairs = (_paired_outcomes(rows_a, rows_b, key, common=True)
                         if rows_a is not None and rows_b is not None else None)
                if pairs:
                    iv = paired_diff_interval(pairs)
                    items = f"paired, {len(pairs)}"
                else:
                    ia, ib = va.eval_interval(key), vb.eval_interval(key)
                    iv = _diff_interval(ia, ib) if ia is not None and ib is not None else None
                if iv is not None and math.isfinite(iv.value):
                    diffs[key].append(iv.value)
                cells.append(iv.fmt(digits=3, sign=True) if iv is not None else "–")
            L.append(f"| {arm} | {s} | {items} | " + " | ".join(cells) + " |")
        cells = []
        for key, _ in SEED_RATES:
            d = diffs[key]
            if len(d) >= 2:
                m = sum(d) / len(d)
                sd = math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1))
                h = float(stats.t.ppf(0.975, len(d) - 1)) * sd / math.sqrt(len(d))
                cells.append(f"{m:+.3f} [{m - h:+.3f}, {m + h:+.3f}]")
            else:
                cells.append(f"{d[0]:+.3f}" if d else "–")
        n = max((len(d) for d in diffs.values()), default=0)
        L.append(f"| {arm} | mean of {n} | | " + " | ".join(cells) + " |")
    return "\n".join(L) + "\n"


def train_sft(args: argparse.Namespace, out: Path) -> Path:
    from curriculum.spec import load_spec

    sft = out / "sft"
    if (sft / "state.json").exists():
        if json.loads((sft / "state.json").read_text()).get("status") != "finished":
            raise SystemExit(f"study: {sft} is an unfinished SFT run; `curriculum resume {sft}` finishes it, "
                             "or give a new --out")
        log.info("sft_reused", run_dir=str(sft))
        return sft
    spec = load_spec(args.spec, profile=args.profile)
    sets = [f"phases.{BRANCH_PHASE}.max_steps=1", f"phases.{BRANCH_PHASE}.eval.enabled=false"]
    if spec.runner_kind == "tunix":
        # pinned so that trials with other run seeds keep the same train/eval split and order
        sets.append(f"data.seed={args.data_seed}")
    sets += args.sft_set
    cmd = ["run", args.spec, "--run-dir", str(sft), "--no-progress", "--no-report"]
    if args.profile:
        cmd += ["--profile", args.profile]
    for s in sets:
        cmd += ["--set", s]
    log.info("sft_started", run_dir=str(sft), overrides=sets)
    rc, secs = _cli(cmd, out / "sft.log")
    if rc != 0:
        raise SystemExit(f"study: the SFT run failed (exit {rc}); see {out / 'sft.log'}")
    log.info("sft_finished", run_dir=str(sft), seconds=round(secs, 1))
    return sft


def branch_start_step(sft: Path) -> int:
    try:
        state = json.loads((sft / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"study: --sft-run {sft}: not a readable run directory ({e.__class__.__name__}: "
                         f"{getattr(e, 'strerror', None) or e}); give a run of the spec that reached "
                         f"'{BRANCH_PHASE}'") from None
    starts = [v for v in state.get("visits", []) if v.get("phase") == BRANCH_PHASE and v.get("checkpoint")]
    if not starts:
        raise SystemExit(f"study: {sft} has no checkpoint taken when phase '{BRANCH_PHASE}' began; "
                         f"give --sft-run a run of the spec that reached '{BRANCH_PHASE}'")
    return int(starts[-1].get("start_step", starts[-1].get("step", 0)))


def run_all(trials: list[dict[str, Any]], ray_address: str | None, workers: int) -> list[dict[str, Any]]:
    from tqdm import tqdm

    bar = tqdm(total=len(trials), desc="trials", unit="trial", file=sys.stderr, dynamic_ncols=True)
    results = []

    def done(r: dict[str, Any]) -> None:
        fin = r.get("final") or {}
        log.info("trial_finished", arm=r["arm"], seed=r["seed"], rc=r["rc"], seconds=r["seconds"], host=r["host"],
                 grpo_steps=fin.get("grpo_steps"), safe_rate=fin.get("safe_rate"),
                 hallucination_rate=fin.get("hallucination_rate"), run_dir=r["run_dir"])
        results.append(r)
        bar.update(1)

    if ray_address is None:
        for t in trials:
            log.info("trial_started", arm=t["arm"], seed=t["seed"], run_dir=t["run_dir"])
            done(run_trial(t))
    else:
        import ray

        if ray_address == "auto" and not os.environ.get("RAY_ADDRESS"):
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)  # a local cluster
        else:
            ray.init(address=ray_address, log_to_driver=False)
        remote = ray.remote(num_cpus=1, max_retries=0)(run_trial)
        pending = {}
        for t in trials:
            log.info("trial_submitted", arm=t["arm"], seed=t["seed"], run_dir=t["run_dir"])
            pending[remote.remote(t)] = t
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                done(ray.get(ref))
        ray.shutdown()
    bar.close()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", default=str(ROOT / "examples" / "dipg.toml"))
    ap.add_argument("--profile", default=None, help="spec profile (default: the spec's default_profile)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--grpo-steps", type=int, default=102, help="GRPO steps of every trial (default 102: what "
                    "the default run trains, soft 22 + medium 40 + recovery 40, about 9 min a trial on 2 cores)")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)}")
    ap.add_argument("--sft-run", help="branch from this run directory's checkpoint at the start of 'soft' "
                    "instead of training an SFT run first")
    ap.add_argument("--sft-set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra --set for the SFT run (repeatable), e.g. a pre-trained starting point")
    ap.add_argument("--data-seed", type=int, default=42, help="data.seed pinned in the SFT run (Tunix)")
    ap.add_argument("--out", default="runs/study", help="directory for the SFT run, trials and comparison")
    ap.add_argument("--ray", metavar="ADDRESS", help="run each trial as a Ray task: 'auto' (a local cluster, "
                    "or RAY_ADDRESS) or a cluster address")
    ap.add_argument("--ray-workers", type=int, default=2, help="CPUs of the local Ray cluster (--ray auto)")
    ap.add_argument("--summarise", action="store_true", help="only re-read OUT/trials.json's finished trials "
                    "and print the comparison and pooled tables again")
    args = ap.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        ap.error(f"--arms: unknown arm(s) {', '.join(bad) or '(none)'}; expected a subset of {', '.join(ARMS)}")
    if args.grpo_steps < 3:
        ap.error("--grpo-steps: need at least 3 (the hand schedule has three blocks)")
    if len(set(args.seeds)) != len(args.seeds):
        ap.error("--seeds: each seed once")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.summarise:
        try:
            results = json.loads((out / "trials.json").read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"study: --summarise: cannot read {out / 'trials.json'} ({e}); run the study first") from None
        for r in results:
            if r["rc"] == 0:
                r["final"] = final_eval(Path(r["run_dir"]))
        return summarise(results, [a for a in arms if any(r["arm"] == a for r in results)], out)
    sft = Path(args.sft_run).resolve() if args.sft_run else train_sft(args, out)
    start = branch_start_step(sft)
    trials = [
        {"arm": arm, "seed": s, "sft_run": str(sft), "run_dir": str(out / f"{arm}-s{s}"),
         "overrides": arm_overrides(arm, args.grpo_steps, start)}
        for s in args.seeds for arm in arms
    ]
    for t in trials:
        if Path(t["run_dir"]).exists():
            raise SystemExit(f"study: {t['run_dir']} already exists; give a new --out")
    results = run_all(trials, args.ray, args.ray_workers)
    (out / "trials.json").write_text(json.dumps(results, indent=2) + "\n")
    failed = [r for r in results if r["rc"] != 0]
    for r in failed:
        log.error("trial_failed", arm=r["arm"], seed=r["seed"], rc=r["rc"], log=str(Path(r["run_dir"]).parent / f"{Path(r['run_dir']).name}.log"))
    if summarise(results, arms, out):
        return 1
    wall = time.perf_counter() - t0
    print(f"{len(results) - len(failed)}/{len(results)} trials finished, {args.grpo_steps} GRPO steps each, seeds "
          f"{' '.join(map(str, args.seeds))}; wall time {wall / 60:.1f} min; in {out}")
    log.info("study_finished", trials=len(results), failed=len(failed), seconds=round(wall, 1), out=str(out))
    return 1 if failed else 0


def summarise(results: list[dict[str, Any]], arms: list[str], out: Path) -> int:
    """`curriculum compare` over the finished trials, then the pooled table; 1 if compare failed."""
    ok = sorted((r for r in results if r["rc"] == 0), key=lambda r: (arms.index(r["arm"]), r["seed"]))
    if len(ok) >= 2:
        rc, _ = _cli(["compare", *[r["run_dir"] for r in ok], "--out", str(out / "compare")], out / "compare.log")
        if rc != 0:
            print((out / "compare.log").read_text(), file=sys.stderr)
            return 1
        print((out / "compare" / "compare.md").read_text())
    summary = pooled(ok, arms) + ("\n" + by_seed(ok, arms) if len(arms) >= 2 else "")
    (out / "pooled.md").write_text(summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
