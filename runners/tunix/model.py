"""Model construction for the Tunix runner: the tiny Gemma 3, real weights, LoRA, the mesh.

Real weights are read from a local directory in the Hugging Face layout (``*.safetensors`` +
``config.json``) through Tunix's own safetensors loaders.  For every family (Gemma 3, Qwen3,
Qwen2.5, Llama 3) the dimensions come from ``config.json`` when it is there (so any shape of the
family loads, including the tiny test models); otherwise from Tunix's preset config of the family.

The ``save_*_safetensors`` exporters are the exact inverses of Tunix's loader mappings
(``tunix/models/<family>/params*.py``): tests write a random tiny model in the real on-disk format
and load it back through the runner's normal code path.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import structlog
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


def build_from_policy(m: ModelSection, path: Path, mesh):
    """The tiny Gemma 3 of ``[model] init_from``: dimensions from ``path/config.json``, weights
    from ``path/model.safetensors`` through Tunix's Gemma 3 safetensors loader (full fine-tune)."""
    from tunix.models import automodel

    cfg = gemma3_config_from_json(Path(path), _dtype(m.dtype))
    if cfg is None:
        raise FileNotFoundError(f"model.init_from: no config.json in {path}")
    try:
        return automodel.create_model_from_safe_tensors(FAMILIES["gemma3-1b"], str(path), cfg, mesh, dtype=_dtype(m.dtype))
    except (ValueError, AssertionError, RuntimeError) as exc:
        raise ValueError(f"model.init_from: could not load {path}/model.safetensors ({_describe(cfg)}): {_first_lines(exc)}") from exc


def _read_hf_config(path: Path) -> dict[str, Any] | None:
    """The (text model's) fields of ``path/config.json``, or None when there is none."""
    f = path / "config.json"
    if not f.exists():
        return None
    raw = json.loads(f.read_text())
    return raw.get("text_config", raw)


def gemma3_config_from_json(path: Path, dtype) -> Any | None:
    """A Tunix Gemma 3 ModelConfig from a Hugging Face ``config.json`` (None when absent)."""
    from tunix.models.gemma3 import model as g3

    c = _read_hf_config(path)
    if c is None:
        return None
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


#: Hugging Face identity of the Llama-style decoder families: (architecture, model_type, Tunix's
#: tied-embedding field).  Their safetensors layout is the same apart from Qwen3's q/k norms and
#: Qwen2's q/k/v biases.
HF_DECODERS: dict[str, tuple[str, str, str]] = {
    "qwen3": ("Qwen3ForCausalLM", "qwen3", "use_tied_embedding"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2", "use_tied_embedding"),
    "llama3": ("LlamaForCausalLM", "llama", "weight_tying"),
}


def _rope_theta(c: dict[str, Any]) -> float | None:
    """``rope_theta`` at the top level (transformers < 5) or in ``rope_parameters`` (5.x)."""
    theta = c.get("rope_theta")
    if theta is None and isinstance(c.get("rope_parameters"), dict):
        theta = c["rope_parameters"].get("rope_theta")
    return theta


def decoder_config_from_json(family: str, path: Path, base) -> Any | None:
    """Tunix's Qwen3 / Qwen2 / Llama 3 ModelConfig with the dimensions of an HF ``config.json``.

    ``base`` is the preset config of the family: it supplies what config.json does not say
    (dtypes, sharding, remat) and the defaults of optional fields.  None when there is no
    config.json.
    """
    c = _read_hf_config(path)
    if c is None:
        return None
    heads, embed = int(c["num_attention_heads"]), int(c["hidden_size"])
    theta = _rope_theta(c)
    fields: dict[str, Any] = {
        "num_layers": int(c["num_hidden_layers"]),
        "vocab_size": int(c["vocab_size"]),
        "embed_dim": embed,
        "hidden_dim": int(c["intermediate_size"]),
        "num_heads": heads,
        "head_dim": int(c.get("head_dim") or embed // heads),
        "num_kv_heads": int(c.get("num_key_value_heads") or heads),
        "rope_theta": int(theta) if theta is not None else base.rope_theta,
        "norm_eps": float(c.get("rms_norm_eps", base.norm_eps)),
        HF_DECODERS[family][2]: bool(c.get("tie_word_embeddings", False)),
    }
    return dataclasses.replace(base, **fields)


def decoder_config_to_json(family: str, cfg) -> dict[str, Any]:
    """The Hugging Face ``config.json`` of a Tunix Qwen3 / Qwen2 / Llama 3 config (inverse of the above)."""
    arch, model_type, tied = HF_DECODERS[family]
    return {
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.embed_dim,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": bool(getattr(cfg, tied)),
        "attention_bias": family == "qwen2",
        "torch_dtype": "float32",
    }


def real_config(m: ModelSection, path: Path):
    """The Tunix ModelConfig for ``m.preset`` with the dimensions of ``path/config.json`` if any."""
    from tunix.models import automodel

    dtype = _dtype(m.dtype)
    if m.family == "gemma3":
        cfg = gemma3_config_from_json(path, dtype)
        if cfg is not None:
            return cfg
    base = automodel.call_model_config(FAMILIES[m.preset])
    if hasattr(base, "param_dtype"):  # Llama 3's config has none (float32 params, cast on load)
        base = dataclasses.replace(base, param_dtype=dtype)
    if m.family in HF_DECODERS:
        return decoder_config_from_json(m.family, path, base) or base
    return base


def rope_caveat(family: str, cfg, hf: dict[str, Any]) -> str | None:
    """Why Tunix 0.1.7's RoPE differs from the checkpoint's, or None.

    Tunix's Qwen3 and Llama 3 attention call ``apply_rope`` without ``rope_theta``: the base is
    always 1e6 whatever the config says, and no ``rope_scaling`` is implemented for these
    families (Llama 3.2 uses theta 5e5 with "llama3" scaling).  Qwen2 honours ``rope_theta``.
    """
    notes = []
    if family in ("qwen3", "llama3") and cfg.rope_theta != 1_000_000:
        notes.append(f"rope_theta {cfg.rope_theta} is ignored by Tunix's {family} attention (uses 1e6)")
    scaling = hf.get("rope_scaling") or (hf.get("rope_parameters") or {})
    kind = (scaling.get("rope_type") or scaling.get("type")) if isinstance(scaling, dict) else None
    if family in HF_DECODERS and kind not in (None, "default"):
        notes.append(f"rope scaling {kind!r} is not implemented by Tunix's {family} model")
    return "; ".join(notes) or None


def build_real(m: ModelSection, mesh):
    """Load real weights from ``m.path`` with Tunix's safetensors loader for the family."""
    from tunix.models import automodel

    path = Path(m.path).expanduser()  # type: ignore[arg-type]
    if not path.is_dir():
        raise FileNotFoundError(f"model.path: checkpoint directory does not exist: {path}")
    cfg = real_config(m, path)
    caveat = rope_caveat(m.family, cfg, _read_hf_config(path) or {})
    if caveat:
        structlog.get_logger().warning("tunix_rope_differs_from_hf", preset=m.preset, detail=caveat)
    try:
        return automodel.create_model_from_safe_tensors(FAMILIES[m.preset], str(path), cfg, mesh, dtype=_dtype(m.dtype))
    except (ValueError, AssertionError, RuntimeError) as exc:
        # Tunix reports a missing tensor as a pytree structure error and a wrong shape as a bare
        # assertion or reshape error: say which checkpoint and which config did not fit.
        source = "config.json" if (path / "config.json").exists() else f"preset {m.preset}"
        raise ValueError(
            f"model.path: could not load the *.safetensors in {path} as {m.family} "
            f"({source}: {_describe(cfg)}): {_first_lines(exc)}"
        ) from exc


def _describe(cfg) -> str:
    keys = ("num_layers", "embed_dim", "hidden_dim", "num_heads", "head_dim", "num_kv_heads", "vocab_size", "num_embed")
    return ", ".join(f"{k}={getattr(cfg, k)}" for k in keys if hasattr(cfg, k))


def _first_lines(exc: BaseException, n: int = 3) -> str:
    return " ".join(str(exc).strip().splitlines()[:n])


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


def _host(x) -> np.ndarray:
    return np.asarray(jax.device_get(x), dtype=np.float32)


def _write_hf_checkpoint(out_dir: str | Path, tensors: dict[str, np.ndarray], config: dict[str, Any]) -> Path:
    """model.safetensors (float32, contiguous) + config.json in ``out_dir``."""
    import safetensors.numpy as st

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    st.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def _params(model) -> dict[str, Any]:
    if is_lora(model):
        raise ValueError("export the base model: merge or drop the LoRA adapters first")
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def save_gemma3_safetensors(model, out_dir: str | Path) -> Path:
    """Write a (non-LoRA) Tunix Gemma 3 as a Hugging Face checkpoint: model.safetensors + config.json.

    The inverse of tunix.models.gemma3.params_safetensors; used by tests to build a real-format
    checkpoint, and usable to export a trained tiny model.
    """
    cfg = model.config
    sd = _params(model)
    n, h, d, k = cfg.num_heads, cfg.head_dim, cfg.embed_dim, cfg.num_kv_heads
    tensors: dict[str, np.ndarray] = {"model.embed_tokens.weight": _host(sd["embedder"]["input_embedding"])}
    tensors["model.norm.weight"] = _host(sd["final_norm"]["scale"])
    for i, layer in sd["layers"].items():
        p = f"model.layers.{i}."
        att = layer["attn"]
        if "qkv_einsum" in att:
            qkv = _host(att["qkv_einsum"]["w"])  # (3, N, D, H)
            q, kk, v = qkv[0], qkv[1], qkv[2]
        else:
            q = _host(att["q_einsum"]["w"])  # (N, D, H)
            kv = _host(att["kv_einsum"]["w"])  # (2, K, D, H)
            kk, v = kv[0], kv[1]
        tensors[p + "self_attn.q_proj.weight"] = q.transpose(1, 0, 2).reshape(d, n * h).T
        tensors[p + "self_attn.k_proj.weight"] = kk.transpose(1, 0, 2).reshape(d, k * h).T
        tensors[p + "self_attn.v_proj.weight"] = v.transpose(1, 0, 2).reshape(d, k * h).T
        tensors[p + "self_attn.o_proj.weight"] = _host(att["attn_vec_einsum"]["w"]).reshape(n * h, d).T
        tensors[p + "self_attn.q_norm.weight"] = _host(att["_query_norm"]["scale"])
        tensors[p + "self_attn.k_norm.weight"] = _host(att["_key_norm"]["scale"])
        tensors.update({p + key: val for key, val in _mlp_tensors(layer["mlp"]).items()})
        tensors[p + "input_layernorm.weight"] = _host(layer["pre_attention_norm"]["scale"])
        tensors[p + "post_attention_layernorm.weight"] = _host(layer["post_attention_norm"]["scale"])
        tensors[p + "pre_feedforward_layernorm.weight"] = _host(layer["pre_ffw_norm"]["scale"])
        tensors[p + "post_feedforward_layernorm.weight"] = _host(layer["post_ffw_norm"]["scale"])
    return _write_hf_checkpoint(out_dir, tensors, gemma3_config_to_json(cfg))


def _mlp_tensors(mlp: dict[str, Any]) -> dict[str, np.ndarray]:
    """Gated MLP: Tunix nnx.Linear kernels are (in, out), HF Linear weights (out, in)."""
    return {f"mlp.{name}.weight": _host(mlp[name]["kernel"]).T for name in ("gate_proj", "up_proj", "down_proj")}


def _decoder_layer_tensors(layer: dict[str, Any], embed_dim: int) -> dict[str, np.ndarray]:
    """One Qwen3 / Qwen2 / Llama 3 decoder layer in HF names (relative to ``model.layers.N.``).

    Tunix keeps q/k/v as (D, heads, head_dim) and o as (heads, head_dim, D); its loader reads
    HF's (out, in) weights, transposes and reshapes.  Flattening the head axes back and
    transposing inverts that exactly.
    """
    att = layer["attn"]
    if not isinstance(layer["mlp"].get("gate_proj"), dict):  # MoE: stacked expert arrays
        raise NotImplementedError("export of mixture-of-experts layers is not supported")
    out = {f"self_attn.{n}.weight": _host(att[n]["w"]).reshape(embed_dim, -1).T for n in ("q_proj", "k_proj", "v_proj")}
    out["self_attn.o_proj.weight"] = _host(att["o_proj"]["w"]).reshape(-1, embed_dim).T
    out.update({f"self_attn.{n}.weight": _host(att[n]["w"]) for n in ("q_norm", "k_norm") if n in att})  # Qwen3
    out.update({f"self_attn.{n}_proj.bias": _host(att[f"{n}_bias"]) for n in "qkv" if f"{n}_bias" in att})  # Qwen2
    out.update(_mlp_tensors(layer["mlp"]))
    for norm in ("input_layernorm", "post_attention_layernorm"):
        out[f"{norm}.weight"] = _host(layer[norm]["w"])
    return out


def save_decoder_safetensors(model, out_dir: str | Path, family: str) -> Path:
    """Write a (non-LoRA) Tunix Qwen3 / Qwen2 / Llama 3 as a Hugging Face checkpoint.

    The inverse of ``tunix.models.<family>.params._get_key_and_transform_mapping``.  With tied
    embeddings there is no ``lm_head.weight`` (HF does not store it either); otherwise Tunix's
    lm_head (D, V) is written as HF's (V, D).
    """
    cfg = model.config
    sd = _params(model)
    tensors = {
        "model.embed_tokens.weight": _host(sd["embedder"]["input_embedding"]),
        "model.norm.weight": _host(sd["final_norm"]["w"]),
    }
    if "lm_head" in sd:
        tensors["lm_head.weight"] = _host(sd["lm_head"]["w"]).T
    for i, layer in sd["layers"].items():
        for key, val in _decoder_layer_tensors(layer, cfg.embed_dim).items():
            tensors[f"model.layers.{i}.{key}"] = val
    return _write_hf_checkpoint(out_dir, tensors, decoder_config_to_json(family, cfg))


def save_qwen3_safetensors(model, out_dir: str | Path) -> Path:
    """A Tunix Qwen3 as model.safetensors + config.json (see :func:`save_decoder_safetensors`)."""
    return save_decoder_safetensors(model, out_dir, "qwen3")


def save_qwen2_safetensors(model, out_dir: str | Path) -> Path:
    """A Tunix Qwen2 / Qwen2.5 as model.safetensors + config.json."""
    return save_decoder_safetensors(model, out_dir, "qwen2")


def save_llama3_safetensors(model, out_dir: str | Path) -> Path:
    """A Tunix Llama 3 as model.safetensors + config.json."""
    return save_decoder_safetensors(model, out_dir, "llama3")
