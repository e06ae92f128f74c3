"""Machine instructions per score() call, counted by valgrind (callgrind): a figure that does not
drift with the machine's load or speed, for comparing two versions of the grader.

    python bench/bench_instructions.py [--data DIR] [--passes N] [--top K]

Runs a child Python twice under ``valgrind --tool=callgrind``: once scoring the 100 upstream
responses once (imports, caches warmed), once scoring them 1 + N times; the difference over
100 x N calls is the instruction count of one call with warm per-context caches, as in
bench/bench_rewards.py.  ``--top K`` also lists the K grader functions with the most
instructions (inclusive of what they call), per call (compiled build only).  Needs valgrind on PATH (it prints why
when it is not) and takes about 20 s; the counts vary by a fraction of a percent between runs
(hash seeds), wall-clock figures by 10-30 % between runs and days on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
sys.argv = ["bench"]
import importlib.util
spec = importlib.util.spec_from_file_location("bench_rewards", {bench!r})
br = importlib.util.module_from_spec(spec)
spec.loader.exec_module(br)
from rewards import get_preset, score
preset = get_preset("medium")
pairs = br.load_pairs(Path({data!r}))
for _ in range(1 + {passes}):
    for response, item in pairs:
        score(response, item, preset)
"""


def _run(script: str, out: Path) -> int:
    r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c", script],
                       capture_output=True, text=True, cwd=ROOT)
    m = re.search(r"Collected : (\d+)", r.stderr)
    if r.returncode != 0 or m is None:
        raise SystemExit(f"valgrind failed (exit {r.returncode}): {r.stderr.strip()[-600:]}")
    return int(m.group(1))


def _inclusive(out: Path) -> dict[str, int]:
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(out)],
                          capture_output=True, text=True).stdout
    found: dict[str, int] = {}
    for line in text.splitlines():
        # a compiled function is CPyDef_<module>___<name> (a method: <module>___<Class>___<name>)
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+\S*?CPyDef_(\w+)", line)
        if m:
            name = m.group(2).replace("___", ".")
            found[name] = max(found.get(name, 0), int(m.group(1).replace(",", "")))
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.environ.get("UPSTREAM_EVAL_DIR", str(ROOT.parent / "shared" / "data" / "upstream-eval"))
    ap.add_argument("--data", default=default_dir)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--top", type=int, default=0)
    args = ap.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind not found on PATH: instruction counts need it (apt-get install valgrind)")
        return 1
    data = Path(args.data)
    if not any(data.glob("block*.jsonl")):
        print(f"no upstream responses in {data} (block*.jsonl): nothing to count")
        return 1
    from rewards.native import implementation

    print(f"grader: {implementation()}")
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / "one.out", Path(tmp) / "many.out"]
        counts = []
        for passes, out in zip((0, args.passes), outs):
            script = _CHILD.format(root=str(ROOT), bench=str(ROOT / "bench" / "bench_rewards.py"), data=str(data), passes=passes)
            counts.append(_run(script, out))
        calls = 100 * args.passes
        print(f"score(): {(counts[1] - counts[0]) / calls:,.0f} instructions per call "
              f"(100 upstream responses x {args.passes} passes, warm caches; callgrind)")
        if args.top and implementation() != "compiled":
            print("  (--top names compiled functions: the source runs inside the interpreter's frames)")
        elif args.top and shutil.which("callgrind_annotate"):
            a, b = _inclusive(outs[0]), _inclusive(outs[1])
            rows = sorted(((b[k] - a.get(k, 0)) / calls, k) for k in b)[::-1]
            for v, k in [r for r in rows if r[0] > 0][: args.top]:
                print(f"  {v:10,.0f}  {k}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
