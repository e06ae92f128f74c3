"""Checkpoint I/O of the Tunix runner: orbax for arrays, a JSON for counters.

Layout of the directory the engine hands to ``save(ckpt_dir)``::

    ckpt_dir/
      arrays/        orbax StandardCheckpointer pytree: {"model": ..., "opt": ..., "ref_*": ...}
      runner.json    counters, data position, RNG counter, what "arrays" holds (written last)

orbax writes ``arrays`` into a temporary directory and renames it when finalised; ``runner.json``
is written via temp file + ``os.replace`` only after that, so it doubles as the commit marker: a
directory without it is an incomplete checkpoint and ``restore`` refuses it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

META_FILE = "runner.json"
ARRAYS_DIR = "arrays"
FORMAT_VERSION = 1


def to_str_tree(tree: Any) -> Any:
    """A pure-dict pytree with every key a string (orbax-friendly).

    Leaves become host numpy, except arrays spread over several processes (a pod), which stay
    global jax.Arrays: orbax saves those collectively, each process writing its own shards.
    """
    if isinstance(tree, dict):
        return {str(k): to_str_tree(v) for k, v in tree.items()}
    if isinstance(tree, jax.Array) and not tree.is_fully_addressable:
        return jnp.copy(tree)  # a copy: the trainer may donate the original's buffers
    return np.asarray(jax.device_get(tree))


def _count_leaves(tree: Any) -> int:
    return len(jax.tree.leaves(tree))


def fill_like(target: Any, src: Any, where: str = "") -> Any:
    """``target`` (pure dict, any key types) with leaves taken from ``src`` (string keys).

    Leaves keep the target's dtype and sharding.  Raises KeyError/ValueError on a mismatch.
    """
    if isinstance(target, dict):
        out = {}
        for k, v in target.items():
            sk = str(k)
            if isinstance(src, dict) and sk in src:
                out[k] = fill_like(v, src[sk], f"{where}/{sk}")
            elif _count_leaves(v) == 0:
                out[k] = v  # empty subtree (orbax does not store those)
            else:
                raise KeyError(f"checkpoint lacks {where}/{sk}")
        return out
    if isinstance(src, jax.Array) and not src.is_fully_addressable:
        return _fill_global(target, src, where)
    arr = np.asarray(src)
    tshape = tuple(getattr(target, "shape", ()))
    if tuple(arr.shape) != tshape:
        raise ValueError(f"checkpoint shape mismatch at {where}: {arr.shape} vs {tshape}")
    dtype = getattr(target, "dtype", arr.dtype)
    sharding = getattr(target, "sharding", None)
    if sharding is not None:
        return jax.device_put(jnp.asarray(arr, dtype=dtype), sharding)
    return jnp.asarray(arr, dtype=dtype)


def _fill_global(target: Any, src: jax.Array, where: str) -> jax.Array:
    """A leaf spread over several processes: checked and resharded like the target, on device."""
    tshape = tuple(getattr(target, "shape", ()))
    if tuple(src.shape) != tshape:
        raise ValueError(f"checkpoint shape mismatch at {where}: {src.shape} vs {tshape}")
    dtype = getattr(target, "dtype", src.dtype)
    out = src.astype(dtype) if src.dtype != dtype else src
    sharding = getattr(target, "sharding", None)
    return jax.device_put(out, sharding) if sharding is not None else out


def state_pure(obj: Any, filt: Any = None) -> dict:
    state = nnx.state(obj, filt) if filt is not None else nnx.state(obj)
    return nnx.to_pure_dict(state)


def load_into(obj: Any, src: Any, filt: Any = None) -> None:
    """Write ``src`` (string-keyed tree from a checkpoint) into the nnx object ``obj``."""
    state = nnx.state(obj, filt) if filt is not None else nnx.state(obj)
    pure = nnx.to_pure_dict(state)
    filled = fill_like(pure, src)
    nnx.replace_by_pure_dict(state, filled)
    nnx.update(obj, state)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(ckpt_dir: Path, arrays: dict[str, Any], meta: dict[str, Any]) -> None:
    import orbax.checkpoint as ocp

    ckpt_dir = Path(ckpt_dir).resolve()
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    marker = ckpt_dir / META_FILE
    if marker.exists() and jax.process_index() == 0:  # overwriting: un-commit first
        marker.unlink()
    tree = {k: to_str_tree(v) for k, v in arrays.items() if v is not None and _count_leaves(v) > 0}
    ckptr = ocp.StandardCheckpointer()
    try:
        ckptr.save(ckpt_dir / ARRAYS_DIR, tree, force=True)
        ckptr.wait_until_finished()
    finally:
        ckptr.close()
    meta = dict(meta, format_version=FORMAT_VERSION, arrays=sorted(tree))
    if jax.process_index() == 0:  # orbax's save returned on every process: the arrays are complete
        write_json_atomic(marker, meta)


def load(ckpt_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(arrays as string-keyed numpy trees, meta); raises FileNotFoundError if incomplete."""
    import orbax.checkpoint as ocp

    ckpt_dir = Path(ckpt_dir).resolve()
    marker = ckpt_dir / META_FILE
    if not marker.exists():
        raise FileNotFoundError(
            f"{ckpt_dir} is not a complete Tunix runner checkpoint (no {META_FILE})"
        )
    meta = json.loads(marker.read_text())
    ckptr = ocp.StandardCheckpointer()
    try:
        raw = ckptr.restore(ckpt_dir / ARRAYS_DIR)
    finally:
        ckptr.close()
    # arrays orbax restored across several processes stay global (fill_like reshards them)
    raw = jax.tree.map(lambda x: x if isinstance(x, jax.Array) and not x.is_fully_addressable else np.asarray(x), raw)
    return raw, meta
