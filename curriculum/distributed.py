"""One run, several processes: who decides, who writes, and how per-process metrics become one.

On a TPU pod (or a multi-GPU cluster) every JAX process runs the same `curriculum run`.  Each
trains on its own shard of the batch, so each sees its own rewards.  The engine then, every step:

1. gathers every process's metrics and reduces them to one global dict (:func:`reduce_metrics`,
   a pure function: means are averaged, maxima maxed, counts summed, the reward range and
   standard deviation recomputed for the whole batch);
2. lets process 0 alone run the guards and the penalty controller on those global metrics;
3. broadcasts process 0's decision (which guard fired, with its evidence; a stop; the penalty
   scale) so every process changes phase and penalties at the same step.

Only process 0 writes the run directory (state, events, metrics, the report) and talks to wandb;
checkpoints are collective: every process calls ``runner.save`` into the same directory, process 0
commits it after a barrier.  The run directory must be on a file system every process sees.

A single process (the default) is :class:`Cluster` with identity operations and no JAX import.
Several processes join through ``jax.distributed``:

* explicitly, from ``CURRICULUM_COORDINATOR`` (host:port of process 0),
  ``CURRICULUM_NUM_PROCESSES`` and ``CURRICULUM_PROCESS_ID``, set on every process; or
* with ``run.distributed = "jax"``, through ``jax.distributed.initialize()``'s own detection of
  the cluster (TPU pods, SLURM, Open MPI).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from curriculum.errors import CurriculumError

ENV_COORDINATOR = "CURRICULUM_COORDINATOR"
ENV_NUM_PROCESSES = "CURRICULUM_NUM_PROCESSES"
ENV_PROCESS_ID = "CURRICULUM_PROCESS_ID"
ENV_INIT_TIMEOUT = "CURRICULUM_INIT_TIMEOUT"

#: Metrics that are counts over the batch: the global value is the sum over processes.
COUNT_METRICS = frozenset({
    "nonfinite_rewards", "reward_errors",
    "groups_flat", "groups_spread", "groups_top", "groups_saturated",  # the collapse detector's
})


# ---------------------------------------------------------------------- the pure reduction


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _reduce_one(name: str, values: Sequence[float]) -> float:
    vals = _finite(values)
    if not vals:
        # an infinity on any process stays visible (the engine counts it as non-finite)
        infs = [v for v in values if isinstance(v, float) and math.isinf(v)]
        return infs[0] if infs else math.nan
    if name in COUNT_METRICS:
        return float(sum(vals))
    if name.endswith("_max"):
        return max(vals)
    if name.endswith("_min"):
        return min(vals)
    return sum(vals) / len(vals)


def reduce_metrics(per_process: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """One step's global metrics from each process's own (equal-sized batch per process).

    Means, rates, loss and KL: the mean over processes (NaN values left out, as guards do).
    ``*_max`` / ``*_min``: the extreme.  Counts (:data:`COUNT_METRICS`): the sum.
    ``reward_range``: global max minus global min.  ``reward_std``: the standard deviation of the
    whole batch, pooled from each process's mean and std.  ``reward_median``: the mean of the
    medians (an approximation; the exact median needs every reward).
    A metric one process lacks counts as NaN there.  Keys keep first-seen order.
    """
    if len(per_process) == 1:
        return dict(per_process[0])
    names: dict[str, None] = {}
    for m in per_process:
        names.update(dict.fromkeys(m))
    out = {n: _reduce_one(n, [float(m.get(n, math.nan)) for m in per_process]) for n in names}
    if "reward_max" in out and "reward_min" in out and "reward_range" in out:
        hi, lo = out["reward_max"], out["reward_min"]
        out["reward_range"] = hi - lo if math.isfinite(hi) and math.isfinite(lo) else out["reward_range"]
    if "reward_std" in out and "reward_mean" in out:
        pairs = [
            (float(m.get("reward_mean", math.nan)), float(m.get("reward_std", math.nan)))
            for m in per_process
        ]
        pairs = [(mu, sd) for mu, sd in pairs if math.isfinite(mu) and math.isfinite(sd)]
        if pairs:
            gmean = sum(mu for mu, _ in pairs) / len(pairs)
            second = sum(sd * sd + mu * mu for mu, sd in pairs) / len(pairs)
            out["reward_std"] = math.sqrt(max(0.0, second - gmean * gmean))
    return out


# ---------------------------------------------------------------------- process groups


@dataclass
class Cluster:
    """A single process: every collective is the identity."""

    index: int = 0
    count: int = 1

    @property
    def is_primary(self) -> bool:
        return self.index == 0

    @property
    def multi(self) -> bool:
        return self.count > 1

    def allgather(self, obj: Any) -> list[Any]:
        return [obj]

    def broadcast(self, obj: Any) -> Any:
        """Process 0's ``obj`` on every process (JSON-able objects)."""
        return obj

    def barrier(self, name: str) -> None:
        return None

    def reduce_metrics(self, metrics: Mapping[str, float]) -> dict[str, float]:
        if not self.multi:
            return dict(metrics)
        return reduce_metrics(self.allgather(dict(metrics)))

    def agree(self, fn: Any) -> Any:
        """Run ``fn`` on process 0 only and give every process its result.

        An exception on process 0 reaches every process as a :class:`CurriculumError` with the
        same message (so no process waits forever at the next collective).
        """
        if not self.multi:
            return fn()
        out: dict[str, Any] = {}
        err: BaseException | None = None
        if self.is_primary:
            try:
                out = {"ok": fn()}
            except CurriculumError as e:
                err = e
                out = {"error": str(e), "type": type(e).__name__}
        out = self.broadcast(out)
        if err is not None:
            raise err
        if "error" in out:
            from curriculum import errors

            cls = getattr(errors, out.get("type", ""), CurriculumError)
            raise (cls if isinstance(cls, type) and issubclass(cls, CurriculumError) else CurriculumError)(out["error"])
        return out["ok"]


class JaxCluster(Cluster):
    """Processes joined by ``jax.distributed``; objects travel as JSON bytes."""

    def __init__(self) -> None:
        import jax
        import numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        super().__init__(index=jax.process_index(), count=jax.process_count())
        # One all-gather primitive, compiled once per buffer size: each process contributes a
        # row, every process gets all rows.  (multihost_utils builds a new mesh and jit wrapper
        # on every call; a cached one is cheaper per step.)
        devices = np.array(jax.devices()).reshape(jax.process_count(), jax.local_device_count())
        mesh = Mesh(devices, ("processes", "local"))
        self._rows = NamedSharding(mesh, PartitionSpec("processes"))
        self._gather = jax.jit(lambda x: x, out_shardings=NamedSharding(mesh, PartitionSpec()))
        self._local = jax.local_devices()

    def _gather_rows(self, buf):
        """Every process's ``buf`` (same length everywhere), as a (count, len) numpy array."""
        import jax
        import numpy as np

        row = buf[None]
        arr = jax.make_array_from_single_device_arrays(
            (self.count, *buf.shape), self._rows, [jax.device_put(row, d) for d in self._local]
        )
        return np.asarray(self._gather(arr).addressable_data(0))

    #: bytes a message may take to travel in one collective; a longer one takes a second
    CAPACITY = 4096
    _HEAD = 8

    def _frame(self, obj: Any):
        """(a fixed-size buffer holding the length and, when it fits, the JSON bytes; the bytes)."""
        import numpy as np

        data = json.dumps(obj, allow_nan=True).encode("utf-8")
        buf = np.zeros(self.CAPACITY, dtype=np.uint8)
        buf[: self._HEAD] = np.frombuffer(len(data).to_bytes(self._HEAD, "little"), dtype=np.uint8)
        if len(data) <= self.CAPACITY - self._HEAD:
            buf[self._HEAD : self._HEAD + len(data)] = np.frombuffer(data, dtype=np.uint8)
        return buf, data

    def _unframe(self, row) -> tuple[int, Any]:
        n = int.from_bytes(bytes(row[: self._HEAD]), "little")
        if n > self.CAPACITY - self._HEAD:
            return n, None
        return n, json.loads(bytes(row[self._HEAD : self._HEAD + n]).decode("utf-8"))

    @staticmethod
    def _bucket(n: int) -> int:
        """A power of two: the collectives JAX compiles per buffer shape stay few."""
        return 1 << max(0, int(n) - 1).bit_length()

    def allgather(self, obj: Any) -> list[Any]:
        import numpy as np

        buf, data = self._frame(obj)
        rows = self._gather_rows(buf)
        got = [self._unframe(r) for r in rows]
        longest = max(n for n, _ in got)
        if longest <= self.CAPACITY - self._HEAD:  # the usual case: one collective
            return [o for _, o in got]
        big = np.zeros(self._bucket(longest), dtype=np.uint8)
        big[: len(data)] = np.frombuffer(data, dtype=np.uint8)
        rows = self._gather_rows(big)
        return [json.loads(bytes(rows[i, :n]).decode("utf-8")) for i, (n, _) in enumerate(got)]

    def broadcast(self, obj: Any) -> Any:
        # process 0's row of an all-gather in which the others send nothing (a JSON null)
        return self.allgather(obj if self.is_primary else None)[0]

    def barrier(self, name: str) -> None:
        from jax.experimental import multihost_utils as mu

        mu.sync_global_devices(f"curriculum:{name}")


_CURRENT: Cluster | None = None


def _env_int(name: str, lo: int, hi: int | None = None) -> int:
    raw = os.environ.get(name, "")
    try:
        v = int(raw)
    except ValueError:
        v = None  # type: ignore[assignment]
    if v is None or v < lo or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise CurriculumError(
            f"environment variable {name}={raw!r}: expected an integer {rng} "
            f"(set {ENV_COORDINATOR}, {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID} together on every process)"
        )
    return v


def _preflight(addr: str, process_id: int, timeout: float) -> None:
    """Check the coordinator address before JAX does: JAX aborts the whole process (a C++ stack
    trace, no Python exception) when process 0 is unreachable or its port is taken."""
    import socket
    import time

    host, _, port_s = addr.rpartition(":")
    try:
        port = int(port_s)
    except ValueError:
        raise CurriculumError(f"environment variable {ENV_COORDINATOR}={addr!r}: expected HOST:PORT with a numeric port") from None
    host = host.strip("[]") or "127.0.0.1"
    if process_id == 0:
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("", port))
        except OSError as e:
            raise CurriculumError(
                f"environment variable {ENV_COORDINATOR}={addr!r}: process 0 cannot listen on port {port} "
                f"({e.strerror or e}); choose a free port and give it to every process"
            ) from None
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise CurriculumError(
                    f"environment variable {ENV_COORDINATOR}={addr!r}: no process 0 answered there within "
                    f"{timeout:g} s ({e.strerror or e}); start process 0 with the same "
                    f"{ENV_COORDINATOR} (or raise {ENV_INIT_TIMEOUT})"
                ) from None
            time.sleep(0.5)


def _join(**kw: Any) -> Cluster:
    import jax

    # collectives between CPU devices of different processes (the CPU client only; asking
    # which backend is in use would start it, and initialize() must come first)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    timeout = _env_int(ENV_INIT_TIMEOUT, 1) if os.environ.get(ENV_INIT_TIMEOUT) else 300
    where = kw.get("coordinator_address") or "(detected by jax)"
    if kw.get("coordinator_address"):
        _preflight(kw["coordinator_address"], kw["process_id"], timeout)
    try:
        jax.distributed.initialize(initialization_timeout=timeout, **kw)
    except Exception as e:  # noqa: BLE001 - any failure to join is the user's setup
        raise CurriculumError(
            f"could not join the process group at {where} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); check that every "
            f"process got the same {ENV_COORDINATOR} and {ENV_NUM_PROCESSES}, a distinct "
            f"{ENV_PROCESS_ID}, and that process 0 is running"
        ) from None
    return JaxCluster()


def connect(mode: str = "auto") -> Cluster:
    """The process group of this run (joined once per process).

    ``mode`` is the spec's ``run.distributed``: "auto" joins when the ``CURRICULUM_*`` variables
    ask for more than one process, "jax" always joins with JAX's cluster detection, "single"
    never joins.
    """
    global _CURRENT
    if _CURRENT is not None:
        return _CURRENT
    if mode == "single":
        return Cluster()
    if os.environ.get(ENV_NUM_PROCESSES):
        n = _env_int(ENV_NUM_PROCESSES, 1)
        if n == 1:
            return Cluster()
        pid = _env_int(ENV_PROCESS_ID, 0, n - 1)
        addr = os.environ.get(ENV_COORDINATOR, "")
        if ":" not in addr:
            raise CurriculumError(
                f"environment variable {ENV_COORDINATOR}={addr!r}: expected HOST:PORT of process 0 "
                f"(needed because {ENV_NUM_PROCESSES}={n})"
            )
        _CURRENT = _join(coordinator_address=addr, num_processes=n, process_id=pid)
    elif mode == "jax":
        _CURRENT = _join()
    else:
        return Cluster()
    return _CURRENT


def current() -> Cluster:
    """The joined group, or a single process when nothing joined."""
    return _CURRENT if _CURRENT is not None else Cluster()
