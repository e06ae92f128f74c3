"""`curriculum` command line: validate, run, resume, status, graph, report, score."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from curriculum.errors import CurriculumError, RunDirError, SpecError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="curriculum",
        description="Declarative curriculum engine with adaptive penalty annealing for RL post-training.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    def spec_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("spec", help="curriculum spec (TOML)")
        sp.add_argument("--profile", help="profile from [profiles.NAME] (default: run.default_profile)")
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec value, e.g. --set phases.soft.max_steps=50 (repeatable)")

    v = sub.add_parser("validate", help="check a spec without training")
    spec_args(v)

    r = sub.add_parser("run", help="run a curriculum")
    spec_args(r)
    r.add_argument("--run-dir", help="run directory (default: runs/NAME-TIMESTAMP)")
    r.add_argument("--replay", metavar="TRACE.jsonl", help="replay a recorded trace instead of training")
    r.add_argument("--start-phase", help="begin in this phase at step 0")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--no-report", action="store_true", help="do not write report.png/report.md at the end")

    rs = sub.add_parser("resume", help="continue a run after a crash, or branch from a phase checkpoint")
    rs.add_argument("run_dir")
    rs.add_argument("--from-phase", help="branch from the checkpoint taken when this phase began")
    rs.add_argument("--run-dir", dest="new_dir", help="new directory for a branch (--from-phase)")
    rs.add_argument("--spec", help="resume with a changed spec (only safe changes are accepted)")
    rs.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="safe override when resuming, e.g. a guard threshold (repeatable)")
    rs.add_argument("--no-progress", action="store_true")
    rs.add_argument("--no-report", action="store_true")

    st = sub.add_parser("status", help="summarise a run directory; non-zero exit if it is damaged")
    st.add_argument("run_dir")
    st.add_argument("--json", action="store_true")

    g = sub.add_parser("graph", help="print the phase machine as Mermaid text")
    spec_args(g)

    rp = sub.add_parser("report", help="write report.png and report.md into a run directory")
    rp.add_argument("run_dir")

    cp = sub.add_parser("compare", help="compare run directories: one table (compare.md) and one picture (compare.png)")
    cp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    cp.add_argument("--out", required=True, help="directory to write compare.md and compare.png into")

    sc = sub.add_parser("score", help="score responses offline (JSONL)")
    sc.add_argument("args", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["score"]:
        from rewards.cli import main as score_main

        return score_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except SpecError as e:
        print(f"error: {len(e.problems)} problem(s) in the spec:" if len(e.problems) > 1 else "error:", file=sys.stderr)
        for prob in e.problems:
            print(f"  {prob}" if len(e.problems) > 1 else prob, file=sys.stderr)
        return 2
    except CurriculumError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; resume with `curriculum resume RUN_DIR`", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug of ours: say so in one paragraph, keep the trace
        fd, path = tempfile.mkstemp(prefix="curriculum-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            traceback.print_exc(file=f)
        print(
            f"error: internal error ({type(e).__name__}: {e}). This is a bug in curriculum, not in your "
            f"input; the traceback is in {path}. Anything already checkpointed is safe: "
            "`curriculum resume RUN_DIR` continues from the last checkpoint.",
            file=sys.stderr,
        )
        return 3


def _dispatch(args: argparse.Namespace) -> int:
    from curriculum.spec import load_spec

    if args.cmd == "validate":
        spec = load_spec(args.spec, profile=args.profile, overrides=args.overrides)
        n = len(spec.phases)
        print(
            f"{args.spec}: valid ({n} phases: {', '.join(spec.phases)}; {len(spec.transitions)} guarded "
            f"transitions; runner {spec.runner_kind}; profile {spec.profile or '-'})"
        )
        return 0
    if args.cmd == "graph":
        from curriculum.machine import mermaid

        spec = load_spec(args.spec, profile=args.profile, overrides=args.overrides)
        sys.stdout.write(mermaid(spec))
        return 0
    if args.cmd == "run":
        return _run(args)
    if args.cmd == "resume":
        return _resume(args)
    if args.cmd == "status":
        from curriculum.status import run_status

        text, ok, data = run_status(Path(args.run_dir))
        if args.json:
            print(json.dumps(data, indent=2, default=str))
        else:
            print(text)
        return 0 if ok else 1
    if args.cmd == "report":
        return _report(Path(args.run_dir))
    if args.cmd == "compare":
        from curriculum.compare import compare

        md, png, text = compare(args.run_dirs, args.out)
        print(text)
        print(f"wrote {md} and {png}")
        return 0
    raise AssertionError(args.cmd)


def _runner_for(spec: Any, replay: str | None) -> Any:
    if replay is None:
        return None
    from runners.replay import ReplayRunner

    return ReplayRunner(trace=replay)


def _run(args: argparse.Namespace) -> int:
    from curriculum.engine import Engine
    from curriculum.spec import load_spec

    spec = load_spec(args.spec, profile=args.profile, overrides=args.overrides)
    if args.replay:
        from runners.replay import load_trace

        load_trace(Path(args.replay))  # fail fast, before creating a run directory
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / f"{spec.model.run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not args.run_dir:  # run.name is validated; this holds even for a spec built in code
        from curriculum.engine import _stay_inside

        _stay_inside(Path("runs"), run_dir)
    meta = {"replay": str(Path(args.replay).resolve()) if args.replay else None}
    text = Path(args.spec).read_text(encoding="utf-8")
    eng = Engine.create(
        spec,
        run_dir,
        runner_override=_runner_for(spec, args.replay),
        start_phase=args.start_phase,
        progress=False if args.no_progress else None,
        spec_text=text,
        meta=meta,
    )
    primary = eng.cluster.is_primary  # several processes: process 0 speaks for the run
    if primary:
        print(f"run directory: {eng.run_dir}", file=sys.stderr)
    eng.run()
    _process_line(eng)
    return _finish(eng.run_dir, args.no_report) if primary else 0


def _resume(args: argparse.Namespace) -> int:
    from curriculum.engine import branch_engine, load_run_spec, resume_engine

    run_dir = Path(args.run_dir)
    meta = _meta(run_dir)
    replay = meta.get("replay")
    runner = _runner_for(None, replay)
    progress = False if args.no_progress else None
    if args.from_phase:
        if not args.new_dir:
            raise CurriculumError("--from-phase needs --run-dir NEW_DIR: a branch never overwrites the original run")
        eng = branch_engine(run_dir, args.from_phase, Path(args.new_dir), runner_override=runner, progress=progress,
                            spec_path=args.spec, overrides=args.overrides)
        out = Path(args.new_dir)
    else:
        if args.new_dir:
            raise CurriculumError("--run-dir is only for branching with --from-phase; plain resume continues in place")
        spec = None
        masked: list[str] = []
        if args.spec or args.overrides:
            from curriculum.compat import check_compatible, masked_overrides

            old = load_run_spec(run_dir)
            spec = check_compatible(old, args.spec, args.overrides, {**meta, "_run_dir": str(run_dir)})
            if args.spec:
                masked = masked_overrides(args.spec, args.overrides, {**meta, "_run_dir": str(run_dir)})
        eng = resume_engine(run_dir, runner_override=runner, progress=progress, spec=spec)
        if spec is not None and eng.cluster.is_primary:
            # recorded only once the resume is sure to go ahead: a refused resume changes nothing
            from curriculum.rundir import write_spec
            from curriculum.state import atomic_write_json

            meta["spec_digest"] = write_spec(run_dir, spec.raw, meta)
            for line in masked:
                print(f"warning: {line}", file=sys.stderr)
            meta["resumed_with_changes"] = (meta.get("resumed_with_changes") or []) + [
                {"spec": args.spec, "overrides": args.overrides, "masked": masked,
                 "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            ]
            if args.spec:
                meta["spec_path"] = str(Path(args.spec).resolve())
                # the source this run now follows (what the next --spec is compared with)
                (run_dir / "spec.source.toml").write_text(Path(args.spec).read_text(encoding="utf-8"), encoding="utf-8")
            meta["overrides"] = list(meta.get("overrides") or []) + list(args.overrides)
            atomic_write_json(run_dir / "run.json", meta)
        out = run_dir
    if eng.cluster.is_primary:
        print(f"resuming {out} at step {eng.state.global_step} in phase {eng.state.phase}", file=sys.stderr)
    eng.run()
    _process_line(eng)
    return _finish(out, args.no_report) if eng.cluster.is_primary else 0


def _process_line(eng: Any) -> None:
    """Several processes: each says where it ended, so every host's log shows they agreed."""
    if not eng.cluster.multi:
        return
    st = eng.state
    moves = ", ".join(f"{t['from_phase']}->{t['to_phase']}@{t['step']}" for t in st.transitions) or "none"
    print(
        f"process {eng.cluster.index}/{eng.cluster.count}: {st.status} ({st.finish_reason}) at step "
        f"{st.global_step}; transitions: {moves}; penalty scale {st.penalty_scale:g}",
        file=sys.stderr,
    )


def _meta(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{run_dir}: not a run directory (missing run.json)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise RunDirError(f"{run_dir}: damaged run directory: run.json ({e})") from None


def _finish(run_dir: Path, no_report: bool) -> int:
    try:
        from curriculum import report

        run = report.load_run(run_dir)
        print(report.summary_table(run))
        if not no_report:
            png, md = report.make_report(run_dir)
            print(f"report: {png}  {md}", file=sys.stderr)
    except ImportError:
        pass
    return 0


def _report(run_dir: Path) -> int:
    from curriculum import report

    png, md = report.make_report(run_dir)
    print(f"wrote {png} and {md}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
