"""Plain float64 re-computations of the upstream networks, written from their papers and release
code's semantics, and the upstream key layouts, for the model and converter tests.

Everything here reads upstream-named weights (timm 0.4.12 Swin, TransReID-SSL ViT) from a dict and
recomputes the forward with explicit loops and matmuls; nothing imports isr_reid.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def ln(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def l2n(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def bn_eval(x: torch.Tensor, sd: dict, p: str, eps: float = 1e-5) -> torch.Tensor:
    """Eval-mode BatchNorm over dim 1 of (B, C, ...)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    rm, rv = sd[p + "running_mean"].view(shape), sd[p + "running_var"].view(shape)
    return (x - rm) / torch.sqrt(rv + eps) * sd[p + "weight"].view(shape) + sd[p + "bias"].view(shape)


def rand_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Random float32 weights for upstream key names: LayerNorm/BatchNorm scales near 1, variances positive."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7, dtype=torch.long)
        elif k.endswith("relative_position_index"):
            out[k] = torch.randint(0, 169, shape, generator=g)  # junk: the converter must drop it
        elif k.endswith("running_var"):
            out[k] = 0.5 + torch.rand(shape, generator=g)
        elif k.endswith(("cls_token", "pos_embed")):
            out[k] = 0.5 * torch.randn(shape, generator=g)
        elif k.endswith("weight") and len(shape) == 1:  # LayerNorm / BatchNorm / InstanceNorm scales
            out[k] = 1.0 + 0.2 * torch.randn(shape, generator=g)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 25
            out[k] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
    return out


# ---------------------------------------------------------------- Swin (timm 0.4.12 layout)


def timm_swin_shapes(embed: int, depths, heads, window: int = 7, img: int = 224, out_dim: int = 512) -> dict:
    """ISR's checkpoint keys and shapes: timm 0.4.12 ``swin_*_patch4_window7_224`` under ``model.`` plus ``feat``."""
    s: dict[str, tuple[int, ...]] = {
        "model.patch_embed.proj.weight": (embed, 3, 4, 4),
        "model.patch_embed.proj.bias": (embed,),
        "model.patch_embed.norm.weight": (embed,),
        "model.patch_embed.norm.bias": (embed,),
    }
    res = img // 4
    for i, (d, h) in enumerate(zip(depths, heads)):
        dim = embed * 2**i
        for j in range(d):
            p = f"model.layers.{i}.blocks.{j}."
            s[p + "norm1.weight"] = s[p + "norm1.bias"] = (dim,)
            s[p + "attn.relative_position_bias_table"] = ((2 * window - 1) ** 2, h)
            s[p + "attn.relative_position_index"] = (window * window, window * window)
            s[p + "attn.qkv.weight"] = (3 * dim, dim)
            s[p + "attn.qkv.bias"] = (3 * dim,)
            s[p + "attn.proj.weight"] = (dim, dim)
            s[p + "attn.proj.bias"] = (dim,)
            s[p + "norm2.weight"] = s[p + "norm2.bias"] = (dim,)
            s[p + "mlp.fc1.weight"] = (4 * dim, dim)
            s[p + "mlp.fc1.bias"] = (4 * dim,)
            s[p + "mlp.fc2.weight"] = (dim, 4 * dim)
            s[p + "mlp.fc2.bias"] = (dim,)
            if j % 2 == 1 and res > window:
                s[p + "attn_mask"] = ((res // window) ** 2, window * window, window * window)
        if i < len(depths) - 1:
            p = f"model.layers.{i}.downsample."
            s[p + "reduction.weight"] = (2 * dim, 4 * dim)
            s[p + "norm.weight"] = s[p + "norm.bias"] = (4 * dim,)
            res //= 2
    last = embed * 2 ** (len(depths) - 1)
    s["model.norm.weight"] = s["model.norm.bias"] = (last,)
    s["model.head.weight"] = (1000, last)
    s["model.head.bias"] = (1000,)
    s["feat.weight"] = (out_dim, last)
    s["feat.bias"] = (out_dim,)
    return s


def _rel_bias(table: torch.Tensor, ws: int) -> torch.Tensor:
    """(heads, N, N): B[h, m, n] = table[(ym - yn + ws - 1) * (2 ws - 1) + (xm - xn + ws - 1), h]."""
    ys, xs = np.divmod(np.arange(ws * ws), ws)
    idx = (ys[:, None] - ys[None, :] + ws - 1) * (2 * ws - 1) + (xs[:, None] - xs[None, :] + ws - 1)
    return table[torch.as_tensor(idx)].permute(2, 0, 1)


def swin_isr_reference(sd: dict, x: torch.Tensor, depths, heads, window: int = 7) -> torch.Tensor:
    """ISR's embedding in float64: timm 0.4.12 Swin forward_features, then feat, then L2.

    Window attention per window with an explicit loop; shifted blocks roll by -window//2 and mask
    pairs from different regions with -100; no shift when the map is one window; patch merging
    concatenates x[0::2,0::2], x[1::2,0::2], x[0::2,1::2], x[1::2,1::2] (timm's order).
    """
    sd = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    x = x.double()
    x = torch.nn.functional.conv2d(x, sd["model.patch_embed.proj.weight"], sd["model.patch_embed.proj.bias"], stride=4)
    x = x.permute(0, 2, 3, 1)  # B H W C
    x = ln(x, sd["model.patch_embed.norm.weight"], sd["model.patch_embed.norm.bias"], 1e-5)
    B, H, W, C = x.shape
    for i, (d, nh) in enumerate(zip(depths, heads)):
        for j in range(d):
            p = f"model.layers.{i}.blocks.{j}."
            ws = min(window, H, W)
            shift = window // 2 if (j % 2 == 1 and min(H, W) > window) else 0
            h = ln(x, sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-5)
            if shift:
                h = torch.roll(h, shifts=(-shift, -shift), dims=(1, 2))
            # region label of every position of the rolled map (used only when shifted)
            rows = np.where(np.arange(H) < H - ws, 0, np.where(np.arange(H) < H - shift, 1, 2))
            cols = np.where(np.arange(W) < W - ws, 0, np.where(np.arange(W) < W - shift, 1, 2))
            label = rows[:, None] * 3 + cols[None, :]
            bias = _rel_bias(sd[p + "attn.relative_position_bias_table"], ws)
            out = torch.empty_like(h)
            hd = C // nh
            for wy in range(H // ws):
                for wx in range(W // ws):
                    sl = (slice(None), slice(wy * ws, (wy + 1) * ws), slice(wx * ws, (wx + 1) * ws))
                    t = h[sl].reshape(B, ws * ws, C)
                    qkv = t @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]
                    q, k, v = qkv[..., :C], qkv[..., C : 2 * C], qkv[..., 2 * C :]
                    lab = label[wy * ws : (wy + 1) * ws, wx * ws : (wx + 1) * ws].reshape(-1)
                    mask = torch.as_tensor(np.where(lab[:, None] == lab[None, :], 0.0, -100.0)) if shift else 0.0
                    heads_out = []
                    for a in range(nh):
                        qa, ka, va = (z[..., a * hd : (a + 1) * hd] for z in (q, k, v))
                        logits = qa @ ka.transpose(1, 2) / math.sqrt(hd) + bias[a] + mask
                        heads_out.append(torch.softmax(logits, dim=-1) @ va)
                    o = torch.cat(heads_out, -1) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
                    out[sl] = o.reshape(B, ws, ws, C)
            if shift:
                out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
            x = x + out
            m = ln(x, sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-5)
            m = gelu(m @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
            x = x + m @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
        if i < len(depths) - 1:
            p = f"model.layers.{i}.downsample."
            x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
            x = ln(x, sd[p + "norm.weight"], sd[p + "norm.bias"], 1e-5) @ sd[p + "reduction.weight"].T
            B, H, W, C = x.shape
    x = ln(x, sd["model.norm.weight"], sd["model.norm.bias"], 1e-5).reshape(B, H * W, C).mean(1)
    return l2n(x @ sd["feat.weight"].T + sd["feat.bias"])


# ---------------------------------------------------------------- ViT (TransReID-SSL layout)


def transreid_vit_shapes(dim: int, depth: int, ics: bool, grid=(16, 8), with_fc: bool = True) -> dict:
    """TransReID-SSL's flat ViT keys and shapes (``vit_pytorch.TransReID``)."""
    s: dict[str, tuple[int, ...]] = {"cls_token": (1, 1, dim), "pos_embed": (1, 1 + grid[0] * grid[1], dim)}
    if ics:
        s["patch_embed.conv.0.weight"] = (64, 3, 7, 7)
        for c in ("1", "4"):
            s[f"patch_embed.conv.{c}.IN.weight"] = s[f"patch_embed.conv.{c}.IN.bias"] = (32,)
            for q in ("weight", "bias", "running_mean", "running_var"):
                s[f"patch_embed.conv.{c}.BN.{q}"] = (32,)
            s[f"patch_embed.conv.{c}.BN.num_batches_tracked"] = ()
        s["patch_embed.conv.3.weight"] = s["patch_embed.conv.6.weight"] = (64, 64, 3, 3)
        for q in ("weight", "bias", "running_mean", "running_var"):
            s[f"patch_embed.conv.7.{q}"] = (64,)
        s["patch_embed.conv.7.num_batches_tracked"] = ()
        s["patch_embed.proj.weight"] = (dim, 64, 8, 8)
    else:
        s["patch_embed.proj.weight"] = (dim, 3, 16, 16)
    s["patch_embed.proj.bias"] = (dim,)
    for n in range(depth):
        p = f"blocks.{n}."
        s[p + "norm1.weight"] = s[p + "norm1.bias"] = s[p + "norm2.weight"] = s[p + "norm2.bias"] = (dim,)
        s[p + "attn.qkv.weight"], s[p + "attn.qkv.bias"] = (3 * dim, dim), (3 * dim,)
        s[p + "attn.proj.weight"], s[p + "attn.proj.bias"] = (dim, dim), (dim,)
        s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"] = (4 * dim, dim), (4 * dim,)
        s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"] = (dim, 4 * dim), (dim,)
    s["norm.weight"] = s["norm.bias"] = (dim,)
    if with_fc:
        s["fc.weight"], s["fc.bias"] = (1000, dim), (1000,)
    return s


def bilinear_resize(grid: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(h, w, D) -> (out_h, out_w, D), bilinear with half-pixel centres (align_corners=False), edges clamped."""

    def taps(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, fy = taps(grid.shape[0], out_h)
    x0, x1, fx = taps(grid.shape[1], out_w)
    top = grid[y0][:, x0] * (1 - fx)[None, :, None] + grid[y0][:, x1] * fx[None, :, None]
    bot = grid[y1][:, x0] * (1 - fx)[None, :, None] + grid[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bot * fy[:, None, None]


def _ibn_ref(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    half = x.shape[1] // 2
    a, b = x[:, :half], x[:, half:]
    mu = a.mean((2, 3), keepdim=True)
    var = ((a - mu) ** 2).mean((2, 3), keepdim=True)
    a = (a - mu) / torch.sqrt(var + 1e-5) * sd[p + "IN.weight"].view(1, -1, 1, 1) + sd[p + "IN.bias"].view(1, -1, 1, 1)
    return torch.cat([a, bn_eval(b, sd, p + "BN.")], 1)


def vit_reference(
    sd: dict, x: torch.Tensor, heads: int, grid=(16, 8), token_bias=None, normalize: bool = True
) -> torch.Tensor:
    """TransReID-SSL's embedding in float64: patch tokens, CLS, position embedding (resized bilinearly),
    pre-norm blocks with explicit per-head q/k/v attention, final LayerNorm (eps 1e-6) on CLS, L2.

    ``token_bias`` (D,) is added to every token with the position embedding (TransReID's SIE term);
    ``normalize=False`` returns the CLS feature before the L2 normalisation."""
    F = torch.nn.functional
    sd = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    x = x.double()
    if "patch_embed.conv.0.weight" in sd:
        x = torch.relu(
            _ibn_ref(F.conv2d(x, sd["patch_embed.conv.0.weight"], stride=2, padding=3), sd, "patch_embed.conv.1.")
        )
        x = torch.relu(_ibn_ref(F.conv2d(x, sd["patch_embed.conv.3.weight"], padding=1), sd, "patch_embed.conv.4."))
        x = torch.relu(bn_eval(F.conv2d(x, sd["patch_embed.conv.6.weight"], padding=1), sd, "patch_embed.conv.7."))
        patch = 8
    else:
        patch = 16
    w = sd["patch_embed.proj.weight"]
    B, Cin, H, W = x.shape
    gh, gw = H // patch, W // patch
    # patches in row-major grid order, each flattened (C, py, px) to match the conv weight layout
    patches = x[:, :, : gh * patch, : gw * patch].reshape(B, Cin, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5)
    tokens = patches.reshape(B, gh * gw, -1) @ w.reshape(w.shape[0], -1).T + sd["patch_embed.proj.bias"]
    D = tokens.shape[-1]
    pos = sd["pos_embed"][0]
    if (gh, gw) != tuple(grid):
        resized = bilinear_resize(pos[1:].reshape(grid[0], grid[1], D).numpy(), gh, gw)
        pos = torch.cat([pos[:1], torch.as_tensor(resized).reshape(gh * gw, D)])
    t = torch.cat([sd["cls_token"].expand(B, 1, D), tokens], 1) + pos
    if token_bias is not None:
        t = t + token_bias.double().reshape(1, 1, D)
    hd = D // heads
    n = 0
    while f"blocks.{n}.norm1.weight" in sd:
        p = f"blocks.{n}."
        h = ln(t, sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-6)
        Wq, Wk, Wv = sd[p + "attn.qkv.weight"].split(D)
        bq, bk, bv = sd[p + "attn.qkv.bias"].split(D)
        outs = []
        for a in range(heads):
            s = slice(a * hd, (a + 1) * hd)
            q, k, v = h @ Wq[s].T + bq[s], h @ Wk[s].T + bk[s], h @ Wv[s].T + bv[s]
            outs.append(torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd), -1) @ v)
        t = t + torch.cat(outs, -1) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        m = gelu(
            ln(t, sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-6) @ sd[p + "mlp.fc1.weight"].T
            + sd[p + "mlp.fc1.bias"]
        )
        t = t + m @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
        n += 1
    cls = ln(t[:, 0], sd["norm.weight"], sd["norm.bias"], 1e-6)
    return l2n(cls) if normalize else cls
