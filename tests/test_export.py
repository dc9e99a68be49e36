"""ONNX export and torch.export: onnxruntime outputs against eager PyTorch, metadata, the CLI."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import isr_reid
from isr_reid import cli
from isr_reid.export import check_onnx, export_onnx, export_pt2, read_onnx_metadata
from isr_reid.zoo import list_architectures

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

# Every test here shares the module's exports: keep them on one xdist worker.
pytestmark = pytest.mark.xdist_group("export")

SIZE = (64, 32)


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics (fresh ones are the identity) so that BN folding is exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)


def _normalise_reference(images: np.ndarray, mean, std) -> torch.Tensor:
    """(x / 255 - mean) / std written out here, in float64, independently of isr_reid.kernels."""
    x = images.astype(np.float64) / 255.0
    x = (x - np.asarray(mean, np.float64)[None, :, None, None]) / np.asarray(std, np.float64)[None, :, None, None]
    return torch.from_numpy(x).float()


@pytest.fixture(scope="module")
def resnet() -> isr_reid.ReIDModel:
    torch.manual_seed(0)
    model = isr_reid.load_model("isr_resnet18", pretrained=False, input_size=SIZE, device="cpu")
    _perturb(model, 1)
    with torch.no_grad():
        model.head.p.fill_(2.5)
    return model.eval()


@pytest.fixture(scope="module")
def uint8_onnx(resnet, tmp_path_factory) -> Path:
    """Exported through the command line, from weights saved in hub layout."""
    tmp = tmp_path_factory.mktemp("export")
    resnet.save_pretrained(tmp / "weights")
    out = tmp / "model.onnx"
    rc = cli.main(["export", "--model", "isr_resnet18", "--weights", str(tmp / "weights"), "--format", "onnx", "-o", str(out),
                   "--verify"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def float_onnx(resnet, tmp_path_factory) -> Path:
    return export_onnx(resnet, tmp_path_factory.mktemp("export_float") / "float.onnx", input="float")


@pytest.mark.parametrize("batch", [1, 7])
def test_onnx_uint8_matches_pytorch(resnet, uint8_onnx, batch):
    images = np.random.default_rng(batch).integers(0, 256, (batch, 3, *SIZE), dtype=np.uint8)
    (out,) = _session(uint8_onnx).run(None, {"images": images})
    with torch.no_grad():
        ref = resnet(_normalise_reference(images, resnet.cfg.mean, resnet.cfg.std)).numpy()
    assert out.shape == (batch, 512) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 7])
def test_onnx_float_matches_pytorch(resnet, float_onnx, batch):
    x = np.random.default_rng(10 + batch).standard_normal((batch, 3, *SIZE)).astype(np.float32)
    (out,) = _session(float_onnx).run(None, {"images": x})
    with torch.no_grad():
        ref = resnet(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_onnx_metadata_and_signature(resnet, uint8_onnx, float_onnx):
    sess = _session(uint8_onnx)
    # onnxruntime's own reader, independent of read_onnx_metadata
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["model_name"] == "isr_resnet18"
    assert meta["input_kind"] == "uint8"
    assert [int(v) for v in meta["input_size"].strip("[]").split(",")] == list(SIZE)
    assert int(meta["embed_dim"]) == 512
    decoded = read_onnx_metadata(uint8_onnx)
    assert decoded["input_size"] == list(SIZE)
    assert decoded["mean"] == pytest.approx(list(resnet.cfg.mean))
    assert decoded["std"] == pytest.approx(list(resnet.cfg.std))
    assert decoded["embed_dim"] == 512 and decoded["dynamic_batch"] is True
    assert decoded["config"]["architecture"] == "resnet18_gem_bnneck"
    (inp,) = sess.get_inputs()
    assert inp.name == "images" and inp.type == "tensor(uint8)"
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [3, *SIZE]
    assert sess.get_outputs()[0].name == "embeddings"
    assert read_onnx_metadata(float_onnx)["input_kind"] == "float"
    assert _session(float_onnx).get_inputs()[0].type == "tensor(float)"


def test_check_onnx_detects_a_different_model(resnet, uint8_onnx, float_onnx):
    assert check_onnx(resnet, uint8_onnx) < 1e-4
    assert check_onnx(resnet, float_onnx) < 1e-4
    other = copy.deepcopy(resnet)
    with torch.no_grad():
        other.head.bn.running_mean.add_(0.5)
    assert check_onnx(other, uint8_onnx) > 1e-3


def test_onnx_graph_has_no_custom_ops(uint8_onnx):
    model = onnx.load(str(uint8_onnx))
    domains = {node.domain for node in model.graph.node}
    assert domains <= {"", "ai.onnx"}, domains
    for fn in model.functions:
        assert not fn.domain.startswith("isr_reid"), fn.domain


def test_onnx_fp16_static_batch(resnet, tmp_path):
    path = export_onnx(resnet, tmp_path / "half.onnx", input="float", fp16=True, dynamic_batch=False)
    model = onnx.load(str(path))
    big = [t for t in model.graph.initializer if int(np.prod(t.dims)) >= 1024]
    assert big and all(t.data_type == onnx.TensorProto.FLOAT16 for t in big)
    sess = _session(path)
    assert sess.get_inputs()[0].shape == [1, 3, *SIZE]
    assert read_onnx_metadata(path)["precision"] == "fp16"
    x = np.random.default_rng(3).standard_normal((1, 3, *SIZE)).astype(np.float32)
    (out,) = sess.run(None, {"images": x})
    with torch.no_grad():
        ref = resnet(torch.from_numpy(x)).numpy()
    assert out.dtype == np.float32
    assert float((out * ref).sum()) > 0.999  # cosine: both have unit norm
    with pytest.raises(Exception, match=r"(?i)dimension|shape"):
        sess.run(None, {"images": np.zeros((2, 3, *SIZE), np.float32)})


def test_torch_export_of_eval_model_matches_eager(resnet):
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(4))
    batch = torch.export.Dim("batch")
    program = torch.export.export(resnet, (x,), dynamic_shapes={"x": {0: batch}})
    y = torch.randn(5, 3, *SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(y), resnet(y), atol=1e-5, rtol=0)


def test_export_pt2_uint8_contract(resnet, tmp_path):
    path = export_pt2(resnet, tmp_path / "m.pt2", input="uint8")
    program = torch.export.load(str(path))
    images = np.random.default_rng(6).integers(0, 256, (3, 3, *SIZE), dtype=np.uint8)
    with torch.no_grad():
        out = program.module()(torch.from_numpy(images))
        ref = resnet(_normalise_reference(images, resnet.cfg.mean, resnet.cfg.std))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


VIT = "transreid_ssl_vit_small"


def test_onnx_vit_matches_pytorch(tmp_path):
    arch = isr_reid.get_config(VIT).architecture
    if arch not in list_architectures():
        pytest.skip(f"{arch} is not registered")
    torch.manual_seed(0)
    model = isr_reid.load_model(VIT, pretrained=False, input_size=(32, 16), device="cpu")
    # Two of the twelve blocks use every op of the architecture and keep the export cheap.
    model.blocks = model.blocks[:2]
    _perturb(model, 2)
    path = export_onnx(model, tmp_path / "vit.onnx", input="float")
    sess = _session(path)
    for batch in (1, 7):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 16)).astype(np.float32)
        (out,) = sess.run(None, {"images": x})
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_bad_arguments_are_named(resnet, tmp_path):
    with pytest.raises(ValueError, match="input"):
        export_onnx(resnet, tmp_path / "x.onnx", input="bgr")
    with pytest.raises(ValueError, match="opset 17"):
        export_onnx(resnet, tmp_path / "x.onnx", opset=17)
    with pytest.raises(TypeError, match="model"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_cli_needs_weights_or_random_init(tmp_path, capsys):
    rc = cli.main(["export", "--model", "isr_resnet18", "--format", "onnx", "-o", str(tmp_path / "m.onnx")])
    assert rc == 1
    assert "--init random" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
