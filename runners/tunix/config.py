"""Configuration models of the Tunix runner (``[model]``, ``[data]``, ``[runner]``, phase ``train``).

Pure pydantic: importing this module never imports jax or Tunix, so spec validation stays cheap.
Every model forbids unknown keys; :func:`validate_config` and :func:`validate_phase` turn pydantic
errors into ``(key path, message)`` pairs that name the key and what was expected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: Model families with real weights: our preset name -> Tunix model name (see tunix.models.naming).
FAMILIES: dict[str, str] = {
    "gemma3-270m": "gemma-3-270m",
    "gemma3-1b": "gemma-3-1b-it",
    "gemma3-4b": "gemma-3-4b-it",
    "qwen3-0.6b": "qwen3-0.6b",
    "qwen3-1.7b": "qwen3-1.7b",
    "qwen2.5-0.5b": "qwen2.5-0.5b",
    "llama3.2-1b": "llama-3.2-1b",
    "llama3.2-3b": "llama-3.2-3b",
}
PRESETS: tuple[str, ...] = ("tiny", *FAMILIES)

#: Chat templates the runner knows (how a system prompt + user turn + assistant turn are laid out).
CHAT_TEMPLATES: tuple[str, ...] = ("gemma", "chatml", "plain")

#: Default LoRA targets per architecture (regex over module paths, see qwix.LoraProvider).
LORA_TARGETS: dict[str, str] = {
    "gemma3": ".*q_einsum|.*kv_einsum|.*qkv_einsum|.*attn_vec_einsum|.*gate_proj|.*up_proj|.*down_proj",
    "qwen3": ".*q_proj|.*k_proj|.*v_proj|.*o_proj|.*gate_proj|.*up_proj|.*down_proj",
    "qwen2": ".*q_proj|.*k_proj|.*v_proj|.*o_proj|.*gate_proj|.*up_proj|.*down_proj",
    "llama3": ".*q_proj|.*k_proj|.*v_proj|.*o_proj|.*gate_proj|.*up_proj|.*down_proj",
}

_STRICT = ConfigDict(extra="forbid", validate_assignment=True)

#: ``[model] init_from`` value naming the tiny policy shipped in the package.
SHIPPED = "shipped"
SHIPPED_POLICY = Path(__file__).resolve().parent / "assets" / "tiny-dipg"
#: what a policy directory (``init_from``) holds
POLICY_FILES: tuple[str, ...] = ("model.safetensors", "config.json", "tokenizer.model")
#: ``[model]`` keys that ``init_from`` decides (config.json key of each)
POLICY_DIMS: dict[str, str] = {
    "num_layers": "num_hidden_layers",
    "embed_dim": "hidden_size",
    "hidden_dim": "intermediate_size",
    "num_heads": "num_attention_heads",
    "head_dim": "head_dim",
    "num_kv_heads": "num_key_value_heads",
    "vocab_size": "vocab_size",
    "sliding_window": "sliding_window",
}


def family_of(preset: str) -> str:
    """Architecture of a preset: "gemma3" for tiny and gemma3-*, else the Tunix config category."""
    if preset == "tiny" or preset.startswith("gemma3"):
        return "gemma3"
    if preset.startswith("qwen3"):
        return "qwen3"
    if preset.startswith("qwen2"):
        return "qwen2"
    if preset.startswith("llama3"):
        return "llama3"
    return "gemma3"


class ModelSection(BaseModel):
    """The ``[model]`` table."""

    model_config = _STRICT

    preset: str = "tiny"
    path: str | None = None  # local checkpoint dir (safetensors + config.json) for real weights
    tokenizer_path: str | None = None  # tokenizer.model file, or an HF tokenizer dir; default: path
    dtype: Literal["float32", "bfloat16"] = "float32"
    lora_rank: int | None = Field(default=None, ge=0)  # None: 0 for tiny, 16 for real weights
    lora_alpha: float | None = Field(default=None, gt=0)  # None: 2 * lora_rank
    lora_targets: str | None = None  # regex of module paths; default per family
    init_seed: int | None = None  # tiny: weight init seed (default: the run seed)
    # tiny: start from trained weights instead of a random init: "shipped" (the policy in the
    # package, runners/tunix/assets/tiny-dipg) or a local directory written by
    # bench/train_tiny_policy.py (model.safetensors + config.json + tokenizer.model); the
    # dimensions and the tokenizer come from it
    init_from: str | None = None
    # Tiny Gemma 3 dimensions (ignored for real weights, which read config.json).
    num_layers: int = Field(default=4, ge=1, le=64)
    embed_dim: int = Field(default=128, ge=8)
    hidden_dim: int = Field(default=512, ge=8)
    num_heads: int = Field(default=4, ge=1)
    head_dim: int = Field(default=32, ge=2)
    num_kv_heads: int = Field(default=1, ge=1)
    vocab_size: int = Field(default=1000, ge=300, le=65536)
    sliding_window: int | None = Field(default=None, ge=16)  # None: longer than any sequence
    init_scale: float = Field(default=0.02, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "ModelSection":
        if self.preset not in PRESETS:
            raise ValueError(
                f"preset: unknown preset {self.preset!r}; expected one of: {', '.join(PRESETS)}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim: must be even (RoPE), got {self.head_dim}")
        if self.init_from is not None and self.preset != "tiny":
            raise ValueError(
                f"init_from: only for preset 'tiny' (preset {self.preset!r} loads its weights from model.path)"
            )
        if self.init_from is not None and not self.init_from.strip():
            raise ValueError(f"init_from: expected {SHIPPED!r} or a checkpoint directory, got an empty string")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_kv_heads: must divide num_heads ({self.num_heads}), got {self.num_kv_heads}"
            )
        return self

    @property
    def is_tiny(self) -> bool:
        return self.preset == "tiny"

    @property
    def effective_lora_rank(self) -> int:
        if self.lora_rank is not None:
            return self.lora_rank
        return 0 if self.is_tiny else 16

    @property
    def effective_lora_alpha(self) -> float:
        if self.lora_alpha is not None:
            return self.lora_alpha
        return 2.0 * self.effective_lora_rank

    @property
    def family(self) -> str:
        return family_of(self.preset)


_FIELD_ROLES = ("prompt", "answer", "response", "messages")


def _check_fields(fields: dict[str, str] | None) -> None:
    for k, v in (fields or {}).items():
        if k not in _FIELD_ROLES:
            raise ValueError(f"fields: unknown role {k!r}; expected one of: {', '.join(_FIELD_ROLES)}")
        if not isinstance(v, str) or not v:
            raise ValueError(f"fields.{k}: expected the name of a key in the records, got {v!r}")
    if fields and "messages" in fields and ("response" in fields or "prompt" in fields):
        raise ValueError("fields: give messages (chat records) or prompt/response (pairs), not both")


#: the dataset name of [data] fresh_items (synthetic)
FRESH_SET = "fresh"


class DataSetSection(BaseModel):
    """One named dataset of ``[data.sets.NAME]`` (a phase trains on it with ``train.data``)."""

    model_config = _STRICT

    path: str
    fields: dict[str, str] | None = None  # default: the [data] table's
    columns: list[str] | None = None  # default: the [data] table's

    @model_validator(mode="after")
    def _check(self) -> "DataSetSection":
        _check_fields(self.fields)
        return self


class DataSection(BaseModel):
    """The ``[data]`` table."""

    model_config = _STRICT

    # synthetic / sharegpt: the DIPG datasets; jsonl: your own records (see runners/datasets.py)
    source: Literal["synthetic", "sharegpt", "jsonl"] = "synthetic"
    path: str | None = None  # sharegpt: a .json / .jsonl file; jsonl: the default dataset
    eval_path: str | None = None  # jsonl: a held-out file (default: eval_items split off path)
    fields: dict[str, str] = Field(default_factory=dict)  # jsonl: role -> key (prompt, answer, response, messages)
    columns: list[str] = Field(default_factory=list)  # jsonl: more keys passed on to the reward
    sets: dict[str, DataSetSection] = Field(default_factory=dict)  # jsonl: more datasets by name
    num_items: int = Field(default=2000, ge=1)  # synthetic: training items generated
    # synthetic: this many more items, generated apart (their own seed, no context/question pair
    # shared with the training or held-out items), as the dataset named "fresh": prompts a
    # policy has not been fine-tuned on, for GRPO phases that say train.data = "fresh"
    fresh_items: int = Field(default=0, ge=0)
    eval_items: int = Field(default=100, ge=1)  # held-out items (eval set)
    # synthetic: this many more held-out items, generated apart from all the above (their own
    # seed), appended to the eval set.  Widening the eval set this way keeps the training split
    # (and so a shipped policy's SFT items) untouched, and narrows every evaluation's interval
    fresh_eval_items: int = Field(default=0, ge=0)
    seed: int | None = None  # default: the run seed
    system_prompt: str | None = None  # None: "" for tiny, the rewards default instructions otherwise
    chat_template: Literal["gemma", "chatml", "plain"] | None = None  # None: by model family
    shuffle: bool = True

    @model_validator(mode="after")
    def _check(self) -> "DataSection":
        if self.source in ("sharegpt", "jsonl") and not self.path:
            raise ValueError(f"path: required when source = '{self.source}' (a .jsonl file)")
        if self.source != "jsonl":
            for k in ("eval_path", "sets"):
                if getattr(self, k):
                    raise ValueError(f"{k}: only for source = 'jsonl'")
            if self.fields or self.columns:
                raise ValueError("fields: only for source = 'jsonl' (the DIPG sources have fixed columns)")
        if self.fresh_items and self.source != "synthetic":
            raise ValueError("fresh_items: only for source = 'synthetic' (with jsonl, declare [data.sets.NAME])")
        if self.fresh_eval_items and self.source != "synthetic":
            raise ValueError("fresh_eval_items: only for source = 'synthetic' (with jsonl, give eval_path)")
        _check_fields(self.fields)
        if "default" in self.sets:
            raise ValueError("sets.default: 'default' names the [data] table's own dataset; pick another name")
        return self

    def set_names(self) -> list[str]:
        if self.source == "synthetic":
            return ["default", FRESH_SET] if self.fresh_items else ["default"]
        return ["default", *self.sets]


class RunnerSection(BaseModel):
    """The ``[runner]`` table."""

    model_config = _STRICT

    kind: Literal["tunix"] = "tunix"
    # WANDB_MODE for the process (the engine's tracker logs the metrics; nothing ever needs a key)
    wandb: Literal["offline", "disabled", "online"] = "offline"
    log_every: int = Field(default=10, ge=1)  # structlog progress line every N steps
    eval_batch_size: int = Field(default=32, ge=1)
    # jax persistent compilation cache: later phases, resumes and later runs reuse compiled steps
    compilation_cache: bool = True
    compilation_cache_dir: str | None = None  # default: $XDG_CACHE_HOME/curriculum/jax (~/.cache/...)
    # write every GRPO step's rewards to RUN_DIR/rewards.jsonl in the replay trace format, so
    # `curriculum run SPEC --replay RUN_DIR/rewards.jsonl` replays what this run's policy did
    record_rewards: bool = False


_SCHEDULES = Literal["constant", "cosine", "linear"]


class _TrainBase(BaseModel):
    model_config = _STRICT

    learning_rate: float = Field(default=3e-3, gt=0, le=1.0)
    lr_schedule: _SCHEDULES = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)  # cosine/linear floor, fraction of peak
    schedule_steps: int | None = Field(default=None, ge=1)  # default: the phase's max_steps
    weight_decay: float = Field(default=0.0, ge=0)
    grad_clip: float | None = Field(default=1.0, gt=0)
    b1: float = Field(default=0.9, ge=0, lt=1)
    b2: float = Field(default=0.99, ge=0, lt=1)
    batch_size: int = Field(default=16, ge=1)


class SftTrain(_TrainBase):
    """``train`` of an sft phase."""

    max_seq_len: int = Field(default=224, ge=16)  # prompt + response tokens (longer: truncated)
    # pad each batch only to its longest row rounded up to this multiple (rows are grouped by
    # length); 0 = always pad to max_seq_len.  Each distinct length compiles once.
    length_bucket: int = Field(default=64, ge=0)


class GrpoTrain(_TrainBase):
    """``train`` of a grpo phase."""

    learning_rate: float = Field(default=1e-4, gt=0, le=1.0)  # 3e-4 erodes the SFT format in 40 steps
    lr_schedule: _SCHEDULES = "constant"
    batch_size: int = Field(default=2, ge=1)  # prompts per step (each sampled G times)
    num_generations: int = Field(default=4, ge=2)
    num_iterations: int = Field(default=1, ge=1)
    beta: float = Field(default=0.04, ge=0)
    epsilon: float = Field(default=0.2, gt=0)
    kl_reference: Literal["base", "sft", "previous"] = "sft"
    # per-token KL estimator (loss term and the `kl` metric): "low_var_kl" = Schulman's k3, the
    # GRPO paper's, never negative; "kl" = log-ratio (Tunix's default, can be negative); "mse_kl"
    kl_loss_mode: Literal["low_var_kl", "kl", "mse_kl"] = "low_var_kl"
    max_prompt_length: int = Field(default=128, ge=8)  # raised to the longest prompt if needed
    max_new_tokens: int = Field(default=112, ge=1)  # DIPG references: up to ~105 tiny tokens
    temperature: float = Field(default=0.9, gt=0)
    top_k: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=1.0, gt=0, le=1)


class EvalOnlyTrain(BaseModel):
    """``train`` of an eval phase: nothing to set."""

    model_config = _STRICT


PHASE_MODELS: dict[str, type[BaseModel]] = {"sft": SftTrain, "grpo": GrpoTrain, "eval": EvalOnlyTrain}


class EvalSettings(BaseModel):
    """The runner's reading of ``PhaseSetup.eval`` (unknown keys are ignored: they are the engine's)."""

    model_config = ConfigDict(extra="ignore")

    enabled: bool = True
    num_items: int | None = Field(default=None, ge=1)  # default: the whole eval set
    max_new_tokens: int = Field(default=128, ge=1)
    samples: int = Field(default=1, ge=1)
    greedy: bool = True
    temperature: float = Field(default=0.7, gt=0)
    penalties: dict[str, float] | None = None  # the engine's evaluation preset values


def _format_errors(err: ValidationError, prefix: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for e in err.errors():
        loc = [str(p) for p in e.get("loc", ())]
        msg = e.get("msg", "invalid value")
        if e.get("type") == "extra_forbidden":
            msg = "unknown key"
        elif e.get("type") == "value_error" and msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
            # messages from model validators start with "key: ..."
            if not loc and ":" in msg:
                key, _, rest = msg.partition(":")
                if key.isidentifier():
                    loc, msg = [key], rest.strip()
        elif "input" in e and e.get("type") not in ("missing",):
            msg = f"{msg} (got {e['input']!r})"
        path = ".".join([prefix, *loc]) if loc else prefix
        out.append((path, msg))
    return out


def _unknown_key_hint(section: type[BaseModel], errors: list[tuple[str, str]], prefix: str):
    allowed = ", ".join(sorted(section.model_fields))
    return [
        (p, f"unknown key (expected one of: {allowed})") if m == "unknown key" else (p, m)
        for p, m in errors
    ]


def parse_model(model: dict[str, Any]) -> ModelSection:
    return ModelSection.model_validate(dict(model or {}))


def parse_data(data: dict[str, Any]) -> DataSection:
    return DataSection.model_validate(dict(data or {}))


def parse_runner(runner: dict[str, Any]) -> RunnerSection:
    return RunnerSection.model_validate(dict(runner or {}))


def parse_phase(kind: str, train: dict[str, Any]) -> BaseModel:
    if kind not in PHASE_MODELS:
        raise ValueError(f"unknown phase kind {kind!r}; expected one of: {', '.join(PHASE_MODELS)}")
    return PHASE_MODELS[kind].model_validate({k: v for k, v in dict(train or {}).items() if k != "data"})


#: ``model_type`` values of a Hugging Face config.json that each family loads.
HF_MODEL_TYPES: dict[str, tuple[str, ...]] = {
    "gemma3": ("gemma3", "gemma3_text"),
    "qwen3": ("qwen3",),
    "qwen2": ("qwen2",),
    "llama3": ("llama",),
}


def _check_config_json(m: ModelSection, p: Path) -> list[tuple[str, str]]:
    """config.json must parse and, when it names a model_type, be one the preset's family loads."""
    f = p / "config.json"
    if not f.is_file():
        return []
    try:
        raw = json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        return [("model.path", f"{f} is not readable JSON: {exc}")]
    mt = raw.get("model_type") if isinstance(raw, dict) else None
    ok = HF_MODEL_TYPES.get(m.family, ())
    if mt is not None and mt not in ok:
        want = " or ".join(repr(t) for t in ok)
        return [("model.path", f"{f} has model_type {mt!r}; preset {m.preset!r} loads model_type {want}")]
    return []


def init_dir(m: ModelSection) -> Path | None:
    """The policy directory ``init_from`` names (None: random init)."""
    if m.init_from is None:
        return None
    return SHIPPED_POLICY if m.init_from == SHIPPED else Path(m.init_from).expanduser()


def check_init_from(m: ModelSection) -> list[tuple[str, str]]:
    """``init_from`` names a complete policy directory whose dimensions agree with any set explicitly."""
    p = init_dir(m)
    if p is None:
        return []
    what = "the shipped policy (broken installation?)" if m.init_from == SHIPPED else "checkpoint directory"
    hint = f"expected {SHIPPED!r} or a directory written by bench/train_tiny_policy.py ({', '.join(POLICY_FILES)})"
    if not p.is_dir():
        return [("model.init_from", f"{what} does not exist: {p}; {hint}")]
    missing = [f for f in POLICY_FILES if not (p / f).is_file()]
    if missing:
        return [("model.init_from", f"{what} {p} lacks {', '.join(missing)}; {hint}")]
    try:
        raw = json.loads((p / "config.json").read_text())
        dims = {k: int(raw[v]) for k, v in POLICY_DIMS.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [("model.init_from", f"{p / 'config.json'} is not a Gemma 3 config.json ({exc!r})")]
    if raw.get("model_type") not in HF_MODEL_TYPES["gemma3"]:
        return [("model.init_from", f"{p / 'config.json'} has model_type {raw.get('model_type')!r}; expected a Gemma 3 model")]
    errs: list[tuple[str, str]] = []
    for key in sorted(m.model_fields_set & set(POLICY_DIMS)):
        if getattr(m, key) != dims[key]:
            errs.append((f"model.{key}", f"{getattr(m, key)} differs from the {dims[key]} of the init_from checkpoint {p}; remove the key (init_from sets it)"))
    if m.init_seed is not None:
        errs.append(("model.init_seed", "has no effect with init_from (the weights come from the checkpoint); remove one of them"))
    if m.tokenizer_path is not None:
        errs.append(("model.tokenizer_path", f"init_from brings its own tokenizer ({p / 'tokenizer.model'}); remove tokenizer_path"))
    return errs


def check_model_paths(m: ModelSection) -> list[tuple[str, str]]:
    """Filesystem checks for real weights (cheap: no jax, no reading of weights)."""
    errs: list[tuple[str, str]] = []
    if m.is_tiny:
        errs += check_init_from(m)
        if m.path:
            errs.append(("model.path", "preset 'tiny' is randomly initialised; remove path or pick a family preset"))
        if m.effective_lora_rank > 0:
            errs.append(
                (
                    "model.lora_rank",
                    "preset 'tiny' must be fully fine-tuned (lora_rank = 0): LoRA on random weights barely learns",
                )
            )
        return errs
    if not m.path:
        errs.append(("model.path", f"required for preset {m.preset!r}: a local checkpoint directory"))
        return errs
    p = Path(m.path).expanduser()
    if not p.exists():
        errs.append(("model.path", f"checkpoint directory does not exist: {p}"))
        return errs
    if not p.is_dir():
        errs.append(("model.path", f"not a directory: {p}"))
        return errs
    if not any(p.glob("*.safetensors")):
        errs.append(("model.path", f"no *.safetensors files in {p}"))
    errs += _check_config_json(m, p)
    tok = Path(m.tokenizer_path).expanduser() if m.tokenizer_path else p
    if not tok.exists():
        errs.append(("model.tokenizer_path", f"tokenizer path does not exist: {tok}"))
    elif tok.is_dir() and not (
        (tok / "tokenizer.model").exists() or (tok / "tokenizer.json").exists()
    ):
        key = "model.tokenizer_path" if m.tokenizer_path else "model.path"
        errs.append((key, f"no tokenizer.model or tokenizer.json in {tok}"))
    return errs


def validate_config(
    model: dict[str, Any], data: dict[str, Any], runner: dict[str, Any]
) -> list[tuple[str, str]]:
    """All problems of the three tables, as (key path, message); empty when valid."""
    errs: list[tuple[str, str]] = []
    parsed_model: ModelSection | None = None
    for prefix, section, value in (
        ("model", ModelSection, model),
        ("data", DataSection, data),
        ("runner", RunnerSection, runner),
    ):
        try:
            obj = section.model_validate(dict(value or {}))
        except ValidationError as exc:
            errs += _unknown_key_hint(section, _format_errors(exc, prefix), prefix)
            continue
        if prefix == "model":
            parsed_model = obj  # type: ignore[assignment]
        if prefix == "data" and obj.source == "sharegpt" and obj.path:  # type: ignore[attr-defined]
            if not Path(obj.path).expanduser().exists():  # type: ignore[attr-defined]
                errs.append(("data.path", f"file does not exist: {obj.path}"))  # type: ignore[attr-defined]
        if prefix == "data" and obj.source == "jsonl":  # type: ignore[attr-defined]
            errs += _check_jsonl(obj)  # type: ignore[arg-type]
    if parsed_model is not None:
        errs += check_model_paths(parsed_model)
    return errs


def _check_jsonl(d: DataSection) -> list[tuple[str, str]]:
    """Every file of a jsonl [data] table reads, holds the mapped fields and is not empty."""
    from runners.datasets import DataFileError, read_jsonl

    errs: list[tuple[str, str]] = []
    files = [("data", d.path, d.fields, d.columns), ("data.eval", d.eval_path, d.fields, d.columns)]
    files += [(f"data.sets.{n}", s.path, s.fields if s.fields is not None else d.fields,
               s.columns if s.columns is not None else d.columns) for n, s in d.sets.items()]
    for key, path, fields, cols in files:
        if path is None:
            continue
        try:
            read_jsonl(Path(path).expanduser(), fields, cols, key, eval_file=key == "data.eval")
        except DataFileError as e:
            k = e.key.replace("data.eval.path", "data.eval_path").replace("data.eval.", "data.")
            errs.append((k, e.message))
    return errs


def phase_data(train: dict[str, Any]) -> Any:
    """A phase's ``train.data``: None (the default dataset), a set name, or {name: weight}."""
    return dict(train or {}).get("data")


def validate_phase_data(kind: str, train: dict[str, Any], data: dict[str, Any]) -> list[tuple[str, str]]:
    """``train.data`` names datasets of [data] (a mixture: positive weights, grpo phases only);
    an SFT phase's dataset has responses."""
    sel = phase_data(train)
    try:
        d = DataSection.model_validate(dict(data or {}))
    except ValidationError:
        return []  # reported on [data] itself
    if sel is None:
        names: dict[str, float] = {"default": 1.0}
    elif isinstance(sel, str):
        names = {sel: 1.0}
    elif isinstance(sel, dict) and sel:
        names = sel
    else:
        return [("train.data", f"expected a dataset name or a table {{NAME = weight, ...}}, got {sel!r}")]
    known = d.set_names()
    out: list[tuple[str, str]] = []
    from curriculum.errors import one_of, suggest

    for n, w in names.items():
        if n not in known:
            out.append((f"train.data.{n}" if isinstance(sel, dict) else "train.data",
                        f"unknown dataset '{n}'; expected {one_of(known)}{suggest(n, known)} "
                        + ("([data] fresh_items = N declares 'fresh')" if d.source == "synthetic" else "([data.sets.NAME] declares one)")))
        elif isinstance(w, bool) or not isinstance(w, (int, float)) or not w > 0 or w != w or w == float("inf"):
            out.append((f"train.data.{n}", f"a mixture weight is a positive number, got {w!r}"))
    if isinstance(sel, dict) and len(sel) > 1 and kind != "grpo":
        out.append(("train.data", "a weighted mixture is for grpo phases; an sft phase names one dataset"))
    if kind == "sft" and not out and d.source == "jsonl":
        (n,) = names
        f = d.fields if n == "default" or d.sets[n].fields is None else d.sets[n].fields
        if "response" not in f and "messages" not in f:
            out.append(("train.data", f"sft phase on dataset '{n}', whose records have no SFT target: "
                        "map fields.response (prompt/response pairs) or fields.messages (chats)"))
    return out


def validate_phase(kind: str, train: dict[str, Any]) -> list[tuple[str, str]]:
    """Problems of one phase's ``train`` table, as ("train.<key>", message)."""
    if kind not in PHASE_MODELS:
        return [("kind", f"unknown phase kind {kind!r}; expected one of: {', '.join(PHASE_MODELS)}")]
    section = PHASE_MODELS[kind]
    try:
        section.model_validate({k: v for k, v in dict(train or {}).items() if k != "data"})
    except ValidationError as exc:
        return _unknown_key_hint(section, _format_errors(exc, "train"), "train")
    return []


def _metric_names() -> frozenset[str]:
    from runners.base import REWARD_STEP_METRICS, TRAINER_METRICS

    extra = ("step_time", "perplexity", "pg_clipfrac", "reward_errors")
    # the outcome metrics come from the reward's declaration (the spec adds them)
    return frozenset(REWARD_STEP_METRICS + TRAINER_METRICS + extra)


#: Every per-step metric name the Tunix runner can report (guards may only use these).
METRIC_NAMES: frozenset[str] = _metric_names()
