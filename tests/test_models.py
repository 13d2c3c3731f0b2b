import pytest
import torch

from proxymix.config import ModelConfig, load_config
from proxymix.engine import ContinualRun, run_continual
from proxymix.controllers.baselines import make_baseline
from proxymix.data.tokenize import train_bpe
from proxymix.models import build_model, count_params, train_flops


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "qwen2"])
def test_every_family_builds_and_runs(family):
    m = build_model(ModelConfig(family=family, hidden=16, n_layers=1, n_heads=2), 50, 0, 1, seed=0)
    out = m(input_ids=torch.tensor([[2, 3, 4]])).logits
    assert out.shape == (1, 3, 50)
    assert count_params(m) < sum(p.numel() for p in m.parameters()) + 1  # tied embeddings counted once


def test_flops_formula():
    assert train_flops(1000, 10) == 60000.0


def test_from_pretrained_round_trip(tmp_path, tiny_cfg):
    """Save a trained tiny model + tokenizer, reload through the real from_pretrained path, same outputs."""
    run = ContinualRun(tiny_cfg())
    model = run.accelerator.unwrap_model(run.model)
    model.save_pretrained(tmp_path / "m")
    run.tok.save_pretrained(tmp_path / "m")
    cfg = tiny_cfg(f"model.path={tmp_path / 'm'}")
    loaded = ContinualRun(cfg)
    ids = torch.tensor([list(run.enc["sort"]["test"][0].ids)])
    torch.testing.assert_close(loaded.model(input_ids=ids).logits, model(input_ids=ids).logits)
    assert loaded.tok.get_vocab() == run.tok.get_vocab()


def test_missing_model_path_is_a_clear_error(tmp_path, tiny_cfg):
    from proxymix.config import ConfigError

    with pytest.raises(ConfigError, match="no tokenizer.json"):
        ContinualRun(tiny_cfg(f"model.path={tmp_path}"))
    train_bpe(["a b c"], 20).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="no config.json"):
        ContinualRun(tiny_cfg(f"model.path={tmp_path}"))


def test_lora_trains_adapters_and_freezes_base(tiny_cfg):
    cfg = tiny_cfg("model.lora=true", "model.lora_r=2", "train.lr=0.05")
    torch.manual_seed(0)
    res, run = run_continual(cfg, make_baseline("no_replay"))
    before = ContinualRun(cfg).model.state_dict()  # same seed -> same initial base and adapter init
    after = run.model.state_dict()
    base = [k for k in after if "lora_" not in k]
    adapters = [k for k in after if "lora_B" in k]
    assert adapters and base
    assert all(torch.equal(before[k], after[k]) for k in base)
    assert any(not torch.equal(before[k], after[k]) for k in adapters)
    assert run.n_trainable < run.n_params
