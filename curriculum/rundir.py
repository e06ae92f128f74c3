"""The run directory as a small database: its writer's lock and its integrity model.

Lock.  One process writes a run directory: `run`, `resume` and a branch's new directory take
`RUN_DIR/.lock` (an exclusive `flock` on that file, which the kernel drops when its holder dies,
plus the holder's pid, host, start time and command written inside it for the error message and
for `status`).  Under several processes only process 0 takes it.  Reading commands (`status`,
`report`) never take it.  A second writer fails at once with one line naming the
holder.  A lock file whose holder died without releasing it is taken over, and the takeover is
reported (`stale_lock_recovered`).  On a file system without `flock`, the pid and host decide:
a holder on this host whose process is gone (or whose pid now belongs to a newer process) is
stale; a holder on another host is trusted until the user deletes the file.

Integrity.  `inspect(run_dir)` runs every check once and says what `resume` will do; `status`
prints that verdict and `resume` acts on it, so the two never disagree.  The checks:
  - `spec.resolved.json` has the sha256 recorded in `run.json` (`spec_digest`);
  - every checkpoint's `manifest.json` matches its files: names and sizes of all files, and the
    sha256 of every file up to SMALL_FILE bytes (the engine's JSON and a runner's metadata; the
    big array files of an orbax checkpoint are covered by their sizes only, so a check stays
    cheap for big models);
  - each checkpoint's log offsets fall on line boundaries and the logs' first bytes up to them
    still have the sha256 the checkpoint recorded (so a cut only ever removes whole lines after
    content that is exactly what the checkpoint saw);
  - paths in state.json stay inside `RUN_DIR/checkpoints`;
  - every phase-start checkpoint the resumed state lists is present and intact (branching needs it).
Resume continues from the newest checkpoint that passes, says which, and sets aside (moves to
`RUN_DIR/set-aside/`, never deletes) the checkpoints that do not pass, so that none is picked
again or stands in the way of a name the continued run writes; it refuses, naming the repair,
when nothing safe is left.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curriculum.errors import RunDirError
from curriculum.events import read_jsonl
from curriculum.state import RunState, atomic_write_json, atomic_write_text, dumps, fsync_dir, load_state

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK = ".lock"
CKPT_DIR = "checkpoints"
SET_ASIDE = "set-aside"
MANIFEST = "manifest.json"
SMALL_FILE = 1 << 20  # files up to 1 MiB are hashed; bigger ones are covered by their size
LOGS = (("events", "events.jsonl"), ("metrics", "metrics.jsonl"))


# ---------------------------------------------------------------------- the writer's lock


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of a process (field 22 of /proc/PID/stat), to tell pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_state(info: dict[str, Any]) -> str:
    """'alive', 'dead' or 'unknown' (held from another host) for a lock file's holder."""
    if info.get("host") != socket.gethostname():
        return "unknown"
    pid = int(info.get("pid") or 0)
    if pid <= 0 or not _alive(pid):
        return "dead"
    start = _proc_start(pid)
    if start is not None and info.get("pid_start") not in (None, start):
        return "dead"  # the pid now belongs to another process
    return "alive"


def describe_holder(info: dict[str, Any]) -> str:
    return (f"pid {info.get('pid')} on host {info.get('host')}, `{info.get('command') or '?'}`, "
            f"since {info.get('since') or '?'}")


def _read_info(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 65536)
        info = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


class RunLock:
    """The held lock of one run directory; `release()` (idempotent) gives it up."""

    def __init__(self, path: Path, fd: int, stale: dict[str, Any] | None):
        self.path = path
        self.fd: int | None = fd
        self.stale = stale  # the dead holder this lock was taken over from, if any

    def moved(self, run_dir: Path) -> None:
        """The directory was renamed into place (a new run): the same inode, a new path."""
        self.path = Path(run_dir) / LOCK

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding it: see the inode check in acquire()
        except OSError:
            pass
        try:
            os.close(self.fd)
        except OSError:
            pass
        self.fd = None


def acquire(run_dir: Path, command: str) -> RunLock:
    """Take RUN_DIR's writer lock or raise RunDirError naming the process that holds it."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK
    me = {
        "pid": os.getpid(),
        "pid_start": _proc_start(os.getpid()),
        "host": socket.gethostname(),
        "command": command,
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for _ in range(20):
        try:
            # never through a symlink: the lock file is truncated and rewritten
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            why = "it is a symbolic link; remove it" if e.errno == errno.ELOOP else (e.strerror or str(e))
            raise RunDirError(f"{run_dir}: cannot create the run directory's lock {path} ({why})") from None
        prev = _read_info(fd)
        try:
            if fcntl is None:
                raise OSError(errno.ENOLCK, "no flock")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _current_holder(fd, prev)
            os.close(fd)
            raise RunDirError(_busy(run_dir, holder)) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise RunDirError(f"{run_dir}: cannot lock the run directory ({e.strerror or e})") from None
            # no flock here: the pid and host in the file decide
            if prev and prev.get("pid") != os.getpid() and holder_state(prev) != "dead":
                os.close(fd)
                raise RunDirError(_busy(run_dir, prev)) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # released (and unlinked) between our open and our flock: try again
            os.close(fd)
            continue
        prev = _read_info(fd)  # what a holder that died without releasing left behind
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(me) + "\n").encode())
        os.fsync(fd)
        stale = prev if prev and prev.get("pid") != os.getpid() else None
        return RunLock(path, fd, stale)
    raise RunDirError(f"{run_dir}: could not take the run directory's lock (it kept changing hands)")


def _current_holder(fd: int, before: dict[str, Any], wait: float = 2.0) -> dict[str, Any]:
    """Who holds the lock we just failed to take.  What the file said before our flock may be a
    dead predecessor's name (the new holder took the lock but had not yet rewritten the file), so
    read it again until it names a live process (or names a host we cannot check), for at most
    ``wait`` seconds: the holder writes its name right after taking the lock."""
    deadline = time.monotonic() + wait
    info = before
    while True:
        cur = _read_info(fd)
        if cur:
            info = cur
            if holder_state(cur) != "dead":
                return cur
        if time.monotonic() >= deadline:
            return info
        time.sleep(0.02)


def _busy(run_dir: Path, info: dict[str, Any]) -> str:
    who = describe_holder(info) if info else "a process that has not written its name yet"
    extra = ""
    if info and holder_state(info) == "unknown":
        extra = f"; if that process is gone, delete {run_dir / LOCK}"
    return (f"{run_dir}: another process is writing this run directory ({who}); a run directory has "
            f"one writer at a time: wait for it to end, or stop it and `curriculum resume {run_dir}`{extra}")


def lock_holder(run_dir: Path) -> dict[str, Any] | None:
    """The recorded holder of RUN_DIR's lock, with 'state' (alive/dead/unknown); no locking."""
    try:
        raw = (Path(run_dir) / LOCK).read_text(encoding="utf-8")
        info = json.loads(raw) if raw.strip() else None
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    return {**info, "state": holder_state(info)}


# ---------------------------------------------------------------------- digests


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prefix_digests(path: Path, offsets: set[int]) -> dict[int, str]:
    """sha256 of the first N bytes of a file for each N in `offsets`, in one pass.

    An offset past the end of the file has no entry.
    """
    out: dict[int, str] = {}
    want = sorted(o for o in offsets if o >= 0)
    h = hashlib.sha256()
    pos = 0
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return {0: h.hexdigest()} if 0 in want else {}
    with f:
        for off in want:
            while pos < off:
                block = f.read(min(1 << 20, off - pos))
                if not block:
                    return out
                h.update(block)
                pos += len(block)
            out[off] = h.copy().hexdigest()
    return out


def ends_a_line(path: Path, offset: int) -> bool:
    if offset <= 0:
        return True
    try:
        with open(path, "rb") as f:
            f.seek(offset - 1)
            return f.read(1) == b"\n"
    except OSError:
        return False


def write_spec(run_dir: Path, raw: dict[str, Any], meta: dict[str, Any] | None = None) -> str:
    """Write spec.resolved.json atomically; returns its sha256, to record in run.json.

    With `meta` (a resume that changes the spec of an existing run), run.json first records the
    new digest as pending, so that a kill between the two writes leaves a pair that still checks.
    """
    text = dumps(raw) + "\n"
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if meta is not None:
        atomic_write_json(Path(run_dir) / "run.json", {**meta, "spec_digest_pending": digest})
    atomic_write_text(Path(run_dir) / "spec.resolved.json", text)
    return digest


def write_manifest(ckpt: Path) -> None:
    """Record every file of a checkpoint (size; sha256 when small) in its manifest.json."""
    files: dict[str, dict[str, Any]] = {}
    for p in sorted(ckpt.rglob("*")):
        if not p.is_file() or p.name == MANIFEST:
            continue
        rel = p.relative_to(ckpt).as_posix()
        size = p.stat().st_size
        entry: dict[str, Any] = {"size": size}
        if size <= SMALL_FILE:
            entry["sha256"] = sha256_file(p)
        files[rel] = entry
    atomic_write_json(ckpt / MANIFEST, {"version": 1, "small_file": SMALL_FILE, "files": files})


def check_manifest(ckpt: Path) -> str | None:
    """None when the checkpoint's files match its manifest, else what differs.  A checkpoint
    written before manifests existed (none there) is checked for engine.json and runner/ only."""
    mpath = ckpt / MANIFEST
    if not mpath.exists():
        return None
    try:
        files = json.loads(mpath.read_text(encoding="utf-8"))["files"]
        if not isinstance(files, dict):
            raise ValueError("no file list")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"its manifest.json is unreadable ({e})"
    for rel, entry in files.items():
        p = ckpt / rel
        try:
            size = p.stat().st_size
        except OSError:
            return f"{rel} is missing"
        if size != entry.get("size"):
            return f"{rel} has {size} bytes, {entry.get('size')} were saved"
        if "sha256" in entry and sha256_file(p) != entry["sha256"]:
            return f"{rel} was changed after it was saved (sha256 differs)"
    return None


# ---------------------------------------------------------------------- inspection


@dataclass
class Checkpoint:
    rel: str  # "checkpoints/NAME"
    state: RunState | None = None
    problem: str | None = None  # None: usable for resume
    log_problem: bool = False  # its own files are fine; the logs no longer match it

    def key(self) -> tuple:
        s = self.state
        assert s is not None
        return (s.global_step, s.phase_ordinal, len(s.transitions), s.status == "finished")


@dataclass
class Verdict:
    """What the integrity checks found and what `curriculum resume` does about it."""

    damage: list[str] = field(default_factory=list)  # status says DAMAGED
    notes: list[str] = field(default_factory=list)  # expected after a kill; resume tidies them
    top: RunState | None = None  # state.json, when readable and trusted
    checkpoints: list[Checkpoint] = field(default_factory=list)
    chosen: Checkpoint | None = None  # where resume continues from
    set_aside: list[str] = field(default_factory=list)  # checkpoint rels resume moves aside
    cuts: dict[str, int] = field(default_factory=dict)  # log name -> bytes resume cuts off
    refusal: str | None = None  # resume refuses with this (it names the repair)
    finished: bool = False
    start_phase: str | None = None  # no checkpoint at all: resume restarts here

    @property
    def ok(self) -> bool:
        return not self.damage and self.refusal is None

    def resume_line(self, run_dir: Path) -> str:
        if self.refusal:
            return f"resume: refuses: {self.refusal}"
        if self.finished:
            return "resume: nothing to do, the run finished"
        if self.chosen is None:
            return f"resume: starts again from phase '{self.start_phase}' (no checkpoint yet)"
        s = self.chosen.state
        assert s is not None
        text = f"resume: continues from {self.chosen.rel} (step {s.global_step}, phase {s.phase})"
        if self.set_aside:
            text += f"; sets aside {', '.join(self.set_aside)} into {SET_ASIDE}/"
        return text


def _inside(run_dir: Path, rel: Any) -> bool:
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute():
        return False
    root = (run_dir / CKPT_DIR).resolve()
    try:
        return (run_dir / rel).resolve().relative_to(root) is not None and (run_dir / rel).resolve() != root
    except ValueError:
        return False


def _load_checkpoint(run_dir: Path, p: Path) -> Checkpoint:
    ck = Checkpoint(rel=f"{CKPT_DIR}/{p.name}")
    if p.is_symlink() or not _inside(run_dir, ck.rel):
        ck.problem = "a symbolic link out of the run directory"
        return ck
    try:
        ck.state = load_state(p / "engine.json")
    except FileNotFoundError:
        ck.problem = "engine.json missing"
        return ck
    except ValueError as e:
        ck.problem = str(e).replace(str(run_dir) + "/", "")
        return ck
    if not (p / "runner").is_dir():
        ck.problem = "runner files missing"
        return ck
    bad = check_manifest(p)
    if bad:
        ck.problem = bad
    return ck


def intact_checkpoint(run_dir: Path, p: Path) -> RunState | None:
    """The engine state of checkpoint folder ``p`` when its files pass the checks, else None."""
    ck = _load_checkpoint(Path(run_dir), Path(p))
    return ck.state if ck.problem is None else None


def inspect(run_dir: Path) -> Verdict:
    run_dir = Path(run_dir)
    v = Verdict()
    fatal: list[str] = []

    meta: dict[str, Any] = {}
    for name in ("run.json", "spec.resolved.json"):
        try:
            obj = json.loads((run_dir / name).read_text(encoding="utf-8"))
            if name == "run.json" and isinstance(obj, dict):
                meta = obj
        except FileNotFoundError:
            fatal.append(f"{name} is missing: this is not a complete run directory")
        except (OSError, ValueError) as e:
            fatal.append(f"{name} is unreadable ({e}); the spec cannot be recovered from it")
    recorded = meta.get("spec_digest")
    if recorded and (run_dir / "spec.resolved.json").exists():
        actual = sha256_file(run_dir / "spec.resolved.json")
        if actual not in (recorded, meta.get("spec_digest_pending")):
            fatal.append(
                f"spec.resolved.json does not have the sha256 recorded in run.json ({actual[:12]} vs "
                f"{recorded[:12]}): it was edited by hand. Put back the file as the run wrote it; a run's "
                f"spec is changed with `curriculum resume {run_dir} --spec FILE` (or --set), which checks "
                "the change is safe"
            )

    try:
        v.top = load_state(run_dir / "state.json")
    except FileNotFoundError:
        v.damage.append("state.json is missing: resume rebuilds it from the newest intact checkpoint")
    except ValueError as e:
        v.damage.append(f"state.json is damaged ({e}); resume rebuilds it from the newest intact checkpoint")
    if v.top is not None:
        paths = [v.top.last_checkpoint] if v.top.last_checkpoint else []
        paths += [x.get("checkpoint") for x in v.top.visits if isinstance(x, dict)]
        outside = [p for p in paths if p is not None and not _inside(run_dir, p)]
        if outside:
            v.damage.append(
                f"state.json names checkpoint paths outside {run_dir / CKPT_DIR} ({', '.join(map(str, outside))}); "
                "resume ignores them and rebuilds state.json from the newest intact checkpoint"
            )
            v.top = None

    root = run_dir / CKPT_DIR
    entries = sorted(root.iterdir()) if root.is_dir() else []
    for p in entries:
        if p.name.startswith(".tmp-"):
            v.notes.append(f"{CKPT_DIR}/{p.name}: an unfinished checkpoint write (a kill mid-save); resume removes it")
        elif p.is_dir() and not p.name.startswith("."):
            v.checkpoints.append(_load_checkpoint(run_dir, p))
    if (run_dir / SET_ASIDE).is_dir() and any((run_dir / SET_ASIDE).iterdir()):
        v.notes.append(f"{SET_ASIDE}/ holds checkpoints an earlier resume moved out of the way; delete them when not needed")

    # log prefixes: one pass per log over every checkpoint's offset
    sizes = {key: (run_dir / fname).stat().st_size if (run_dir / fname).exists() else None for key, fname in LOGS}
    offsets = {key: {max(0, int(c.state.log_offsets.get(key, 0) or 0)) for c in v.checkpoints if c.state} for key, _ in LOGS}
    digests = {key: prefix_digests(run_dir / fname, offsets[key]) for key, fname in LOGS}
    for c in v.checkpoints:
        if c.problem or c.state is None:
            continue
        for key, fname in LOGS:
            off = max(0, int(c.state.log_offsets.get(key, 0) or 0))
            want = (c.state.log_digests or {}).get(key)
            if sizes[key] is None and off > 0:
                c.problem = f"{fname} is missing (the checkpoint recorded its first {off} bytes)"
            elif off > (sizes[key] or 0):
                c.problem = f"{fname} is shorter ({sizes[key]} bytes) than the {off} bytes this checkpoint recorded"
            elif not ends_a_line(run_dir / fname, off):
                c.problem = f"{fname}: byte {off} recorded by this checkpoint is not a line boundary"
            elif want and digests[key].get(off) != want:
                c.problem = (f"the first {off} bytes of {fname} differ from what this checkpoint recorded "
                             "(the log was edited or cut)")
            if c.problem:
                c.log_problem = True
                break

    usable = [c for c in v.checkpoints if c.problem is None]
    v.chosen = max(usable, key=Checkpoint.key) if usable else None
    chosen_state = v.chosen.state if v.chosen else None
    for c in v.checkpoints:  # unusable, and in the way of the names a continued run writes
        if c.problem is not None:
            v.set_aside.append(c.rel)
            v.damage.append(f"{c.rel} is damaged ({c.problem}); resume sets it aside into {SET_ASIDE}/")

    if v.top is not None and v.top.status == "finished":
        v.finished = True
    elif v.chosen is not None and chosen_state is not None and chosen_state.status == "finished":
        v.finished = True
        v.notes.append(f"{v.chosen.rel} holds the finished run but state.json does not say so yet "
                       "(a kill after the final checkpoint); resume records it")
    if v.top is not None and v.top.last_checkpoint and v.top.last_checkpoint not in {c.rel for c in v.checkpoints if c.problem is None}:
        v.damage.append(f"state.json points at {v.top.last_checkpoint}, which is missing or damaged")
    elif v.top is not None and v.chosen is not None and v.top.last_checkpoint != v.chosen.rel and not v.finished:
        v.notes.append(f"state.json lags behind {v.chosen.rel} (a kill between a checkpoint and the state "
                       "write); resume continues from it")

    # every phase-start checkpoint of the state resume continues from must be there (branching)
    ref = chosen_state if chosen_state is not None else v.top
    if ref is not None:
        have = {c.rel for c in v.checkpoints if c.problem is None}
        bad_rels = {c.rel for c in v.checkpoints if c.problem is not None}
        branched = meta.get("branched_from") if isinstance(meta.get("branched_from"), dict) else {}
        earlier = set(branched.get("earlier") or [])
        for visit in ref.visits:
            rel = visit.get("checkpoint") if isinstance(visit, dict) else None
            if rel and rel in earlier and rel not in have:
                v.notes.append(f"{rel} (phase '{visit.get('phase')}', before this branch's start) stays in the "
                               f"run it branched from, {branched.get('run_dir')}: branch from there")
            elif rel and rel not in have and rel not in bad_rels:
                v.damage.append(
                    f"{rel} (taken when phase '{visit.get('phase')}' began at step {visit.get('start_step')}) is "
                    f"missing: `curriculum resume --from-phase {visit.get('phase')}` cannot branch from it"
                )

    # the logs: what resume keeps must parse; what it cuts is noted
    for key, fname in LOGS:
        path = run_dir / fname
        if sizes[key] is None:
            v.damage.append(f"{fname} is missing" + ("" if v.finished else "; resume starts it empty"))
            continue
        keep = int(chosen_state.log_offsets.get(key, 0) or 0) if chosen_state is not None else 0
        keep = max(0, keep)
        if v.finished:
            keep = sizes[key]
        _, probs = read_jsonl(path)
        for prob in probs:
            short = prob.replace(str(run_dir) + "/", "")
            if "torn last line" in prob and not v.finished:
                continue  # counted in the cut below
            tail = prob[len(str(path)) + 1:].split(":", 1)[0]
            line_no = int(tail) if tail.isdigit() else 0
            if not v.finished and _line_start(path, line_no) >= keep:
                continue
            v.damage.append(short)
        if not v.finished and sizes[key] > keep:
            v.cuts[key] = sizes[key] - keep
            v.notes.append(
                f"{fname}: {sizes[key] - keep} bytes after "
                f"{v.chosen.rel if v.chosen else 'the start'} (written after it, or torn by a kill); resume moves them aside"
            )

    if fatal:
        v.damage[:0] = fatal
        v.refusal = fatal[0]
    elif not v.finished and v.chosen is None and any(c.log_problem for c in v.checkpoints):
        # only log damage stands between us and a checkpoint: restarting would throw it all away
        c = next(c for c in v.checkpoints if c.log_problem)
        v.refusal = (
            f"no checkpoint is consistent with the logs ({c.rel}: {c.problem}); put back events.jsonl and "
            f"metrics.jsonl as the run wrote them, or move {CKPT_DIR}/ aside to start the run again"
        )
    if v.chosen is None and not v.finished:
        v.start_phase = (v.top.visits[0]["phase"] if v.top and v.top.visits else None) or (
            v.top.phase if v.top else meta.get("start_phase"))
    return v


def _line_start(path: Path, line_no: int) -> int:
    """Byte offset where 1-based line `line_no` of a file begins."""
    if line_no <= 1:
        return 0
    pos = 0
    with open(path, "rb") as f:
        for i, line in enumerate(f, start=1):
            if i == line_no:
                return pos
            pos += len(line)
    return pos


def set_aside(run_dir: Path, rels: list[str]) -> list[str]:
    """Move checkpoints out of the way (never delete them); returns where each went."""
    out = []
    dest_root = Path(run_dir) / SET_ASIDE
    for rel in rels:
        src = Path(run_dir) / rel
        if not src.exists():
            continue
        dest_root.mkdir(exist_ok=True)
        dest = dest_root / src.name
        n = 1
        while dest.exists():
            n += 1
            dest = dest_root / f"{src.name}.{n}"
        os.replace(src, dest)
        out.append(str(dest.relative_to(run_dir)))
    if out:
        fsync_dir(Path(run_dir) / CKPT_DIR)
    return out


def clean_tmp(run_dir: Path) -> None:
    root = Path(run_dir) / CKPT_DIR
    if root.exists():
        for p in root.iterdir():
            if p.name.startswith(".tmp-"):
                shutil.rmtree(p, ignore_errors=True)
