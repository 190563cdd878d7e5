"""GIST on a Swin Transformer: where the token goes, what it sees, what is refused (tiny random Swin, CPU)."""

from __future__ import annotations

import pytest
import torch

from gist_ray.backbones import TINY, TinySwin, backbone_family, create_backbone, vit_of
from gist_ray.blocks import SequenceBlock, global_window_attention
from gist_ray.config import ConfigError, GistConfig, build_config
from gist_ray.model import build_model

SWIN = "swin_test_tiny"


def images(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def last_stage_block(model):
    return vit_of(model).layers[-1].blocks[0]


def test_families_of_names() -> None:
    assert backbone_family("swin_b") == backbone_family(SWIN) == "swin"
    assert backbone_family("vit_b") == backbone_family("vit_test_tiny") == "vit"
    assert backbone_family("resnet50") is None


def test_global_window_attention_equals_the_blocks_own_attention_without_extra_tokens() -> None:
    torch.manual_seed(0)
    swin = create_backbone(SWIN, 5, weights="none").eval()
    block = swin.layers[-1].blocks[0]
    grid = torch.randn(2, 4, 4, block.norm1.normalized_shape[0])
    with torch.no_grad():
        own = block._attn(block.norm1(grid)).flatten(1, 2)
        seq = global_window_attention(block, block.norm1(grid).flatten(1, 2))
        torch.testing.assert_close(seq, own, rtol=0, atol=1e-5)
        torch.testing.assert_close(SequenceBlock(block)(grid.flatten(1, 2)), block(grid).flatten(1, 2), rtol=0, atol=1e-5)


def test_token_joins_only_the_last_stage_and_sees_the_whole_image() -> None:
    torch.manual_seed(0)
    plain = build_model(SWIN, 5, "gist_adapter", {}, GistConfig(enabled=False), weights="none").eval()
    torch.manual_seed(0)
    gist = build_model(SWIN, 5, "gist_adapter", {}, GistConfig(enabled=True, dropout=0.0), weights="none").eval()
    x = images()
    seen = {}
    for name, model in (("plain", plain), ("gist", gist)):
        hook = vit_of(model).layers[0].register_forward_hook(lambda m, a, out, name=name: seen.__setitem__(name, out))
        with torch.no_grad():
            model(x)
        hook.remove()
    torch.testing.assert_close(seen["gist"], seen["plain"], rtol=0, atol=0)  # stage 1: untouched
    with torch.no_grad():
        assert not torch.allclose(gist(x), plain(x), atol=1e-4)  # the pooled side attends to the token
    gist.train()
    x.requires_grad_(True)
    _, gist_logits = gist(x)
    gist_logits[:, 0].sum().backward()
    quadrants = [x.grad[:, :, :16, :16], x.grad[:, :, :16, 16:], x.grad[:, :, 16:, :16], x.grad[:, :, 16:, 16:]]
    assert all(q.abs().sum() > 0 for q in quadrants)  # global attention: every image region reaches the token


def test_gist_is_refused_when_the_last_stage_spans_several_windows(monkeypatch) -> None:
    monkeypatch.setitem(TINY, "swin_test_wide", TinySwin(img_size=64))  # last stage 8x8 tokens in 4x4 windows
    create_backbone("swin_test_wide", 5, weights="none")  # fine without the token
    with pytest.raises(ValueError, match=r"one attention window.*gist.enabled=false"):
        build_model("swin_test_wide", 5, "linear", {}, GistConfig(enabled=True), weights="none")


@pytest.mark.parametrize("method", ["vpt_deep", "fact_tt", "gift"])
def test_vit_only_methods_are_refused_on_swin_naming_the_field(method: str) -> None:
    with pytest.raises(ConfigError, match=rf"method\.name: {method} is defined on vit backbones"):
        build_config({}, [f"model.backbone={SWIN}", "model.weights=none", f"method.name={method}"])
    with pytest.raises(ConfigError, match=r"method\.name:"):
        build_model(SWIN, 5, method, {}, weights="none")


def test_combo_part_not_defined_on_swin_is_named() -> None:
    with pytest.raises(ConfigError, match=r"method\.methods\[1\]\.name: vpt_shallow is defined on vit backbones"):
        build_config({}, [f"model.backbone={SWIN}", "model.weights=none", "method.name=combo"])
    with pytest.raises(ConfigError, match=r"method\.methods\[1\]\.name: vpt_shallow"):
        build_model(SWIN, 5, "combo", {}, weights="none")


def test_swin_weights_load_from_a_local_file(tmp_path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(3)
    source = create_backbone(SWIN, 5, weights="none").eval()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "swin.safetensors"))
    torch.manual_seed(4)
    loaded = create_backbone(SWIN, 5, weights=str(tmp_path / "swin.safetensors")).eval()
    loaded.head.fc.load_state_dict(source.head.fc.state_dict())  # heads are always fresh
    with torch.no_grad():
        torch.testing.assert_close(loaded(images()), source(images()), rtol=0, atol=0)


def test_swin_gist_run_trains(tmp_path) -> None:
    from gist_ray.train.loop import GistRun, LocalReporter

    cfg = build_config({}, [f"model.backbone={SWIN}", "model.weights=none", "method.name=gist_adapter",
                            "data.name=synthetic", "data.n_train=32", "data.n_val=16", "data.n_test=16",
                            "train.epochs=2", "train.batch_size=8", f"output_dir={tmp_path}"])
    metrics = GistRun(cfg, LocalReporter(tmp_path)).fit()
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert metrics["train/loss"] == metrics["train/loss"]  # not NaN
