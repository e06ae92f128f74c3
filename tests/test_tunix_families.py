"""Real-weights path of the Qwen3 and Llama 3 families (Qwen2.5 for the config mapping).

A tiny random Qwen3 / Llama 3 built with Tunix is written in the Hugging Face on-disk format
(model.safetensors + config.json, by ``runners.tunix.model.save_*_safetensors``) next to a
byte-level BPE tokenizer trained here with the ``tokenizers`` library and saved as an HF tokenizer
directory (tokenizer.json + tokenizer_config.json) with the special tokens of the real family.
The runner then loads the directory through its normal code (config.json -> Tunix ModelConfig,
Tunix's safetensors loader, ``AutoTokenizer``) and trains one SFT and one GRPO step with LoRA.
No part of Tunix is mocked.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from test_tunix_support import assert_same, grpo_phase, params, real_context, sft_phase, weights

pytestmark = pytest.mark.slow

#: Dimensions of the tiny test models: heads x head_dim (96) != embed_dim (64) and grouped KV
#: heads, so a wrong transpose or reshape in the exporter cannot round-trip by accident.
TINY_DIMS = {"num_layers": 2, "embed_dim": 64, "hidden_dim": 128, "num_heads": 4, "head_dim": 24, "num_kv_heads": 2}


@dataclasses.dataclass(frozen=True)
class Family:
    preset: str
    template: str  # the runner's default chat template of the family
    specials: tuple[str, ...]  # special tokens, appended after the BPE vocabulary (as in the real ones)
    bos: str | None
    eos: str
    pad: str | None
    vocab_multiple: int  # Qwen pads its embedding table past the tokenizer; Llama 3 does not


QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
FAMILIES = {
    # Qwen3: no BOS, EOS <|im_end|> (also the chatml turn end), pad <|endoftext|>
    "qwen3": Family(
        "qwen3-0.6b", "chatml", QWEN_SPECIALS, bos=None, eos="<|im_end|>", pad="<|endoftext|>", vocab_multiple=64
    ),
    # Llama 3: BOS added by the tokenizer's post-processor, no pad token (Tunix pads with EOS)
    "llama3": Family(
        "llama3.2-1b",
        "plain",
        ("<|begin_of_text|>", "<|end_of_text|>"),
        bos="<|begin_of_text|>",
        eos="<|end_of_text|>",
        pad=None,
        vocab_multiple=1,
    ),
    # Qwen2.5: Qwen's tokenizer; only the weights round trip is tested for it
    "qwen2": Family(
        "qwen2.5-0.5b", "chatml", QWEN_SPECIALS, bos=None, eos="<|im_end|>", pad="<|endoftext|>", vocab_multiple=64
    ),
}
RUNNER_FAMILIES = ("llama3", "qwen3")  # opened by the runner, trained with SFT and GRPO


def train_hf_tokenizer(
    texts: list[str],
    out_dir: Path,
    fam: Family,
    vocab_size: int = 640,
    specials_first: bool = False,
    add_bos: bool = True,
) -> Path:
    """A byte-level BPE (like Qwen's and Llama 3's) trained on ``texts``, saved as an HF tokenizer.

    The answer tags are added tokens (Qwen3 has ``<think>`` that way), the family's markers are
    special tokens, after the BPE vocabulary as in the real tokenizers (``specials_first``: ids
    0, 1, ...); with a BOS and ``add_bos`` the post-processor prepends it, as Llama 3's does.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from runners.tunix.text import TAGS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, normalized=False, special=True) for t in fam.specials]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=specials if specials_first else [],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(t, normalized=False) for t in TAGS])
    tok.add_special_tokens(specials)
    if fam.bos and add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{fam.bos} $A", special_tokens=[(fam.bos, tok.token_to_id(fam.bos))]
        )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=fam.bos,
        eos_token=fam.eos,
        pad_token=fam.pad,
        clean_up_tokenization_spaces=False,
    )
    hf.save_pretrained(out_dir)
    return out_dir


def tiny_model(family: str, vocab: int, tied: bool, seed: int = 11):
    """A random tiny Tunix model of the family (the preset config with TINY_DIMS)."""
    import jax.numpy as jnp
    from tunix.models import automodel, dummy_model_creator
    from tunix.models.llama3 import model as llama3
    from tunix.models.qwen2 import model as qwen2
    from tunix.models.qwen3 import model as qwen3

    from runners.tunix import model as modelmod
    from runners.tunix.config import FAMILIES as PRESETS

    cls = {"qwen3": qwen3.Qwen3, "qwen2": qwen2.Qwen2, "llama3": llama3.Llama3}[family]
    base = automodel.call_model_config(PRESETS[FAMILIES[family].preset])
    tie_field = modelmod.HF_DECODERS[family][2]
    cfg = dataclasses.replace(base, vocab_size=vocab, **{tie_field: tied}, **TINY_DIMS)
    return dummy_model_creator.create_dummy_model(
        cls, cfg, mesh=modelmod.make_mesh(), dtype=jnp.float32, random_seed=seed
    )


def _texts(template: str) -> list[str]:
    from rewards.data import generate_items

    from runners.tunix.data import prompt_text
    from runners.tunix.text import TEMPLATES

    items = generate_items(60, seed=5)
    return [prompt_text(it, TEMPLATES[template], "") for it in items] + [it.reference for it in items]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """family -> HF tokenizer directory (trained once per module)."""
    root = tmp_path_factory.mktemp("tok")
    out = {f: train_hf_tokenizer(_texts(FAMILIES[f].template), root / f, FAMILIES[f]) for f in RUNNER_FAMILIES}
    return dict(out, qwen2=out["qwen3"])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizers):
    """(family, tied) -> (checkpoint dir, reference weights), built once per module."""
    from runners.tunix import model as modelmod
    from runners.tunix.text import load_tokenizer

    cache: dict[tuple[str, bool], tuple[Path, dict[str, np.ndarray]]] = {}

    def get(family: str, tied: bool = True):
        if (family, tied) not in cache:
            fam = FAMILIES[family]
            d = tmp_path_factory.mktemp("hf") / f"{family}-{'tied' if tied else 'untied'}"
            shutil.copytree(tokenizers[family], d)
            n = len(load_tokenizer(d))
            vocab = -(-n // fam.vocab_multiple) * fam.vocab_multiple
            model = tiny_model(family, vocab, tied)
            getattr(modelmod, f"save_{family}_safetensors")(model, d)
            cache[(family, tied)] = d, params(model)
        return cache[(family, tied)]

    return get


def _ctx(tmp_path, family: str, path, **model):
    return real_context(tmp_path, FAMILIES[family].preset, path, **model)


# --------------------------------------------------------------------------- config.json

#: The published config.json fields of the real checkpoints (Hugging Face hub, abridged).
PUBLISHED = {
    "qwen3-0.6b": {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151936, "hidden_size": 1024,
        "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
        "head_dim": 128, "rope_theta": 1000000, "rms_norm_eps": 1e-06, "tie_word_embeddings": True,
    },
    "qwen3-1.7b": {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151936, "hidden_size": 2048,
        "intermediate_size": 6144, "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
        "head_dim": 128, "rope_theta": 1000000, "rms_norm_eps": 1e-06, "tie_word_embeddings": True,
    },
    "qwen2.5-0.5b": {  # no head_dim: hidden_size / num_attention_heads
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896,
        "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "tie_word_embeddings": True,
    },
    "llama3.2-1b": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 2048,
        "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 64, "rope_theta": 500000.0, "rms_norm_eps": 1e-05, "tie_word_embeddings": True,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    },
    "llama3.2-3b": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 3072,
        "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24, "num_key_value_heads": 8,
        "head_dim": 128, "rope_theta": 500000.0, "rms_norm_eps": 1e-05, "tie_word_embeddings": True,
    },
}  # fmt: skip


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
def test_published_config_json_gives_tunix_preset(tmp_path, preset):
    """The real checkpoints' config.json maps to exactly Tunix's preset config of the family."""
    from tunix.models import automodel

    from runners.tunix.config import FAMILIES as PRESETS
    from runners.tunix.config import ModelSection
    from runners.tunix.model import real_config

    (tmp_path / "config.json").write_text(json.dumps(PUBLISHED[preset]))
    got = real_config(ModelSection(preset=preset, path=str(tmp_path)), tmp_path)
    assert got == automodel.call_model_config(PRESETS[preset])
    # without config.json: the preset itself
    (tmp_path / "config.json").unlink()
    assert real_config(ModelSection(preset=preset, path=str(tmp_path)), tmp_path) == got


def test_config_json_dimensions_override_the_preset(tmp_path):
    """Any shape loads: every dimension comes from config.json (transformers 5 rope_parameters too)."""
    from runners.tunix.config import ModelSection
    from runners.tunix.model import real_config, rope_caveat

    c = dict(PUBLISHED["qwen2.5-0.5b"], hidden_size=64, intermediate_size=96, num_hidden_layers=3,
             num_attention_heads=4, num_key_value_heads=1, vocab_size=700, rms_norm_eps=1e-5,
             tie_word_embeddings=False)  # fmt: skip
    del c["rope_theta"]
    c["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
    (tmp_path / "config.json").write_text(json.dumps(c))
    got = real_config(ModelSection(preset="qwen2.5-0.5b", path=str(tmp_path)), tmp_path)
    dims = (got.embed_dim, got.hidden_dim, got.num_layers, got.num_heads, got.head_dim, got.num_kv_heads)
    assert dims == (64, 96, 3, 4, 16, 1)
    assert (got.vocab_size, got.norm_eps, got.rope_theta, got.use_tied_embedding) == (700, 1e-5, 10000, False)
    # Tunix's Qwen3 / Llama 3 attention ignore rope_theta and rope scaling: say so when it matters
    llama = PUBLISHED["llama3.2-1b"]
    cfg = real_config(ModelSection(preset="llama3.2-1b", path=str(tmp_path)), tmp_path / "absent")
    note = rope_caveat("llama3", cfg, llama)
    assert "500000" in note and "'llama3'" in note
    assert rope_caveat("qwen3", dataclasses.replace(got, rope_theta=1_000_000), PUBLISHED["qwen3-0.6b"]) is None
    assert rope_caveat("qwen2", got, c) is None


@pytest.mark.parametrize("family", RUNNER_FAMILIES)
def test_exported_checkpoint_is_hf_layout(checkpoint, family):
    """config.json parses as a transformers config and every tensor has the HF (out, in) shape."""
    import safetensors.numpy as st
    from transformers import AutoConfig

    path, ref = checkpoint(family)
    c = AutoConfig.from_pretrained(str(path), local_files_only=True)
    assert c.model_type == {"qwen3": "qwen3", "llama3": "llama"}[family]
    assert c.tie_word_embeddings is True
    d, n, k, h = c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim
    assert (d, n, k, h, c.intermediate_size, c.num_hidden_layers) == (64, 4, 2, 24, 128, 2)
    t = st.load_file(str(path / "model.safetensors"))
    assert t["model.embed_tokens.weight"].shape == (c.vocab_size, d)
    p = "model.layers.1."
    assert t[p + "self_attn.q_proj.weight"].shape == (n * h, d)
    assert t[p + "self_attn.k_proj.weight"].shape == (k * h, d)
    assert t[p + "self_attn.v_proj.weight"].shape == (k * h, d)
    assert t[p + "self_attn.o_proj.weight"].shape == (d, n * h)
    assert t[p + "mlp.gate_proj.weight"].shape == (c.intermediate_size, d)
    assert t[p + "mlp.down_proj.weight"].shape == (d, c.intermediate_size)
    assert ("model.layers.0.self_attn.q_norm.weight" in t) == (family == "qwen3")
    assert "lm_head.weight" not in t  # tied, as in the real 0.6B / 1B checkpoints
    # HF's q_proj row r is head r // head_dim, dim r % head_dim: Tunix's (D, N, H) kernel
    q = ref["['layers'][1]['attn']['q_proj']['w']"]
    assert np.array_equal(t[p + "self_attn.q_proj.weight"][2 * h + 5], q[:, 2, 5])
    assert len(t) == len(ref)  # one tensor per parameter, nothing extra


# --------------------------------------------------------------------------- runner end to end


def _lora_free(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in w.items() if "lora" not in k}


def _check_tokens(r, family: str) -> None:
    """The runner's view of the HF tokenizer: ids, tags, round trip, SFT rows vs. the sampler."""
    from runners.tunix.data import prompt_text
    from runners.tunix.text import TAGS

    fam = FAMILIES[family]
    tid = r.tokenizer.convert_tokens_to_ids
    assert r.template.name == fam.template
    assert r.eos_id == tid(fam.eos)
    assert r.pad_id == (tid(fam.pad) if fam.pad else r.eos_id)  # no pad token: Tunix pads with EOS
    assert r.bos_id == (tid(fam.bos) if fam.bos else None)
    assert r.end_id is None and r.stop_tokens == [r.eos_id]  # Qwen: <|im_end|> is EOS; plain: no marker
    for piece in (*TAGS, *r.template.markers):
        assert len(r.enc.encode(piece)) == 1, piece  # tags and chat markers stay single tokens
    data = r._sft_data
    assert data.dropped == 0  # so SFT row i is train item i
    i = int(np.argmax(data.lengths < data.max_len))  # a row not cut by max_seq_len
    assert data.lengths[i] < data.max_len
    it = r.train_items[i]
    prompt = prompt_text(it, r.template, r.system_prompt)
    ids = r.enc.encode(prompt + it.reference)
    assert r.tok.decode(ids) == prompt + it.reference  # exact round trip
    # Tunix's sampler (rollouts, eval) must see the prompt tokens SFT trained on:
    # the row is [BOS] prompt | reference EOS
    sampled = [int(x) for x in r._sampler(64).tokenize(prompt)]
    assert sampled == ([r.bos_id] if fam.bos else []) + r.enc.encode(prompt)
    row = [int(x) for x in data.tokens[i][: data.lengths[i]]]
    assert row[: len(sampled)] == sampled
    assert row[-1] == r.eos_id and row[-2] != r.eos_id  # one EOS ends the target
    assert r.tok.decode(row[len(sampled) : -1]) == it.reference


#: The KL reference model (a clone of the LoRA model) does not depend on the architecture: one
#: family covers it, the other saves its compilation.
GRPO_BETA = {"qwen3": 0.04, "llama3": 0.0}


@pytest.mark.parametrize("family", RUNNER_FAMILIES)
def test_loads_exactly_then_sft_and_grpo_with_lora(tmp_path, checkpoint, family):
    from runners.tunix.config import validate_config
    from runners.tunix.runner import TunixRunner

    path, ref = checkpoint(family)
    preset = FAMILIES[family].preset
    assert validate_config({"preset": preset, "path": str(path)}, {}, {}) == []
    r = TunixRunner()
    r.open(_ctx(tmp_path, family, path))
    try:
        assert r.lora  # LoRA is the default for real weights
        before = weights(r)
        assert_same(_lora_free(before), ref)  # every saved tensor back, bit-exact, nothing missing
        lora_keys = set(before) - set(ref)
        assert lora_keys and all("lora" in k for k in lora_keys)

        r.setup_phase(sft_phase())
        m = next(r.train(1))
        assert math.isfinite(m["loss"]) and m["loss"] > 0 and math.isfinite(m["grad_norm"])
        _check_tokens(r, family)
        after_sft = weights(r)
        assert any(not np.array_equal(after_sft[k], before[k]) for k in lora_keys)  # the adapters trained

        phase = grpo_phase(beta=GRPO_BETA[family])
        r.setup_phase(phase)
        g = next(r.train(1))
        hp = phase.train
        assert math.isfinite(g["loss"]) and math.isfinite(g["reward_mean"])
        assert math.isfinite(g["kl"]) if hp["beta"] else g["kl"] == 0.0
        rewards = r._reward.rewards
        assert len(rewards) == hp["batch_size"] * hp["num_generations"] and all(math.isfinite(x) for x in rewards)
        assert len(r._reward.completions) == len(rewards) and all(isinstance(c, str) for c in r._reward.completions)
        assert_same(_lora_free(weights(r)), ref)  # LoRA training leaves the base weights alone
    finally:
        r.close()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_untied_lm_head_round_trips(checkpoint, family):
    """An untied checkpoint carries lm_head.weight (HF (V, D)); it loads into Tunix's (D, V) head.
    Qwen2's q/k/v biases are flat (heads * head_dim,) in both layouts."""
    import safetensors.numpy as st

    from runners.tunix import model as modelmod
    from runners.tunix.config import ModelSection

    path, ref = checkpoint(family, tied=False)
    assert any("lm_head" in k for k in ref)
    t = st.load_file(str(path / "model.safetensors"))
    assert np.array_equal(t["lm_head.weight"], ref["['lm_head']['w']"].T)
    assert ("model.layers.0.self_attn.k_proj.bias" in t) == (family == "qwen2")
    if family == "qwen2":
        assert json.loads((path / "config.json").read_text())["attention_bias"] is True
        assert np.array_equal(t["model.layers.0.self_attn.k_proj.bias"], ref["['layers'][0]['attn']['k_bias']"])
    m = ModelSection(preset=FAMILIES[family].preset, path=str(path))
    model = modelmod.build_real(m, modelmod.make_mesh())
    assert_same(params(model), ref)


def test_wrong_paths_are_clear_errors(tmp_path, checkpoint):
    """Missing dir, missing tokenizer, another family's checkpoint, tensors that do not fit the
    config and a tokenizer larger than the embedding: each a ValueError naming the problem."""
    import safetensors.numpy as st

    from runners.tunix.runner import TunixRunner
    from runners.tunix.text import load_tokenizer

    path, _ = checkpoint("qwen3")

    def fails(family, p, match):
        with pytest.raises(ValueError, match=match):
            TunixRunner().open(_ctx(tmp_path, family, p))

    fails("qwen3", tmp_path / "nope", "model.path: checkpoint directory does not exist")
    no_tok = tmp_path / "no_tok"
    shutil.copytree(path, no_tok)
    (no_tok / "tokenizer.json").unlink()
    fails("qwen3", no_tok, "model.path: no tokenizer.model or tokenizer.json")
    fails("llama3", path, r"model.path: .*model_type 'qwen3'; preset 'llama3.2-1b' loads model_type 'llama'")

    untied = tmp_path / "untied_claim"  # config.json says untied, the file has no lm_head.weight
    shutil.copytree(path, untied)
    cfg = json.loads((untied / "config.json").read_text())
    (untied / "config.json").write_text(json.dumps(dict(cfg, tie_word_embeddings=False)))
    fails("qwen3", untied, r"model.path: could not load the \*.safetensors in .* as qwen3 \(config.json: .*\).*lm_head")

    small = tmp_path / "small_vocab"  # an embedding table with fewer rows than the tokenizer has ids
    shutil.copytree(path, small)
    t = st.load_file(str(small / "model.safetensors"))
    keep = len(load_tokenizer(path)) - 5
    t["model.embed_tokens.weight"] = np.ascontiguousarray(t["model.embed_tokens.weight"][:keep])
    st.save_file(t, str(small / "model.safetensors"))
    (small / "config.json").write_text(json.dumps(dict(cfg, vocab_size=keep)))
    fails("qwen3", small, r"model.path: the tokenizer .* has \d+ tokens but the model's embedding has \d+ rows")


@pytest.mark.parametrize("add_bos", [True, False])
def test_bos_id_zero_follows_the_sampler(tmp_path, checkpoint, add_bos):
    """Tunix's Sampler prepends BOS only when its id is truthy, but an HF post-processor may add it
    anyway: with BOS at id 0, SFT rows must start exactly like the sampler's prompts."""
    from runners.tunix.data import prompt_text
    from runners.tunix.runner import TunixRunner

    path, _ = checkpoint("llama3")
    d = tmp_path / "bos0"
    shutil.copytree(path, d)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (d / f).unlink()
    fam = FAMILIES["llama3"]
    train_hf_tokenizer(_texts(fam.template), d, fam, specials_first=True, add_bos=add_bos)
    r = TunixRunner()
    r.open(_ctx(tmp_path, "llama3", d))
    try:
        assert r.tokenizer.bos_token_id == 0
        assert r.bos_id == (0 if add_bos else None)
        prompt = prompt_text(r.train_items[0], r.template, r.system_prompt)
        sampled = [int(x) for x in r._sampler(64).tokenize(prompt)]
        assert sampled == ([r.bos_id] if r.bos_id is not None else []) + r.enc.encode(prompt)
    finally:
        r.close()
