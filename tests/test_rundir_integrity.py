"""One writer per run directory, and one integrity model for `status` and `resume`.

Real processes throughout: runs are killed with SIGKILL (from outside, or at named fault
points), resumes race each other, files are damaged the way a careless user or a bad disk
would.  For each damage, `status` must predict exactly what `resume` then does (continue from
which checkpoint, or refuse with the same repair), and a resumed run must end equal to an
uninterrupted one: every step once, no unparseable line, the same transitions.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curriculum.events import read_jsonl
from tests.test_crash_resume import _env, cli  # the same real-subprocess helpers

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "dipg_simulated.toml"
SETS = ["--set", "run.checkpoint_every=20", "--set", "phases.recovery.max_steps=60"]
SLOW = ["--set", "runner.step_seconds=0.02"]  # 279 steps: about 6 s, long enough to race

pytestmark = pytest.mark.slow


def popen(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "curriculum.cli", *args], cwd=ROOT, env=env or _env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_args(rd: Path, *extra: str) -> list[str]:
    return ["run", str(SPEC), *SETS, *extra, "--run-dir", str(rd), "--no-progress", "--no-report"]


def resume_args(rd: Path) -> list[str]:
    return ["resume", str(rd), "--no-progress", "--no-report"]


def outcome(rd: Path) -> dict:
    """What a finished run shows; the logs must parse whole."""
    ev, probs = read_jsonl(rd / "events.jsonl")
    assert not probs, probs
    met, probs = read_jsonl(rd / "metrics.jsonl")
    assert not probs, probs
    return {
        "transitions": [(e["from_phase"], e["to_phase"], e["step"], e["reason"]) for e in ev if e["event"] == "phase_transition"],
        "metrics": [(m["step"], m["phase"], m["metrics"]) for m in met],
    }


def status(rd: Path) -> tuple[int, str, dict]:
    text = cli("status", str(rd))
    js = cli("status", str(rd), "--json")
    return text.returncode, text.stdout, json.loads(js.stdout)


def one_line_error(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict:
    rd = tmp_path_factory.mktemp("straight") / "run"
    r = cli(*run_args(rd))
    assert r.returncode == 0, r.stderr
    out = outcome(rd)
    assert [s for s, _, _ in out["metrics"]] == list(range(1, 280)) and len(out["transitions"]) == 3
    return out


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """A run SIGKILLed at step 250 (phase recovery): the template every damage test copies."""
    rd = tmp_path_factory.mktemp("killed") / "run"
    r = cli(*run_args(rd), env=_env(CURRICULUM_CRASH_AT="step:250"))
    assert r.returncode == -signal.SIGKILL, r.stderr
    return rd


def copy_run(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    return dest


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen, limit: float = 60) -> None:
    t0 = time.time()
    while time.time() - t0 < limit:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {n} lines")


# ------------------------------------------------------------------ item 1: one writer


def test_a_refusal_names_the_new_holder_not_the_dead_one_it_replaced(tmp_path):
    """The race behind two simultaneous resumes: the winner has taken the lock but not yet
    rewritten the lock file, which still names the killed run.  The loser must name the winner."""
    import fcntl
    import socket
    import threading

    from curriculum import rundir
    from curriculum.errors import RunDirError

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / rundir.LOCK
    path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "command": "run (killed)"}) + "\n")
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the winner holds the lock ...

    def write_name():  # ... and writes its name a moment later
        time.sleep(0.3)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps({"pid": os.getpid(), "pid_start": rundir._proc_start(os.getpid()),
                                   "host": socket.gethostname(), "command": "resume (winner)"}) + "\n").encode(), 0)

    t = threading.Thread(target=write_name)
    t.start()
    try:
        with pytest.raises(RunDirError) as e:
            rundir.acquire(tmp_path, "resume (loser)")
    finally:
        t.join()
        os.close(fd)
    msg = str(e.value)
    assert "another process is writing this run directory" in msg
    assert f"pid {os.getpid()} " in msg and "resume (winner)" in msg and f"pid {dead.pid} " not in msg


def test_two_resumes_at_once_one_runs_one_is_refused_naming_it(tmp_path, straight):
    rd = tmp_path / "run"
    r = cli(*run_args(rd, *SLOW), env=_env(CURRICULUM_CRASH_AT="step:50"))
    assert r.returncode == -signal.SIGKILL
    a, b = popen(*resume_args(rd)), popen(*resume_args(rd))
    out = {p.pid: (p.wait(timeout=120), p.communicate()) for p in (a, b)}
    codes = sorted(rc for rc, _ in out.values())
    assert codes == [0, 1], out
    winner = next(pid for pid, (rc, _) in out.items() if rc == 0)
    loser_err = next(err for rc, (_, err) in out.values() if rc == 1)
    line = one_line_error(loser_err)
    assert "another process is writing this run directory" in line and f"pid {winner}" in line
    got = outcome(rd)
    assert [s for s, _, _ in got["metrics"]] == list(range(1, 280))
    assert got["metrics"] == straight["metrics"] and got["transitions"] == straight["transitions"]
    rc, text, _ = status(rd)
    assert rc == 0 and "integrity: ok" in text
    assert not (rd / ".lock").exists(), "a writer that ends releases its lock"


def test_resume_while_the_run_is_alive_is_refused_and_the_run_finishes_whole(tmp_path, straight):
    rd = tmp_path / "run"
    live = popen(*run_args(rd, *SLOW))
    wait_for_lines(rd / "metrics.jsonl", 30, live)
    rc, text, data = status(rd)  # a reader needs no lock, and names the writer
    assert f"writer: pid {live.pid}" in text and "(running)" in text and data["writer"]["pid"] == live.pid
    r = cli(*resume_args(rd))
    assert r.returncode == 1
    line = one_line_error(r.stderr)
    assert f"pid {live.pid}" in line and "curriculum run" in line
    assert live.wait(timeout=120) == 0, live.communicate()
    got = outcome(rd)
    assert got["metrics"] == straight["metrics"] and got["transitions"] == straight["transitions"]
    rc, text, _ = status(rd)
    assert rc == 0 and "integrity: ok" in text and "writer:" not in text


def test_the_lock_of_a_killed_writer_is_recovered_and_reported(tmp_path, straight):
    rd = tmp_path / "run"
    live = popen(*run_args(rd, *SLOW))
    wait_for_lines(rd / "metrics.jsonl", 70, live)
    os.kill(live.pid, signal.SIGKILL)  # from outside, at whatever the run was doing
    live.wait()
    info = json.loads((rd / ".lock").read_text())
    assert info["pid"] == live.pid, "the dead holder's lock file is still there"
    rc, text, _ = status(rd)
    assert "stale writer lock" in text and f"pid {live.pid}" in text
    r = cli(*resume_args(rd))
    assert r.returncode == 0, r.stderr
    ev, _ = read_jsonl(rd / "events.jsonl")
    stale = [e for e in ev if e["event"] == "stale_lock_recovered"]
    assert len(stale) == 1 and stale[0]["pid"] == live.pid and stale[0]["host"] == info["host"]
    got = outcome(rd)
    assert got["metrics"] == straight["metrics"] and got["transitions"] == straight["transitions"]


def test_a_branch_into_a_directory_another_branch_is_writing_is_refused(tmp_path, straight):
    rd = tmp_path / "run"
    assert cli(*run_args(rd, *SLOW)).returncode == 0
    nd = tmp_path / "branch"
    a = popen("resume", str(rd), "--from-phase", "medium", "--run-dir", str(nd), "--no-progress", "--no-report")
    wait_for_lines(nd / "metrics.jsonl", 170, a)
    r = cli("resume", str(rd), "--from-phase", "medium", "--run-dir", str(nd), "--no-progress", "--no-report")
    assert r.returncode == 1
    one_line_error(r.stderr)
    assert a.wait(timeout=120) == 0
    assert outcome(nd)["metrics"] == straight["metrics"]


# ------------------------------------------------------------------ item 2: kill after rename


def test_a_kill_after_a_checkpoint_rename_never_leaves_a_stale_checkpoint_to_branch_from(tmp_path, straight):
    rd = tmp_path / "run"
    r = cli(*run_args(rd), env=_env(CURRICULUM_CRASH_AT="checkpoint_renamed:9"))
    assert r.returncode == -signal.SIGKILL
    _, _, data = status(rd)
    r = cli(*resume_args(rd))
    assert r.returncode == 0, r.stderr
    ev, _ = read_jsonl(rd / "events.jsonl")
    resumed = [e for e in ev if e["event"] == "run_resumed"]
    assert Path(resumed[0]["checkpoint"]).name == Path(data["resume"]["checkpoint"]).name
    assert outcome(rd)["metrics"] == straight["metrics"]
    rc, text, _ = status(rd)
    assert rc == 0, text
    for phase in ("soft", "medium", "recovery"):
        nd = tmp_path / f"branch-{phase}"
        r = cli("resume", str(rd), "--from-phase", phase, "--run-dir", str(nd), "--no-progress", "--no-report")
        assert r.returncode == 0, r.stderr
        got = outcome(nd)  # parses whole: no torn or duplicated lines
        assert got["metrics"] == straight["metrics"] and got["transitions"] == straight["transitions"]


# ------------------------------------------------------------------ items 3-5: damage


def _newest_periodic(rd: Path) -> Path:
    return sorted((rd / "checkpoints").glob("step-*"))[-1]


def _offset(rd: Path, ck: Path, key: str) -> int:
    return json.loads((ck / "engine.json").read_text())["log_offsets"][key]


def cut_state(rd: Path) -> None:
    data = (rd / "state.json").read_bytes()
    (rd / "state.json").write_bytes(data[: len(data) // 2])


def _cut_log_mid_line_before_offset(rd: Path, name: str, key: str) -> None:
    off = _offset(rd, _newest_periodic(rd), key)
    data = (rd / name).read_bytes()
    (rd / name).write_bytes(data[: off - 7])


def cut_events(rd: Path) -> None:
    _cut_log_mid_line_before_offset(rd, "events.jsonl", "events")


def cut_metrics(rd: Path) -> None:
    _cut_log_mid_line_before_offset(rd, "metrics.jsonl", "metrics")


def edit_early_metrics_line(rd: Path) -> None:
    """Line 230 (after the recovery-start checkpoint, before step-240) gets a longer value."""
    lines = (rd / "metrics.jsonl").read_bytes().split(b"\n")
    rec = json.loads(lines[229])
    rec["metrics"]["reward_mean"] = 123.456789
    lines[229] = json.dumps(rec).encode()
    (rd / "metrics.jsonl").write_bytes(b"\n".join(lines))


def edit_first_metrics_line(rd: Path) -> None:
    lines = (rd / "metrics.jsonl").read_bytes().split(b"\n")
    lines[0] = lines[0].replace(b'"phase": "soft"', b'"phase": "soft" ')
    (rd / "metrics.jsonl").write_bytes(b"\n".join(lines))


def delete_boundary(rd: Path) -> None:
    shutil.rmtree(rd / "checkpoints" / "0001-medium-start")


def edit_spec(rd: Path) -> None:
    raw = json.loads((rd / "spec.resolved.json").read_text())
    raw["phases"]["recovery"]["max_steps"] = 61
    (rd / "spec.resolved.json").write_text(json.dumps(raw))


def state_points_outside(rd: Path) -> None:
    st_ = json.loads((rd / "state.json").read_text())
    st_["last_checkpoint"] = "../../elsewhere/step-0000240"
    (rd / "state.json").write_text(json.dumps(st_))


def runner_missing(rd: Path) -> None:
    shutil.rmtree(_newest_periodic(rd) / "runner")


def engine_garbled(rd: Path) -> None:
    p = _newest_periodic(rd) / "engine.json"
    p.write_bytes(p.read_bytes()[:100])


def runner_json_garbled(rd: Path) -> None:
    p = _newest_periodic(rd) / "runner" / "simulated.json"
    data = p.read_bytes()
    p.write_bytes(data.replace(b"2", b"7"))  # same size, other content


# (name, damage, what resume must do: "continue" or the refusal's words)
DAMAGES = [
    ("state.json cut in half", cut_state, "continue"),
    ("events.jsonl cut mid-line before the checkpoint", cut_events, "continue"),
    ("metrics.jsonl cut mid-line before the checkpoint", cut_metrics, "continue"),
    ("an earlier metrics line edited", edit_early_metrics_line, "continue"),
    ("a phase-start checkpoint deleted", delete_boundary, "continue"),
    ("state.json points outside the run directory", state_points_outside, "continue"),
    ("latest checkpoint without runner/", runner_missing, "continue"),
    ("latest checkpoint's engine.json garbled", engine_garbled, "continue"),
    ("latest checkpoint's runner file changed", runner_json_garbled, "continue"),
    ("spec.resolved.json edited", edit_spec, "edited by hand"),
    ("the first metrics line edited", edit_first_metrics_line, "continue"),
]


@pytest.mark.parametrize("label,damage,expect", DAMAGES, ids=[d[0] for d in DAMAGES])
def test_status_predicts_what_resume_does_for_each_damage(tmp_path, killed, straight, label, damage, expect):
    rd = copy_run(killed, tmp_path / "run")
    damage(rd)
    rc, text, data = status(rd)
    assert rc == 1 and "DAMAGED:" in text and "integrity: ok" not in text, text
    # (the killed run's stale .lock is taken over and released: the only file that may go)
    before = {p: p.read_bytes() for p in rd.rglob("*") if p.is_file() and p.name != ".lock"}
    r = cli(*resume_args(rd))
    if expect != "continue":
        assert r.returncode == 1
        line = one_line_error(r.stderr)
        assert expect in line and expect in data["resume"]["refuses"]
        assert data["resume"]["refuses"] in line, "status and resume give the same reason and repair"
        after = {p: p.read_bytes() for p in rd.rglob("*") if p.is_file() and p.name != ".lock"}
        assert after == before, "a refused resume changes nothing"
        return
    assert data["resume"]["refuses"] is None, data
    assert r.returncode == 0, r.stderr
    ev, _ = read_jsonl(rd / "events.jsonl")
    resumed = [e for e in ev if e["event"] == "run_resumed"]
    assert len(resumed) == 1 and Path(resumed[0]["checkpoint"]).name == Path(data["resume"]["checkpoint"]).name
    assert f"resume: continues from {data['resume']['checkpoint']}" in text
    for rel in data["resume"]["set_aside"]:  # set aside, never deleted
        assert (rd / "set-aside" / Path(rel).name).is_dir()
    repairs = [e["repair"] for e in ev if e["event"] == "resume_repaired"]
    assert all(any(rel in rp for rp in repairs) for rel in data["resume"]["set_aside"])
    if damage is edit_first_metrics_line:  # only the step-0 checkpoint still matches the logs
        assert data["resume"]["checkpoint"] == "checkpoints/0000-soft-start"
        assert len(data["resume"]["set_aside"]) >= 4
    got = outcome(rd)
    assert got["metrics"] == straight["metrics"], label
    assert got["transitions"] == straight["transitions"]
    rc, text, _ = status(rd)  # repaired for good; only a deleted phase start stays missing
    assert (rc == 0) == (damage is not delete_boundary), text
    if damage is delete_boundary:
        assert "0001-medium-start" in text and "cannot branch" in text


def test_a_broken_latest_checkpoint_does_not_trap_resume(tmp_path, killed, straight):
    """Item 5 the way a user meets it: resume after resume never picks the broken one again."""
    rd = copy_run(killed, tmp_path / "run")
    newest = _newest_periodic(rd)
    shutil.rmtree(newest / "runner")
    r = cli(*resume_args(rd), env=_env(CURRICULUM_CRASH_AT="step:5"))  # killed again, early
    assert r.returncode == -signal.SIGKILL
    assert not newest.exists() and (rd / "set-aside" / newest.name).is_dir()
    r = cli(*resume_args(rd))
    assert r.returncode == 0, r.stderr
    assert outcome(rd)["metrics"] == straight["metrics"]


# ------------------------------------------------------------------ item 4: random edits


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["events.jsonl", "metrics.jsonl"]), where=st.floats(0.0, 1.0),
       junk=st.binary(min_size=0, max_size=40))
def test_any_edit_of_a_log_is_either_cut_whole_or_refused(tmp_path_factory, killed, straight, which, where, junk):
    """Overwrite a random stretch of a log with random bytes (shorter, longer or the same
    length).  Resume either refuses, as status said, or ends with logs that parse whole and
    equal the uninterrupted run: it never appends after a torn line or keeps an edited one."""
    rd = copy_run(killed, tmp_path_factory.mktemp("edit") / "run")
    data = (rd / which).read_bytes()
    pos = int(where * (len(data) - 1))
    edited = data[:pos] + junk + data[pos + 20:]
    (rd / which).write_bytes(edited)
    _, _, verdict = status(rd)
    r = cli(*resume_args(rd))
    if verdict["resume"]["refuses"]:
        assert r.returncode == 1 and verdict["resume"]["refuses"] in one_line_error(r.stderr)
        return
    assert r.returncode == 0, r.stderr
    got = outcome(rd)
    assert got["metrics"] == straight["metrics"] and got["transitions"] == straight["transitions"]


def test_when_no_checkpoint_matches_the_logs_resume_refuses_as_status_says(tmp_path, straight):
    """A branch's first checkpoint is not at byte 0: an edit of its first line leaves nothing
    consistent, and resume refuses (restarting would throw the checkpoints away)."""
    rd = tmp_path / "run"
    assert cli(*run_args(rd)).returncode == 0
    nd = tmp_path / "branch"
    r = cli("resume", str(rd), "--from-phase", "medium", "--run-dir", str(nd), "--no-progress", "--no-report",
            env=_env(CURRICULUM_CRASH_AT="step:30"))
    assert r.returncode == -signal.SIGKILL
    edit_first_metrics_line(nd)
    rc, text, data = status(nd)
    assert rc == 1 and "no checkpoint is consistent with the logs" in data["resume"]["refuses"]
    assert f"resume: refuses: {data['resume']['refuses']}" in text
    before = {p: p.read_bytes() for p in nd.rglob("*") if p.is_file() and p.name != ".lock"}
    r = cli(*resume_args(nd))
    assert r.returncode == 1 and data["resume"]["refuses"] in one_line_error(r.stderr)
    assert {p: p.read_bytes() for p in nd.rglob("*") if p.is_file() and p.name != ".lock"} == before


def test_a_branch_from_a_damaged_phase_start_is_refused_with_the_reason(tmp_path, killed):
    rd = copy_run(killed, tmp_path / "run")
    (rd / "checkpoints" / "0001-medium-start" / "runner" / "simulated.json").write_text("{")
    nd = tmp_path / "branch"
    r = cli("resume", str(rd), "--from-phase", "medium", "--run-dir", str(nd), "--no-progress", "--no-report")
    assert r.returncode == 1
    line = one_line_error(r.stderr)
    assert "0001-medium-start" in line and "damaged" in line and "simulated.json" in line
    shutil.rmtree(rd / "checkpoints" / "0001-medium-start")
    r = cli("resume", str(rd), "--from-phase", "medium", "--run-dir", str(nd), "--no-progress", "--no-report")
    assert r.returncode == 1 and "is missing" in one_line_error(r.stderr)


def test_a_run_directory_from_before_digests_and_manifests_still_resumes(tmp_path, killed, straight):
    """Checkpoints without manifest.json or log digests, run.json without spec_digest (as the
    previous version wrote them): checked for what they have, and resumed exactly."""
    rd = copy_run(killed, tmp_path / "run")
    meta = json.loads((rd / "run.json").read_text())
    meta.pop("spec_digest")
    (rd / "run.json").write_text(json.dumps(meta))
    for ck in (rd / "checkpoints").iterdir():
        (ck / "manifest.json").unlink()
        eng = json.loads((ck / "engine.json").read_text())
        eng.pop("log_digests")
        (ck / "engine.json").write_text(json.dumps(eng))
    rc, text, data = status(rd)
    assert rc == 0 and "integrity: ok" in text, text
    r = cli(*resume_args(rd))
    assert r.returncode == 0, r.stderr
    got = outcome(rd)
    assert got["metrics"] == straight["metrics"] and got["transitions"] == straight["transitions"]


def test_a_kill_after_the_final_checkpoint_is_a_finished_run(tmp_path, straight):
    """Killed between the final checkpoint's rename and the state write: the run is complete.
    status says so, resume records it in state.json and has nothing to do."""
    ref = tmp_path / "ref"
    assert cli(*run_args(ref)).returncode == 0
    ev, _ = read_jsonl(ref / "events.jsonl")
    n = sum(e["event"] == "checkpoint_saved" for e in ev)  # the last one is final/
    rd = tmp_path / "run"
    r = cli(*run_args(rd), env=_env(CURRICULUM_CRASH_AT=f"checkpoint_renamed:{n}"))
    assert r.returncode == -signal.SIGKILL
    assert json.loads((rd / "state.json").read_text())["status"] == "running"
    rc, text, data = status(rd)
    assert "resume: nothing to do, the run finished" in text and data["resume"]["finished"]
    r = cli(*resume_args(rd))
    assert r.returncode == 1 and "already finished (max_steps)" in one_line_error(r.stderr)
    assert json.loads((rd / "state.json").read_text())["status"] == "finished"
    rc, text, _ = status(rd)
    assert rc == 0 and "integrity: ok" in text, text
    got = outcome(rd)
    assert got["metrics"] == straight["metrics"] and got["transitions"] == straight["transitions"]


@pytest.mark.parametrize("n", [1, 2])
def test_a_resume_killed_while_it_repairs_the_directory_can_be_resumed(tmp_path, killed, straight, n):
    """Killed after cutting one log (n=1) or both (n=2), with a broken checkpoint being set
    aside: the next resume finds the same checkpoint and ends equal to the uninterrupted run."""
    rd = copy_run(killed, tmp_path / "run")
    engine_garbled(rd)
    _, _, first = status(rd)
    r = cli(*resume_args(rd), env=_env(CURRICULUM_CRASH_AT=f"resume_cut:{n}"))
    assert r.returncode == -signal.SIGKILL
    _, _, again = status(rd)
    assert again["resume"]["checkpoint"] == first["resume"]["checkpoint"] and again["resume"]["refuses"] is None
    r = cli(*resume_args(rd))
    assert r.returncode == 0, r.stderr
    got = outcome(rd)
    assert got["metrics"] == straight["metrics"] and got["transitions"] == straight["transitions"]


HOLD = ("import sys, time; from pathlib import Path; from curriculum import rundir; "
        "lock = rundir.acquire(Path(sys.argv[1]), 'holder'); print('held', flush=True); time.sleep(120)")


@pytest.mark.parametrize("flock", [True, False], ids=["flock", "no-flock (pid and host decide)"])
def test_the_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path, monkeypatch, flock):
    from curriculum import rundir
    from curriculum.errors import RunDirError

    if not flock:  # a file system without flock: the recorded pid and host are all there is
        monkeypatch.setattr(rundir, "fcntl", None)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError) as e:
            rundir.acquire(tmp_path, "second")
        assert f"pid {holder.pid}" in str(e.value) and "`holder`" in str(e.value)
        assert rundir.lock_holder(tmp_path)["state"] == "alive"
    finally:
        holder.kill()
        holder.wait()
    assert rundir.lock_holder(tmp_path)["state"] == "dead"
    lock = rundir.acquire(tmp_path, "second")
    assert lock.stale is not None and lock.stale["pid"] == holder.pid
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / ".lock").exists()


def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path, killed):
    rd = copy_run(killed, tmp_path / "run")
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    (rd / ".lock").unlink(missing_ok=True)
    (rd / ".lock").symlink_to(victim)
    r = cli(*resume_args(rd))
    assert r.returncode == 1 and "symbolic link" in one_line_error(r.stderr)
    assert victim.read_text() == "keep me"


def test_a_checkpoint_that_links_out_of_the_run_directory_is_never_resumed_from(tmp_path, killed, straight):
    rd = copy_run(killed, tmp_path / "run")
    newest = _newest_periodic(rd)
    outside = tmp_path / "elsewhere"
    shutil.move(str(newest), outside)
    later = rd / "checkpoints" / "step-0000260"  # newer than anything real: it would be chosen
    later.symlink_to(outside, target_is_directory=True)
    rc, text, data = status(rd)
    assert rc == 1 and "step-0000260 is damaged (a symbolic link out of the run directory" in text
    assert data["resume"]["checkpoint"] != "checkpoints/step-0000260"
    r = cli(*resume_args(rd))
    assert r.returncode == 0, r.stderr
    assert (outside / "engine.json").exists(), "the link's target is left alone"
    assert outcome(rd)["metrics"] == straight["metrics"]
