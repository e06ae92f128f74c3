"""Model construction for the Tunix runner: the tiny Gemma 3, real weights, LoRA, the mesh.

Real weights are read from a local directory in the Hugging Face layout (``*.safetensors`` +
``config.json``) through Tunix's own safetensors loaders.  For Gemma 3 the dimensions come from
``config.json`` when it is there (so any Gemma 3 shape loads, including the tiny test model);
otherwise from Tunix's preset config of the family.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from runners.tunix.config import FAMILIES, LORA_TARGETS, ModelSection


def make_mesh() -> jax.sharding.Mesh:
    """All local devices on the "fsdp" axis, "tp" of size 1, Auto axis types (explicit breaks Gemma 3)."""
    n = len(jax.devices())
    return jax.make_mesh(
        (n, 1), ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2
    )


def _dtype(name: str):
    return jnp.float32 if name == "float32" else jnp.bfloat16


def tiny_config(m: ModelSection, vocab_size: int, max_len: int):
    from tunix.models.gemma3 import model as g3

    window = m.sliding_window or max(4096, max_len)
    return g3.ModelConfig(
        num_layers=m.num_layers,
        num_embed=vocab_size,
        embed_dim=m.embed_dim,
        hidden_dim=m.hidden_dim,
        num_heads=m.num_heads,
        head_dim=m.head_dim,
        num_kv_heads=m.num_kv_heads,
        sliding_window_size=window,
        param_dtype=_dtype(m.dtype),
    )


def build_tiny(m: ModelSection, vocab_size: int, seed: int, mesh, max_len: int = 4096):
    """A randomly initialised Gemma 3 (deterministic in ``seed``)."""
    from tunix.models import dummy_model_creator
    from tunix.models.gemma3 import model as g3

    cfg = tiny_config(m, vocab_size, max_len)
    return dummy_model_creator.create_dummy_model(
        g3.Gemma3, cfg, mesh=mesh, dtype=_dtype(m.dtype), random_seed=seed, scale=m.init_scale
    )


def gemma3_config_from_json(path: Path, dtype) -> Any | None:
    """A Tunix Gemma 3 ModelConfig from a Hugging Face ``config.json`` (None when absent)."""
    from tunix.models.gemma3 import model as g3

    f = path / "config.json"
    if not f.exists():
        return None
    raw = json.loads(f.read_text())
    c = raw.get("text_config", raw)
    num_heads = int(c.get("num_attention_heads", 4))
    head_dim = int(c.get("head_dim", 256))
    embed_dim = int(c["hidden_size"])
    qpa = c.get("query_pre_attn_scalar")
    norm = g3.QueryPreAttentionNormalisation.BY_ONE_OVER_SQRT_HEAD_DIM
    if qpa is not None and int(qpa) != head_dim and int(qpa) == embed_dim // num_heads:
        norm = g3.QueryPreAttentionNormalisation.BY_ONE_OVER_SQRT_EMBED_DIM_DIV_NUM_HEADS
    scaling = c.get("rope_scaling") or {}
    return g3.ModelConfig(
        num_layers=int(c["num_hidden_layers"]),
        num_embed=int(c.get("vocab_size", 262144)),
        embed_dim=embed_dim,
        hidden_dim=int(c["intermediate_size"]),
        num_heads=num_heads,
        head_dim=head_dim,
        num_kv_heads=int(c.get("num_key_value_heads", 1)),
        sliding_window_size=int(c.get("sliding_window") or 512),
        local_base_frequency=int(c.get("rope_local_base_freq", 10_000)),
        global_base_frequency=int(c.get("rope_theta", 1_000_000)),
        global_scale_factor=float(scaling.get("factor", 1.0)) if isinstance(scaling, dict) else 1.0,
        query_pre_attn_norm=norm,
        param_dtype=dtype,
    )


def gemma3_config_to_json(cfg) -> dict[str, Any]:
    """The Hugging Face ``config.json`` fields of a Tunix Gemma 3 config (inverse of the above)."""
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "num_hidden_layers": cfg.num_layers,
        "vocab_size": cfg.num_embed,
        "hidden_size": cfg.embed_dim,
        "intermediate_size": cfg.hidden_dim,
        "num_attention_heads": cfg.num_heads,
        "head_dim": cfg.head_dim,
        "num_key_value_heads": cfg.num_kv_heads,
        "sliding_window": cfg.sliding_window_size,
        "rope_local_base_freq": cfg.local_base_frequency,
        "rope_theta": cfg.global_base_frequency,
        "query_pre_attn_scalar": cfg.head_dim,
        "torch_dtype": "float32",
    }


def build_real(m: ModelSection, mesh):
    """Load real weights from ``m.path`` with Tunix's safetensors loader for the family."""
    from tunix.models import automodel

    path = Path(m.path).expanduser()  # type: ignore[arg-type]
    if not path.is_dir():
        raise FileNotFoundError(f"model.path: checkpoint directory does not exist: {path}")
    name = FAMILIES[m.preset]
    dtype = _dtype(m.dtype)
    cfg = None
    if m.family == "gemma3":
        cfg = gemma3_config_from_json(path, dtype)
    if cfg is None:
        cfg = automodel.call_model_config(name)
        if hasattr(cfg, "param_dtype"):
            cfg = dataclasses.replace(cfg, param_dtype=dtype)
    return automodel.create_model_from_safe_tensors(name, str(path), cfg, mesh, dtype=dtype)


def apply_lora(model, m: ModelSection, mesh):
    import qwix

    provider = qwix.LoraProvider(
        module_path=m.lora_targets or LORA_TARGETS[m.family],
        rank=m.effective_lora_rank,
        alpha=m.effective_lora_alpha,
    )
    with jax.set_mesh(mesh):
        lora_model = qwix.apply_lora_to_model(model, provider, **model.get_model_input())
    from tunix.rl import reshard

    return reshard.reshard_model_to_mesh(lora_model, mesh)


def is_lora(model) -> bool:
    from tunix.sft import utils as sft_utils

    return sft_utils.is_lora_enabled(model)


def trainable_filter(model):
    return nnx.LoRAParam if is_lora(model) else nnx.Param


def param_count(model) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


def clone_model(model):
    """A deep copy with its own buffers (for a frozen KL reference)."""
    graphdef, state = nnx.split(model)
    state = jax.tree.map(lambda x: jnp.array(x, copy=True), state)
    return nnx.merge(graphdef, state)


# --------------------------------------------------------------------------- export


def save_gemma3_safetensors(model, out_dir: str | Path) -> Path:
    """Write a (non-LoRA) Tunix Gemma 3 as a Hugging Face checkpoint: model.safetensors + config.json.

    The inverse of tunix.models.gemma3.params_safetensors; used by tests to build a real-format
    checkpoint, and usable to export a trained tiny model.
    """
    import safetensors.numpy as st

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    sd = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    n, h, d, k = cfg.num_heads, cfg.head_dim, cfg.embed_dim, cfg.num_kv_heads

    def a(x):
        return np.asarray(jax.device_get(x), dtype=np.float32)

    tensors: dict[str, np.ndarray] = {"model.embed_tokens.weight": a(sd["embedder"]["input_embedding"])}
    tensors["model.norm.weight"] = a(sd["final_norm"]["scale"])
    for i, layer in sd["layers"].items():
        p = f"model.layers.{i}."
        att = layer["attn"]
        if "qkv_einsum" in att:
            qkv = a(att["qkv_einsum"]["w"])  # (3, N, D, H)
            q, kk, v = qkv[0], qkv[1], qkv[2]
        else:
            q = a(att["q_einsum"]["w"])  # (N, D, H)
            kv = a(att["kv_einsum"]["w"])  # (2, K, D, H)
            kk, v = kv[0], kv[1]
        tensors[p + "self_attn.q_proj.weight"] = q.transpose(1, 0, 2).reshape(d, n * h).T.copy()
        tensors[p + "self_attn.k_proj.weight"] = kk.transpose(1, 0, 2).reshape(d, k * h).T.copy()
        tensors[p + "self_attn.v_proj.weight"] = v.transpose(1, 0, 2).reshape(d, k * h).T.copy()
        tensors[p + "self_attn.o_proj.weight"] = a(att["attn_vec_einsum"]["w"]).reshape(n * h, d).T.copy()
        tensors[p + "self_attn.q_norm.weight"] = a(att["_query_norm"]["scale"])
        tensors[p + "self_attn.k_norm.weight"] = a(att["_key_norm"]["scale"])
        mlp = layer["mlp"]
        tensors[p + "mlp.gate_proj.weight"] = a(mlp["gate_proj"]["kernel"]).T.copy()
        tensors[p + "mlp.up_proj.weight"] = a(mlp["up_proj"]["kernel"]).T.copy()
        tensors[p + "mlp.down_proj.weight"] = a(mlp["down_proj"]["kernel"]).T.copy()
        tensors[p + "input_layernorm.weight"] = a(layer["pre_attention_norm"]["scale"])
        tensors[p + "post_attention_layernorm.weight"] = a(layer["post_attention_norm"]["scale"])
        tensors[p + "pre_feedforward_layernorm.weight"] = a(layer["pre_ffw_norm"]["scale"])
        tensors[p + "post_feedforward_layernorm.weight"] = a(layer["post_ffw_norm"]["scale"])
    st.save_file(tensors, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(gemma3_config_to_json(cfg), indent=2))
    return out
