"""The PyTorch paths of isr_reid.kernels against float64 references, their gradients, path selection, export.

The Triton kernels themselves are tested in tests/test_kernels_triton.py (interpreted on CPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isr_reid.kernels import kernel_backend, l2_normalize, ln_mean_tokens, normalize_images, pool_bn_l2
from isr_reid.kernels._backend import current_backend
from isr_reid.kernels.head import pool_bn_l2_torch

# --- float64 references written with numpy, independently of the library --------------------------------


def ref_pool_bn_l2(x, mode, p=3.0, eps=1e-6, scale=None, shift=None, normalize=True, layout="nchw"):
    a = x.detach().double().cpu().numpy()
    a = a.reshape(a.shape[0], a.shape[1], -1) if layout != "tokens" else a.transpose(0, 2, 1)  # (B, C, N)
    if mode == "mean":
        m = a.mean(axis=2)
    else:
        m = (np.maximum(a, eps) ** p).mean(axis=2) ** (1.0 / p)
    if scale is not None:
        m = m * scale.double().numpy()
    if shift is not None:
        m = m + shift.double().numpy()
    if normalize:
        m = m / np.maximum(np.sqrt((m * m).sum(axis=1, keepdims=True)), 1e-12)
    return torch.from_numpy(m)


def ref_ln_mean(x, w, b, eps=1e-5):
    a = x.double().numpy()
    mu = a.mean(axis=2, keepdims=True)
    var = ((a - mu) ** 2).mean(axis=2, keepdims=True)
    return torch.from_numpy((((a - mu) / np.sqrt(var + eps)) * w.double().numpy() + b.double().numpy()).mean(axis=1))


def ref_normalize(img_nchw, mean, std):
    a = img_nchw.numpy().astype(np.float64)
    return torch.from_numpy((a / 255.0 - np.array(mean)[None, :, None, None]) / np.array(std)[None, :, None, None])


def make_features(layout, dtype, b=2, c=6, h=7, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    if layout == "tokens":
        x = torch.randn(b, h * w, c, generator=g)
    else:
        x = torch.randn(b, c, h, w, generator=g)
        if layout == "channels_last":
            x = x.to(memory_format=torch.channels_last)
    return x.to(dtype)


@pytest.fixture(autouse=True)
def _torch_backend(monkeypatch):
    # hermetic whatever the caller exported: these tests are about the PyTorch path
    monkeypatch.setenv("ISR_REID_KERNELS", "torch")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


TOL = {torch.float32: 1e-5, torch.float64: 1e-10, torch.float16: 1e-5, torch.bfloat16: 1e-5}

# --- pool + BN + L2 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "tokens"])
@pytest.mark.parametrize("mode", ["mean", "gem"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_pool_bn_l2_torch_path_matches_float64(layout, mode, dtype):
    x = make_features(layout, dtype, c=1000 if dtype == torch.float32 else 6)
    c = x.shape[1] if layout != "tokens" else x.shape[2]
    scale, shift = torch.rand(c) + 0.5, torch.randn(c)
    got = pool_bn_l2(x, mode=mode, p=torch.tensor(3.0), scale=scale, shift=shift)
    assert got.dtype == torch.float32 and got.shape == (2, c)
    # the reference sees the same (already rounded) half values, so fp32 accumulation must match closely
    want = ref_pool_bn_l2(x, mode, scale=scale, shift=shift, layout=layout)
    torch.testing.assert_close(got.double(), want, rtol=TOL[dtype], atol=TOL[dtype])


def test_gem_with_negative_inputs_clamps_to_eps():
    x = make_features("nchw", torch.float32) - 1.5  # mostly negative
    x[0] = -2.0  # image 0: every value below eps, so GeM gives exactly eps per channel
    got = pool_bn_l2(x, mode="gem", p=4.0, normalize=False)
    torch.testing.assert_close(got.double(), ref_pool_bn_l2(x, "gem", p=4.0, normalize=False), rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(got[0], torch.full((6,), 1e-6), rtol=1e-5, atol=0)


def test_zero_row_normalises_to_zero_not_nan():
    x = torch.zeros(2, 4, 3, 3)
    got = pool_bn_l2(x, mode="mean")
    assert torch.equal(got, torch.zeros(2, 4))


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "tokens"])
@pytest.mark.parametrize("mode", ["mean", "gem"])
def test_torch_path_gradcheck_float64(layout, mode):
    x = make_features(layout, torch.float64, b=2, c=3, h=3, w=2).abs().add(0.1).requires_grad_()
    p = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    scale = (torch.rand(3, dtype=torch.float64) + 0.5).requires_grad_()
    shift = torch.randn(3, dtype=torch.float64).requires_grad_()

    def f(x, p, scale, shift):
        return pool_bn_l2_torch(x, mode=mode, p=p, scale=scale, shift=shift)

    assert torch.autograd.gradcheck(f, (x, p, scale, shift))


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "tokens"])
@pytest.mark.parametrize("mode", ["mean", "gem"])
@pytest.mark.parametrize("normalize", [True, False])
def test_custom_op_analytic_backward_gradcheck_float64(layout, mode, normalize):
    # float64 makes the op's body take the PyTorch path, so this checks the hand-written backward formula
    # (the one the Triton path uses) against finite differences. Some inputs sit below eps (clamped).
    x = make_features(layout, torch.float64, b=2, c=3, h=3, w=2, seed=1)
    x = torch.where(x.abs() < 0.05, torch.full_like(x, -1.0), x).requires_grad_()
    p = torch.tensor(2.5, dtype=torch.float64, requires_grad=mode == "gem")
    scale = (torch.rand(3, dtype=torch.float64) + 0.5).requires_grad_()
    shift = torch.randn(3, dtype=torch.float64).requires_grad_()
    op = torch.ops.isr_reid.pool_bn_l2

    def f(x, p, scale, shift):
        return op(x, p if mode == "gem" else None, scale, shift, mode, 1e-6, normalize)

    assert torch.autograd.gradcheck(f, (x, p, scale, shift))
    # and without the optional affine
    assert torch.autograd.gradcheck(lambda x: op(x, p.detach() if mode == "gem" else None, None, None, mode, 1e-6, normalize), (x,))


# --- LayerNorm + mean over tokens, bias + L2 ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_ln_mean_tokens_torch_path_matches_float64(dtype):
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(2, 13, 1000, generator=g) * 3 + 1).to(dtype)
    w, b = torch.randn(1000, generator=g), torch.randn(1000, generator=g)
    got = ln_mean_tokens(x, w, b)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref_ln_mean(x, w, b), rtol=1e-5, atol=2e-5)


def test_l2_normalize_torch_path_with_bias_and_zero_row():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 10, generator=g).half()
    bias = torch.randn(10, generator=g)
    x[1] = (-bias).half()  # x + bias is not exactly zero (half rounding), but x = 0 with no bias is
    got = l2_normalize(x, bias)
    ref = x.double() + bias.double()
    ref = ref / ref.norm(dim=1, keepdim=True).clamp_min(1e-12)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(l2_normalize(torch.zeros(2, 5)), torch.zeros(2, 5))


# --- uint8 -> normalised float -------------------------------------------------------------------------------

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_normalize_torch_path_matches_float64(layout, channels_last, dtype):
    g = torch.Generator().manual_seed(4)
    img = torch.randint(0, 256, (2, 3, 7, 5), dtype=torch.uint8, generator=g)
    src = img.permute(0, 2, 3, 1).contiguous() if layout == "nhwc" else img
    got = normalize_images(src, MEAN, STD, layout=layout, out_dtype=dtype, channels_last=channels_last)
    assert got.dtype == dtype and got.shape == (2, 3, 7, 5)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert got.is_contiguous(memory_format=fmt)
    step = {torch.float32: 2e-6, torch.float16: 2**-11, torch.bfloat16: 2**-8}[dtype]  # half a unit in the last place
    torch.testing.assert_close(got.double(), ref_normalize(img, MEAN, STD), rtol=step, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"images": torch.zeros(1, 3, 4, 4)}, TypeError, "uint8"),
        ({"layout": "hwc"}, ValueError, "layout"),
        ({"images": torch.zeros(1, 4, 4, 4, dtype=torch.uint8)}, ValueError, "3-channel"),
        ({"out_dtype": torch.int32}, ValueError, "out_dtype"),
        ({"std": (0.2, 0.0, 0.2)}, ValueError, "std"),
    ],
)
def test_normalize_rejects_bad_input(kwargs, error, needle):
    args = {"images": torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "mean": MEAN, "std": STD, **kwargs}
    images, mean, std = args.pop("images"), args.pop("mean"), args.pop("std")
    with pytest.raises(error, match=needle):
        normalize_images(images, mean, std, **args)


@pytest.mark.parametrize(
    ("x", "kwargs", "needle"),
    [
        (torch.zeros(2, 3), {}, "B,C,H,W"),
        (torch.zeros(2, 3, 2, 2), {"mode": "max"}, "mode"),
        (torch.zeros(2, 3, 2, 2), {"mode": "gem"}, "needs p"),
        (torch.zeros(2, 3, 2, 2), {"scale": torch.ones(4)}, "scale must have shape"),
        (torch.zeros(2, 3, 2, 2, dtype=torch.int64), {}, "float"),
        (torch.zeros(2, 3, 0, 2), {}, "empty"),
    ],
)
def test_pool_bn_l2_rejects_bad_input(x, kwargs, needle):
    with pytest.raises((ValueError, TypeError), match=needle):
        pool_bn_l2(x, **kwargs)


# --- path selection ---------------------------------------------------------------------------------------


def test_backend_env_and_context_manager(monkeypatch):
    monkeypatch.setenv("ISR_REID_KERNELS", "torch")
    assert current_backend() == "torch"
    with kernel_backend("triton"):
        assert current_backend() == "triton"
        with kernel_backend("auto"):
            assert current_backend() == "auto"
        assert current_backend() == "triton"
    assert current_backend() == "torch"
    monkeypatch.setenv("ISR_REID_KERNELS", "cuda")
    with pytest.raises(ValueError, match="ISR_REID_KERNELS"):
        current_backend()
    with kernel_backend("torch"):  # the override wins over a bad environment value
        assert current_backend() == "torch"
    with pytest.raises(ValueError, match="kernel_backend"):
        kernel_backend("fast").__enter__()


def test_forced_triton_on_cpu_without_interpreter_says_how(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with kernel_backend("triton"), pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        pool_bn_l2(torch.ones(1, 2, 2, 2))


def test_auto_on_cpu_calls_no_custom_op(monkeypatch):
    monkeypatch.setenv("ISR_REID_KERNELS", "auto")
    calls = []
    import isr_reid.kernels.head as head

    monkeypatch.setattr(head, "_pool_bn_l2_op", lambda *a: calls.append(a))
    out = pool_bn_l2(make_features("nchw", torch.float32), mode="mean")
    assert calls == [] and out.shape == (2, 6)


# --- export ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_model():
    import isr_reid

    torch.manual_seed(0)
    model = isr_reid.load_model("isr_resnet18", pretrained=False, input_size=(64, 32), device="cpu")
    # non-trivial BN statistics so that the folded affine matters
    with torch.no_grad():
        model.head.bn.running_mean.uniform_(-0.1, 0.1)
        model.head.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_torch_export_with_torch_backend_has_no_custom_op(small_model):
    x = torch.randn(2, 3, 64, 32)
    with kernel_backend("torch"):
        ep = torch.export.export(small_model, (x,))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert targets and not any("isr_reid" in t for t in targets)
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), small_model(x), rtol=1e-5, atol=1e-6)


def test_torch_export_traces_through_the_custom_op():
    # The op body checks the device itself, so export of a graph that calls it works on CPU too.
    class Head(torch.nn.Module):
        def forward(self, x, p):
            return torch.ops.isr_reid.pool_bn_l2(x, p, None, None, "gem", 1e-6, True)

    x, p = make_features("nchw", torch.float32), torch.tensor(3.0)
    ep = torch.export.export(Head(), (x, p))
    torch.testing.assert_close(ep.module()(x, p).double(), ref_pool_bn_l2(x, "gem"), rtol=1e-5, atol=1e-6)


def test_torch_compile_traces_the_wrappers_in_one_graph():
    # fullgraph: reading the backend (environment, context variable) must not break the graph
    p = torch.nn.Parameter(torch.tensor(3.0))
    x = make_features("channels_last", torch.float32)

    def f(x):
        return pool_bn_l2(x, mode="gem", p=p)

    with kernel_backend("torch"):
        compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
        torch.testing.assert_close(compiled(x).double(), ref_pool_bn_l2(x, "gem"), rtol=1e-5, atol=1e-6)
