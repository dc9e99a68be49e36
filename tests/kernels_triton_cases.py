"""The Triton kernels against the PyTorch paths and float64 references (collected via test_kernels_triton.py).

On CUDA these run the compiled kernels; on CPU, only in a process where TRITON_INTERPRET=1 was set
before triton was imported (test_kernels_triton.py starts one). Outputs are pre-filled with NaN, so
an element a kernel never writes fails the comparison.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_kernels import MEAN, STD, make_features, ref_ln_mean, ref_normalize, ref_pool_bn_l2

from isr_reid.kernels import head, l2norm, ln_mean, normalize
from isr_reid.kernels._backend import _jit

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def nan_out(*shape, dtype=torch.float32):
    return torch.full(shape, float("nan"), dtype=dtype, device=DEVICE)


def affine(c, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(c, generator=g) + 0.5).to(DEVICE), torch.randn(c, generator=g).to(DEVICE)


@pytest.fixture
def triton_backend(monkeypatch):
    monkeypatch.setenv("ISR_REID_KERNELS", "triton")


@pytest.mark.skipif(DEVICE == "cuda", reason="checks the CPU interpreter")
def test_kernels_really_run_in_the_interpreter(triton_backend, monkeypatch):
    from triton.runtime.interpreter import InterpretedFunction

    assert isinstance(_jit(head._pool_affine_kernel), InterpretedFunction)
    launches = []
    real = head._launch
    monkeypatch.setattr(head, "_launch", lambda *a: launches.append(a[0].device) or real(*a))
    x = make_features("nchw", torch.float32)
    out = head.pool_bn_l2(x, mode="gem", p=3.0)
    assert launches == [torch.device("cpu")]
    torch.testing.assert_close(out.double(), ref_pool_bn_l2(x, "gem"), rtol=1e-5, atol=1e-6)


# --- pool + BN + L2 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "tokens"])
@pytest.mark.parametrize("mode", ["mean", "gem"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_head_kernel_vs_torch_vs_float64(layout, mode, dtype):
    x = make_features(layout, dtype, c=20).to(DEVICE)
    scale, shift = affine(20)
    p = torch.tensor(3.0, device=DEVICE)
    out = head._launch(x, p, scale, shift, mode, 1e-6, True, nan_out(2, 20))
    torch_path = head.pool_bn_l2_torch(x, mode=mode, p=p, scale=scale, shift=shift)
    torch.testing.assert_close(out, torch_path, rtol=1e-5, atol=1e-6)
    want = ref_pool_bn_l2(x.cpu(), mode, scale=scale.cpu(), shift=shift.cpu(), layout=layout)
    torch.testing.assert_close(out.double().cpu(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("layout", "dtype"), [("nchw", torch.float32), ("channels_last", torch.float16)])
@pytest.mark.parametrize("mode", ["mean", "gem"])
def test_head_kernel_odd_sizes(layout, dtype, mode):
    x = make_features(layout, dtype, c=1000, h=7, w=5).to(DEVICE)  # C not a multiple of any block, 7x5 map
    scale, shift = affine(1000)
    out = head._launch(x, torch.tensor(2.5, device=DEVICE), scale, shift, mode, 1e-6, True, nan_out(2, 1000))
    want = ref_pool_bn_l2(x.cpu(), mode, p=2.5, scale=scale.cpu(), shift=shift.cpu(), layout=layout)
    torch.testing.assert_close(out.double().cpu(), want, rtol=1e-5, atol=1e-6)


def test_head_kernel_gem_negative_inputs_without_affine_or_l2():
    x = (make_features("nchw", torch.float32, c=7) - 1.5).to(DEVICE)
    x[1] = -3.0  # all below eps: exactly eps after pooling
    out = head._launch(x, torch.tensor(4.0, device=DEVICE), None, None, "gem", 1e-6, False, nan_out(2, 7))
    want = ref_pool_bn_l2(x.cpu(), "gem", p=4.0, normalize=False)
    torch.testing.assert_close(out.double().cpu(), want, rtol=1e-5, atol=1e-12)
    assert torch.allclose(out[1].cpu(), torch.full((7,), 1e-6), rtol=1e-5, atol=0)


def test_head_kernel_zero_row_gives_zeros():
    x = torch.zeros(2, 5, 3, 3, device=DEVICE)
    out = head._launch(x, None, None, None, "mean", 1e-6, True, nan_out(2, 5))
    assert torch.equal(out.cpu(), torch.zeros(2, 5))


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "tokens"])
@pytest.mark.parametrize("mode", ["mean", "gem"])
def test_head_gradients_triton_path_vs_torch_path(layout, mode, monkeypatch):
    x0 = make_features(layout, torch.float32, c=9, seed=5).to(DEVICE)
    scale0, shift0 = affine(9, seed=6)
    w = torch.randn(2, 9, generator=torch.Generator().manual_seed(7)).to(DEVICE)

    def grads(backend):
        monkeypatch.setenv("ISR_REID_KERNELS", backend)
        x = x0.clone().requires_grad_()
        p = torch.tensor(3.0, device=DEVICE, requires_grad=True)
        scale, shift = scale0.clone().requires_grad_(), shift0.clone().requires_grad_()
        y = head.pool_bn_l2(x, mode=mode, p=p, scale=scale, shift=shift)
        inputs = [x, scale, shift] + ([p] if mode == "gem" else [])
        return y, torch.autograd.grad((y * w).sum(), inputs)

    y_k, g_k = grads("triton")
    y_t, g_t = grads("torch")
    torch.testing.assert_close(y_k, y_t, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_k, g_t):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_public_api_under_triton_backend_matches_torch(triton_backend):
    x = make_features("channels_last", torch.bfloat16, c=12).to(DEVICE)
    scale, shift = affine(12)
    got = head.pool_bn_l2(x, mode="gem", p=3.0, scale=scale, shift=shift)
    want = head.pool_bn_l2_torch(x, mode="gem", p=3.0, scale=scale, shift=shift)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# --- LayerNorm + mean, bias + L2 ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_ln_mean_kernel_vs_torch_vs_float64(dtype):
    g = torch.Generator().manual_seed(8)
    x = (torch.randn(2, 13, 1000, generator=g) * 2 + 0.5).to(dtype)
    w, b = torch.randn(1000, generator=g), torch.randn(1000, generator=g)
    xd, wd, bd = x.to(DEVICE), w.to(DEVICE), b.to(DEVICE)
    out = ln_mean._launch(xd, wd, bd, 1e-5, nan_out(2, 1000))
    torch.testing.assert_close(out, ln_mean.ln_mean_tokens_torch(xd, wd, bd), rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(out.double().cpu(), ref_ln_mean(x, w, b), rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_l2_kernel_with_bias_vs_float64(dtype):
    g = torch.Generator().manual_seed(9)
    x = torch.randn(3, 1000, generator=g).to(dtype)
    bias = torch.randn(1000, generator=g)
    x[2] = 0
    out = l2norm._launch(x.to(DEVICE), bias.to(DEVICE), nan_out(3, 1000))
    ref = x.double() + bias.double()
    ref = ref / ref.norm(dim=1, keepdim=True)
    torch.testing.assert_close(out.double().cpu(), ref, rtol=1e-5, atol=1e-6)
    zero = l2norm._launch(torch.zeros(2, 5, device=DEVICE), None, nan_out(2, 5))
    assert torch.equal(zero.cpu(), torch.zeros(2, 5))


def test_public_token_and_image_ops_run_their_kernels(triton_backend, monkeypatch):
    launched = []
    for module in (ln_mean, l2norm, normalize):
        real = module._launch
        monkeypatch.setattr(module, "_launch", lambda *a, m=module, real=real: launched.append(m) or real(*a))
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 5, 24, generator=g).to(DEVICE)
    w, b = affine(24)
    torch.testing.assert_close(ln_mean.ln_mean_tokens(x, w, b), ln_mean.ln_mean_tokens_torch(x, w, b), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(l2norm.l2_normalize(x, b), l2norm.l2_normalize_torch(x, b), rtol=1e-5, atol=1e-6)
    img = torch.randint(0, 256, (2, 9, 7, 3), dtype=torch.uint8, generator=g).to(DEVICE)
    got = normalize.normalize_images(img, MEAN, STD, layout="nhwc", channels_last=True)
    want = normalize.normalize_images_torch(img, MEAN, STD, layout="nhwc", channels_last=True)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert launched == [ln_mean, l2norm, normalize]


# --- uint8 -> normalised float -------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_normalize_kernel_vs_torch_vs_float64(layout, channels_last, dtype):
    g = torch.Generator().manual_seed(10)
    img = torch.randint(0, 256, (2, 3, 11, 9), dtype=torch.uint8, generator=g)  # 99 pixels: 2 programs, one partial
    src = (img.permute(0, 2, 3, 1).contiguous() if layout == "nhwc" else img).to(DEVICE)
    view = src.permute(0, 3, 1, 2) if layout == "nhwc" else src
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = nan_out(2, 3, 11, 9, dtype=dtype).contiguous(memory_format=fmt)
    a, c = normalize._affine(MEAN, STD)
    normalize._launch(view, a, c, out)
    assert out.is_contiguous(memory_format=fmt)
    # float32: a few ulp from the reference; half types: the same rounding step or the next one
    step = {torch.float32: 1e-6, torch.float16: 2**-10, torch.bfloat16: 2**-7}[dtype]
    torch.testing.assert_close(out.double().cpu(), ref_normalize(img, MEAN, STD), rtol=step, atol=1e-6)
    want = normalize.normalize_images_torch(src, MEAN, STD, layout=layout, out_dtype=dtype, channels_last=channels_last)
    torch.testing.assert_close(out.double(), want.double(), rtol=step, atol=1e-6)


# --- wired in: the zoo model through extract() ---------------------------------------------------------------


def test_extract_same_embeddings_with_triton_and_torch(monkeypatch):
    import isr_reid

    torch.manual_seed(0)
    model = isr_reid.load_model("isr_resnet18", pretrained=False, input_size=(64, 32), device=DEVICE)
    with torch.no_grad():
        model.head.bn.running_mean.uniform_(-0.1, 0.1)
        model.head.bn.running_var.uniform_(0.5, 2.0)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(64, 32, 3), dtype=np.uint8) for _ in range(3)]
    launches = []
    real = head._launch
    monkeypatch.setattr(head, "_launch", lambda *a: launches.append(1) or real(*a))
    monkeypatch.setenv("ISR_REID_KERNELS", "triton")
    emb_triton = model.extract(images, batch_size=2, progress=False)
    assert len(launches) == 2  # two batches, each through the fused head
    monkeypatch.setenv("ISR_REID_KERNELS", "torch")
    emb_torch = model.extract(images, batch_size=2, progress=False)
    assert emb_triton.shape == (3, 512)
    # on CUDA extract() runs under bf16 autocast, where the two paths round differently
    tol = 1e-5 if DEVICE == "cpu" else 2e-2
    np.testing.assert_allclose(emb_triton, emb_torch, rtol=tol, atol=tol)


@pytest.mark.skipif(DEVICE != "cuda", reason="torch.compile of a Triton op needs a GPU")
def test_torch_compile_keeps_the_op(triton_backend):
    x = make_features("channels_last", torch.float16, c=64, h=16, w=8).to(DEVICE)
    scale, shift = affine(64)
    f = torch.compile(lambda x: head.pool_bn_l2(x, mode="gem", p=3.0, scale=scale, shift=shift), fullgraph=True)
    torch.testing.assert_close(f(x), head.pool_bn_l2_torch(x, mode="gem", p=3.0, scale=scale, shift=shift), rtol=1e-5, atol=1e-6)
