"""Methods against faithful re-implementations of their reference code, written here from the reference files
named in each test (placement and formula: the same tensors through the reference's ops give the same outputs),
and the GIST adapter's initial effect on the logits against the official construction on a ViT-B/16.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm as normal_dist
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from gist_ray.backbones import create_backbone
from gist_ray.blocks import inner_block
from gist_ray.methods import apply_method
from test_method_reference import vit_b16


def tiny_vit(mlp_ratio: float = 4.0) -> nn.Module:
    """A frozen random timm ViT (32 px, 8 px patches, width 32, MLP ratio 4 as ViT-B, 2 blocks)."""
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=mlp_ratio,
                            num_classes=5)
    vit.requires_grad_(False)
    return vit


def perturb(module: nn.Module, seed: int = 4, scale: float = 0.1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g))


def tokens(dim: int = 32, seed: int = 5) -> torch.Tensor:
    return torch.randn(2, 17, dim, generator=torch.Generator().manual_seed(seed))


def lin(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    return F.linear(x, layer.weight, layer.bias)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:  # adapter-bert modeling.py gelu
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x.pow(3))))


# ----------------------------------------------------------------------------- block placement and formula
# Each function is the reference's block forward on timm block ``b`` (eval mode: no dropout, no drop-path), with
# the method's tensors read from our wrapper ``w``.


def gist_block(w, b, x):  # JCruan519/GIST models/vision_transformer.py Block.forward, gist_Adapter.forward
    def adapter(h):
        return lin(F.gelu(lin(h, w.adapter.down)), w.adapter.up) * 0.1

    x = x + b.attn(b.norm1(x)) + adapter(x)
    return x + b.mlp(b.norm2(x)) + adapter(x)


def adaptformer_block(w, b, x):  # AdaptFormer models/custom_modules.py Block.forward, models/adapter.py Adapter
    x = x + b.attn(b.norm1(x))
    adapt_x = lin(F.relu(lin(x, w.adapter.down)), w.adapter.up) * 0.1
    residual = x
    x = b.mlp(b.norm2(x)) + adapt_x
    return residual + x


def bi_adapter_block(w, b, x):  # PETL-ViT binary_adapter/adaptformer.py forward_block, Adapter, utils.py QLinear
    def qlinear(h, layer):
        return F.linear(h, reference_qlinear_weight(layer.weight, 1))

    x = x + b.attn(b.norm1(x))
    return x + b.mlp(b.norm2(x)) + qlinear(F.relu(qlinear(x, w.adapter.down)), w.adapter.up) * 1.0


def houlsby_block(w, b, x):  # adapter-bert modeling.py feedforward_adapter, transformer_model
    def adapter(h, a):
        return h + lin(gelu_tanh(lin(h, a.fn.down)), a.fn.up)

    x = x + adapter(b.attn(b.norm1(x)), w.after_attn)
    return x + adapter(b.mlp(b.norm2(x)), w.after_mlp)


def noah_block(w, b, x):  # NOAH supernet_vision_transformer_timm.py Block.forward, adapter_super.py AdapterSuper
    def adapter(h):
        g = lin(h, w.adapter.fn.down)
        return h + lin(g * torch.sigmoid(1.702 * g), w.adapter.fn.up)

    x = x + b.attn(b.norm1(x))
    return x + adapter(b.mlp(b.norm2(x)))


def repadapter_block(w, b, x):  # RepAdapter repadapter.py forward_vit_block_adapter, RepAdapter.forward
    def rep(h, a):
        g, dg, hg = a.up_weight.shape
        conv_b = nn.Conv1d(g * hg, g * dg, 1, groups=g)
        conv_b.weight.data.copy_(a.up_weight.reshape(g * dg, hg, 1))
        conv_b.bias.data.copy_(a.up_bias)
        t = h.transpose(1, 2)
        conv_a = F.conv1d(t, a.down.weight[:, :, None], a.down.bias)
        return (conv_b(conv_a) * a.scale + t).transpose(1, 2)

    qkv, fc1 = b.attn.qkv, b.mlp.fc1  # our wrappers: their .inner is timm's linear
    attn_in = rep(b.norm1(x), qkv.adapter)
    x = x + reference_attention(b, attn_in, qkv.inner)
    h = rep(b.norm2(x), fc1.adapter)
    return x + b.mlp.fc2(b.mlp.act(fc1.inner(h)))


def reference_attention(b, x, qkv_linear):
    """timm's attention with the plain ``qkv`` linear (the wrapper's adapter already applied to ``x``)."""
    attn = b.attn
    bsz, n, c = x.shape
    q, k, v = qkv_linear(x).reshape(bsz, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(bsz, n, c)
    return attn.proj(out)


BLOCKS = {"gist_adapter": gist_block, "adaptformer": adaptformer_block, "bi_adapter": bi_adapter_block,
          "adapter_houlsby": houlsby_block, "adapter_noah": noah_block, "readapter": repadapter_block}


@pytest.mark.parametrize("name", list(BLOCKS))
def test_block_matches_the_reference_forward(name: str) -> None:
    vit = tiny_vit()
    apply_method(vit, name, {})
    perturb(vit, scale=1.0)  # large enough for the activations to tell GELU from its approximations
    vit.eval()
    x = tokens()
    with torch.no_grad():
        for wrapped in vit.blocks:
            ours = wrapped(x)
            ref = BLOCKS[name](wrapped, inner_block(wrapped), x)
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
            x = ours


# ----------------------------------------------------------------------------- FacT (PETL-ViT FacT/fact_tt.py, fact_tk.py)


def fact_reference_delta(f, kind: str, block: int, site: str, x: torch.Tensor) -> torch.Tensor:
    """What ``fact_forward_attn`` / ``fact_forward_mlp`` add to ``site``'s output (eval mode), from the
    reference's tensors: ``FacTu``/``FacTv`` weights, TT's per-layer ``*_FacTs`` weights, TK's ``FacTc``/``FacTp``."""
    u = lambda h: F.linear(h, f.u)  # noqa: E731  FacTu: d -> r
    v = lambda h: F.linear(h, f.v)  # noqa: E731  FacTv: r -> d
    s, r, m = f.scale, f.rank, f.m
    bsz, n, c = x.shape
    if kind == "tt":
        wq, wk, wv, wp = f.attn[block]
        if site == "qkv":
            return torch.cat([v(F.linear(u(x), w)) for w in (wq, wk, wv)], dim=2) * s
        if site == "proj":
            return v(F.linear(u(x), wp)) * s
        if site == "fc1":
            return v(F.linear(u(x), f.fc1[block]).reshape(bsz, n, m, r)).reshape(bsz, n, m * c) * s
        xs = x.reshape(bsz, n, m, x.shape[-1] // m)
        return v(F.linear(u(xs).reshape(bsz, n, m * r), f.fc2[block])) * s
    idx = block * (4 + 2 * m)
    if site in ("qkv", "proj"):
        fc = f.c @ f.p[:, idx: idx + 4]
        if site == "qkv":
            return torch.cat([v(u(x) @ fc[:, :, j]) for j in range(3)], dim=2) * s
        return v(u(x) @ fc[:, :, 3]) * s
    fc = f.c @ f.p[:, idx + 4: idx + 4 + 2 * m]
    fc1, fc2 = fc[:, :, :m].reshape(r, r * m), fc[:, :, m:].reshape(r, r * m)
    if site == "fc1":
        return v((u(x) @ fc1).reshape(bsz, n, m, r)).reshape(bsz, n, -1) * s
    xs = x.reshape(bsz, n, m, x.shape[-1] // m)
    return v(u(xs).reshape(bsz, n, m * r) @ fc2.t()) * s


@pytest.mark.parametrize("kind", ["tt", "tk"])
def test_fact_matches_the_reference_forward(kind: str) -> None:
    vit = tiny_vit()
    apply_method(vit, f"fact_{kind}", {"rank": 4, "scale": 10.0})
    f = getattr(vit, f"fact_{kind}")
    perturb(vit)
    vit.eval()
    widths = {"qkv": 32, "proj": 32, "fc1": 32, "fc2": 128}
    with torch.no_grad():
        for block in range(2):
            for site, width in widths.items():
                x = tokens(width, seed=block)
                torch.testing.assert_close(f.delta(x, block, site), fact_reference_delta(f, kind, block, site, x),
                                           rtol=1e-5, atol=1e-5, msg=f"{kind} block {block} {site}")


# ----------------------------------------------------------------------------- Bi-Adapter (binary_adapter/utils.py)


def reference_quantizer(bits: int):
    """``QLinear.quantize``, as written in the reference (numpy and scipy)."""
    j = 2**bits * 2
    ppf = np.array([0 for _ in range(1, j)])
    values, ranges = ppf[::2], ppf[1::2]
    for _ in range(500):
        ranges = (values[1:] + values[:-1]) / 2
        pv = normal_dist.cdf(ranges)
        pv = np.insert(pv, 0, 0)
        pv = np.insert(pv, len(pv), 1)
        pv = (pv[1:] + pv[:-1]) / 2
        values = normal_dist.ppf(pv)
    value, pos = torch.tensor(values).float(), torch.tensor(ranges).float()
    delta = (value[1:] - value[:-1]) / 2

    def func(x):
        return (torch.sign(x.unsqueeze(-1) - pos) * delta).sum(-1)

    return value, pos, func


def reference_qlinear_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """``QLinear.forward``'s weight."""
    _, _, q = reference_quantizer(bits)
    mean_w, std_w = weight.mean(), weight.std()
    w = (weight - mean_w) / (std_w + 1e-5)
    wb = q(w).data + w - w.data
    return wb * std_w + mean_w


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_bi_adapter_quantiser_matches_the_reference(bits: int) -> None:
    from gist_ray.methods.bi_adapter import quantize, quantizer

    levels, thresholds = quantizer(bits)
    ref_levels, ref_thresholds, _ = reference_quantizer(bits)
    torch.testing.assert_close(levels, ref_levels, rtol=0, atol=1e-5)
    torch.testing.assert_close(thresholds, ref_thresholds, rtol=0, atol=1e-5)
    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(bits), requires_grad=True)
    w_ref = w.detach().clone().requires_grad_(True)
    ours, ref = quantize(w, bits), reference_qlinear_weight(w_ref, bits)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn(64, 32, generator=torch.Generator().manual_seed(9))
    (ours * g).sum().backward()
    (ref * g).sum().backward()
    torch.testing.assert_close(w.grad, w_ref.grad, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- VeRA (peft tuners/vera/model.py)


def test_vera_projections_are_peft_draws() -> None:
    pytest.importorskip("peft")
    from peft.tuners.vera.model import _kaiming_init

    vit = create_backbone("vit_test_tiny", 5, weights="none")
    apply_method(vit, "vera", {"rank": 16, "projection_seed": 7})
    g = torch.Generator(device="cpu").manual_seed(7)
    a = _kaiming_init((16, 32), generator=g)  # peft: vera_A (r, largest in), then vera_B (largest out, r)
    b = _kaiming_init((32, 16), generator=g)  # q and v of the fused qkv: out 32 each
    torch.testing.assert_close(vit.vera_projections.A, a, rtol=0, atol=0)
    torch.testing.assert_close(vit.vera_projections.B, b, rtol=0, atol=0)


def test_vera_adapts_q_and_v_rows_only() -> None:
    vit = create_backbone("vit_test_tiny", 5, weights="none")
    apply_method(vit, "vera", {})
    perturb(vit)
    delta = vit.blocks[0].attn.qkv.delta()
    assert delta[:32].abs().sum() > 0 and delta[64:].abs().sum() > 0
    assert torch.equal(delta[32:64], torch.zeros_like(delta[32:64]))  # k untouched


# ----------------------------------------------------------------------------- GIST adapter at ViT-B/16 scale


class OfficialAdapter(nn.Module):
    """``gist_Adapter`` (JCruan519/GIST models/vision_transformer.py) with timm's ``init_weights_vit_timm``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(dim, 4), nn.Linear(4, dim)
        for layer in (self.linear1, self.linear2):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.gelu(self.linear1(x))) * 0.1


class OfficialBlock(nn.Module):
    """``Block.forward`` with ``tuning_mode='gist_adapter'``."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block, self.gist_adapter = block, OfficialAdapter(block.norm1.normalized_shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        x = x + b.drop_path1(b.attn(b.norm1(x))) + self.gist_adapter(x)
        return x + b.drop_path2(b.mlp(b.norm2(x))) + self.gist_adapter(x)


def rms(t: torch.Tensor) -> float:
    return t.pow(2).mean().sqrt().item()


@pytest.mark.slow  # five ViT-B/16 forwards on a CPU
def test_gist_adapter_moves_vit_b16_logits_as_the_official_one_does() -> None:
    torch.manual_seed(0)
    vit = vit_b16().eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    plain_blocks = list(vit.blocks)
    with torch.no_grad():
        plain = vit(x)
        vit.blocks = nn.Sequential(*[OfficialBlock(b) for b in plain_blocks])
        official = rms(vit(x) - plain)
        vit.blocks = nn.Sequential(*plain_blocks)
        apply_method(vit, "gist_adapter", {})
        ours = rms(vit(x) - plain)
        for block in vit.blocks:  # PyTorch's default nn.Linear init, which gist-ray used before
            block.adapter.down.reset_parameters()
            block.adapter.up.reset_parameters()
        default_init = rms(vit(x) - plain)
    print(f"RMS logit change at init: official {official:.4g}, gist-ray {ours:.4g}, default init {default_init:.4g}")
    assert official > 0
    assert 0.5 < ours / official < 2.0, (ours, official)
    assert default_init / official > 10, (default_init, official)  # the test tells the two inits apart
