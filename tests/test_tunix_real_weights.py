"""Real-weights path: a tiny Gemma 3 saved in the Hugging Face on-disk format (model.safetensors +
config.json + tokenizer.model) loads back through the runner's normal code, full and LoRA."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from test_tunix_support import TINY_MODEL, assert_same, params, real_context, sft_phase, weights

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    """A random tiny Gemma 3 + a SentencePiece tokenizer, written like a downloaded HF checkpoint."""
    from rewards.data import generate_items

    from runners.tunix import model as modelmod
    from runners.tunix.config import ModelSection
    from runners.tunix.data import prompt_text
    from runners.tunix.text import TEMPLATES, train_sentencepiece

    d = tmp_path_factory.mktemp("hf") / "gemma3-tiny"
    items = generate_items(60, seed=5)
    texts = [prompt_text(it, TEMPLATES["gemma"], "") for it in items] + [it.reference for it in items]
    tok = train_sentencepiece(texts, d / "tokenizer.model", vocab_size=400, extra_symbols=TEMPLATES["gemma"].markers)
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    sp.Load(str(tok))
    m = ModelSection(**TINY_MODEL)
    mesh = modelmod.make_mesh()
    model = modelmod.build_tiny(m, sp.get_piece_size(), seed=11, mesh=mesh, max_len=512)
    modelmod.save_gemma3_safetensors(model, d)
    return d, params(model)


def _ctx(tmp_path, path, **model):
    return real_context(tmp_path, "gemma3-1b", path, **model)


def test_full_weights_load_bit_exact_and_train(tmp_path, hf_checkpoint):
    from runners.tunix.config import validate_config
    from runners.tunix.runner import TunixRunner

    path, ref = hf_checkpoint
    assert validate_config({"preset": "gemma3-1b", "path": str(path)}, {}, {}) == []
    r = TunixRunner()
    r.open(_ctx(tmp_path, path, lora_rank=0))
    assert not r.lora
    got = weights(r)
    assert_same(got, ref)
    r.setup_phase(sft_phase())
    m = next(r.train(1))
    assert math.isfinite(m["loss"])
    r.close()


def test_lora_on_real_weights_trains_and_checkpoints_only_lora(tmp_path, hf_checkpoint):
    import jax
    from flax import nnx

    from runners.tunix import checkpoint as ck
    from runners.tunix.runner import TunixRunner

    path, ref = hf_checkpoint
    r = TunixRunner()
    r.open(_ctx(tmp_path, path, lora_rank=4, lora_alpha=8.0))
    assert r.lora
    base_before = weights(r)
    r.setup_phase(sft_phase())
    list(r.train(2))
    base_after = weights(r)
    # LoRA training leaves the base weights untouched
    for k in ref:
        assert k in base_after and np.array_equal(base_after[k], base_before[k])
    lora = jax.tree.leaves(nnx.state(r.model, nnx.LoRAParam))
    assert lora
    out = tmp_path / "ck"
    r.save(out)
    arrays, meta = ck.load(out)
    assert meta["lora"] is True
    n_saved = len(jax.tree.leaves(arrays["model"]))
    assert n_saved == len(lora)  # only the LoRA params are in the checkpoint
    lora_vals = [np.array(x) for x in lora]

    r2 = TunixRunner()
    r2.open(_ctx(tmp_path, path, lora_rank=4, lora_alpha=8.0))
    r2.restore(out)
    for a, b in zip(lora_vals, jax.tree.leaves(nnx.state(r2.model, nnx.LoRAParam))):
        assert np.array_equal(a, np.array(b))
    r.close()
    r2.close()


def test_wrong_path_is_a_clear_error(tmp_path, hf_checkpoint):
    from runners.tunix.runner import TunixRunner

    path, _ = hf_checkpoint
    bad = tmp_path / "copy"
    shutil.copytree(path, bad)
    (bad / "tokenizer.model").unlink()
    with pytest.raises(ValueError, match="model.path: no tokenizer.model"):
        TunixRunner().open(_ctx(tmp_path, bad))
