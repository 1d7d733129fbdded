import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.data.toyworld import ToyWorld
from course_lib.evaluation import crf
from course_lib.evaluation.crf import STEGO_CRF, CRFParams, dense_crf, dense_crf_batch

BACKENDS = ["pydensecrf", "torch"]


def noisy_scene(seed: int, height: int = 24, width: int = 32, n_classes: int = 3, noise: float = 1.5, pool: int = 1):
    """Three flat-coloured regions (pixel noise of std 6) and logits = 2·one-hot + noise, optionally
    average-pooled to (H/pool)×(W/pool) like patch-level predictions."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    label = np.zeros((height, width), np.int64)
    label[(rows - height / 2) ** 2 + (cols - width / 3) ** 2 < (height / 3) ** 2] = 1
    label[:, int(width * 0.75) :] = 2 % n_classes
    palette = np.array([[40, 90, 200], [220, 160, 40], [30, 180, 60]])
    image = np.clip(palette[label] + rng.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)
    logits = 2.0 * F.one_hot(torch.from_numpy(label), n_classes).permute(2, 0, 1).float()
    logits = logits + noise * torch.from_numpy(rng.standard_normal(logits.shape)).float()
    if pool > 1:
        logits = F.avg_pool2d(logits[None], pool)[0]
    return image, logits, label


def reference_mean_field(image: np.ndarray, logits: torch.Tensor, iterations: int, params: CRFParams) -> np.ndarray:
    """Dense float64 mean field written out with N×N matrices: A = D^{-1/2} K D^{-1/2}, D = K·1,
    self term included (as pydensecrf's filters), Q ← softmax(-U + Σ w A Q)."""
    height, width = image.shape[:2]
    probs = F.softmax(logits.double(), dim=0).reshape(logits.shape[0], -1).numpy()
    unary = -np.log(np.clip(probs, 1e-5, 1.0))
    rows, cols = np.mgrid[0:height, 0:width]
    positions = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float64)

    def normalised_kernel(features):
        kernel = np.exp(-0.5 * ((features[:, None] - features[None]) ** 2).sum(-1))
        norm = kernel.sum(1)
        return kernel / np.sqrt(norm[:, None] * norm[None, :])

    gaussian = normalised_kernel(positions / params.gaussian_sxy)
    colours = image.reshape(-1, 3).astype(np.float64) / params.bilateral_srgb
    bilateral = normalised_kernel(np.concatenate([positions / params.bilateral_sxy, colours], axis=1))

    def softmax(x):
        e = np.exp(x - x.max(0))
        return e / e.sum(0)

    q = softmax(-unary)
    for _ in range(iterations):
        q = softmax(-unary + params.gaussian_compat * q @ gaussian + params.bilateral_compat * q @ bilateral)
    return q.reshape(logits.shape)


@pytest.mark.parametrize("backend", BACKENDS)
def test_output_is_upsampled_probability_map(backend):
    image, logits, _ = noisy_scene(0, pool=4)  # logits 3×6×8 for a 24×32 image
    probs = dense_crf(image, logits, backend=backend)
    assert probs.shape == (3, 24, 32) and probs.dtype == torch.float32
    assert float(probs.min()) >= 0
    torch.testing.assert_close(probs.sum(0), torch.ones(24, 32), atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_iterations_is_softmax_of_upsampled_logits(backend):
    image, logits, _ = noisy_scene(1, pool=4)
    expected = F.softmax(F.interpolate(logits[None], size=(24, 32), mode="bilinear", align_corners=False)[0], dim=0)
    # the unary clips probabilities at 1e-5 (pydensecrf's unary_from_softmax): at most C·1e-5 apart
    torch.testing.assert_close(dense_crf(image, logits, iterations=0, backend=backend), expected, atol=5e-5, rtol=0)


def test_torch_backend_equals_dense_reference():
    """The convolution (Gaussian) and chunked (bilateral) messages equal a plain N×N computation."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    image[:, :3] = [120, 40, 200]  # a flat region so the colour kernel matters
    logits = torch.from_numpy(rng.standard_normal((3, 6, 7))).float()
    params = CRFParams(gaussian_sxy=1.5, gaussian_compat=3, bilateral_sxy=5, bilateral_srgb=20, bilateral_compat=4)
    expected = reference_mean_field(image, logits, iterations=3, params=params)
    got = dense_crf(image, logits, iterations=3, params=params, backend="torch").double().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_recomputed_kernel_blocks_equal_cached_ones(monkeypatch):
    image, logits, _ = noisy_scene(2, pool=4)
    cached = dense_crf(image, logits, backend="torch")
    monkeypatch.setattr(crf._BilateralMessages, "cache_elements", 0)
    monkeypatch.setattr(crf._BilateralMessages, "block_elements", {"cpu": 20000, "other": 20000})
    torch.testing.assert_close(dense_crf(image, logits, backend="torch"), cached, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_crf_cleans_a_noisy_label_map(backend):
    image, logits, label = noisy_scene(3, noise=1.5)  # full-resolution logits, 30 % of pixels wrong
    before = (logits.argmax(0).numpy() == label).mean()
    assert before < 0.75
    # accuracy rises at every step (a wrong sign would make the labels oscillate): measured 0.91, 0.97, 0.99
    accuracies = [(dense_crf(image, logits, it, backend=backend).argmax(0).numpy() == label).mean() for it in (1, 2, 10)]
    assert before + 0.15 < accuracies[0] < accuracies[1] < accuracies[2]
    assert accuracies[2] > 0.98


def test_backends_agree_on_small_images():
    """pydensecrf's permutohedral lattice approximates the exact Gaussian filters of the torch backend.
    Measured on 60 such scenes: argmax agreement >= 99.3 %, mean |ΔQ| <= 0.004; asserted with margin."""
    for seed, noise, pool in [(0, 1.5, 1), (1, 1.5, 4), (2, 3.0, 4), (3, 3.0, 1)]:
        image, logits, _ = noisy_scene(seed, noise=noise, pool=pool)
        lattice = dense_crf(image, logits, backend="pydensecrf")
        exact = dense_crf(image, logits, backend="torch")
        assert (lattice.argmax(0) == exact.argmax(0)).float().mean() > 0.97
        assert (lattice - exact).abs().mean() < 0.01


def test_backends_agree_on_textured_image_with_uninformative_logits():
    """The hard case: toy-world textures and random 6×8 logits, so the pairwise terms decide alone.
    Measured over 16 crops: agreement 95.4-98.8 % (mean 97.7 %), mean |ΔQ| 0.008-0.018."""
    image, _ = ToyWorld("scenes", "val", n_images=1, size=96).render(0)
    image = np.ascontiguousarray((image[40:64, 50:82] * 255).round().astype(np.uint8))
    logits = 2 * torch.randn(4, 6, 8, generator=torch.Generator().manual_seed(0))
    lattice = dense_crf(image, logits, backend="pydensecrf")
    exact = dense_crf(image, logits, backend="torch")
    assert (lattice.argmax(0) == exact.argmax(0)).float().mean() > 0.93
    assert (lattice - exact).abs().mean() < 0.03


def test_strided_bilateral_sources():
    image, logits, label = noisy_scene(4, height=32, width=40, noise=2.0, pool=8)
    exact = dense_crf(image, logits, backend="torch", bilateral_stride=1)
    torch.testing.assert_close(dense_crf(image, logits, backend="torch"), exact)  # 1280 pixels: exact by default
    strided = dense_crf(image, logits, backend="torch", bilateral_stride=3)
    assert not torch.equal(strided, exact)
    assert (strided.argmax(0) == exact.argmax(0)).float().mean() > 0.97
    assert (strided.argmax(0).numpy() == label).mean() > 0.95


def test_auto_backend(monkeypatch):
    image, logits, _ = noisy_scene(5, pool=4)
    assert torch.equal(dense_crf(image, logits), dense_crf(image, logits, backend="pydensecrf"))
    monkeypatch.setattr(crf, "pydensecrf_available", lambda: False)
    assert torch.equal(dense_crf(image, logits), dense_crf(image, logits, backend="torch"))
    with pytest.raises(ImportError, match="pydensecrf2"):
        dense_crf(image, logits, backend="pydensecrf")


def test_accepts_tensors_ignores_autocast_and_keeps_stego_defaults():
    image, logits, _ = noisy_scene(6, pool=4)
    from_numpy = dense_crf(image, logits.numpy().astype(np.float64))
    torch.testing.assert_close(dense_crf(torch.from_numpy(image), logits.half().float()), from_numpy, atol=1e-2, rtol=0)
    assert STEGO_CRF == CRFParams(1, 3, 67, 3, 4)
    exact = dense_crf(image, logits, backend="torch")
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's autocast must not lower the precision
        torch.testing.assert_close(dense_crf(image, logits, backend="torch"), exact)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_equals_per_image_calls(backend):
    scenes = [noisy_scene(seed, pool=4) for seed in range(3)]
    images = [image for image, _, _ in scenes]
    logits = torch.stack([l for _, l, _ in scenes])
    batch = dense_crf_batch(images, logits, workers=2, backend=backend)
    single = torch.stack([dense_crf(i, l, backend=backend) for i, l in zip(images, logits)])
    assert batch.shape == (3, 3, 24, 32)
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=0)
    torch.testing.assert_close(dense_crf_batch(np.stack(images), list(logits), workers=1, backend=backend), single, atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_backend_runs_on_the_logits_device():
    image, logits, _ = noisy_scene(7, pool=4)
    on_gpu = dense_crf(image, logits.cuda(), backend="torch")
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), dense_crf(image, logits, backend="torch"), atol=1e-4, rtol=0)


def test_clear_errors():
    image, logits, _ = noisy_scene(8, pool=4)
    with pytest.raises(TypeError, match="uint8"):
        dense_crf(image.astype(np.float32) / 255, logits)
    with pytest.raises(ValueError, match="channels-first"):
        dense_crf(image.transpose(2, 0, 1).copy(), logits)
    with pytest.raises(ValueError, match="C×h×w"):
        dense_crf(image, logits[0])
    with pytest.raises(TypeError, match="float"):
        dense_crf(image, logits.long())
    with pytest.raises(ValueError, match="NaN"):
        dense_crf(image, torch.full_like(logits, float("nan")))
    with pytest.raises(ValueError, match="aspect ratio"):
        dense_crf(image, logits[:, :, :4])
    with pytest.raises(ValueError, match="Unknown CRF backend"):
        dense_crf(image, logits, backend="lattice")
    with pytest.raises(ValueError, match="iterations"):
        dense_crf(image, logits, iterations=-1)
    with pytest.raises(ValueError, match="torch backend only"):
        dense_crf(image, logits, bilateral_stride=2)  # auto picks pydensecrf
    with pytest.raises(ValueError, match="positive"):
        CRFParams(bilateral_srgb=0)
    with pytest.raises(ValueError, match="2 images but 1 logit"):
        dense_crf_batch([image, image], logits[None])
    with pytest.raises(ValueError, match="workers"):
        dense_crf_batch([image, image], [logits, logits], workers=0)
    with pytest.raises(ValueError, match="different shapes"):
        dense_crf_batch([image, image[:16]], [logits, logits])


def test_scale_rule_scales_only_the_bilateral_width():
    assert crf.CRF_REFERENCE_SIZE == 320  # STEGO src/configs/eval_config.yml:4 (res: 320), src/eval_segmentation.py:134
    assert STEGO_CRF.scaled_to(320) == STEGO_CRF
    toy = STEGO_CRF.scaled_to(96)
    assert toy.bilateral_sxy == pytest.approx(67 * 96 / 320)
    assert (toy.gaussian_sxy, toy.gaussian_compat, toy.bilateral_srgb, toy.bilateral_compat) == (1, 3, 3, 4)
    assert STEGO_CRF.scaled_to((96, 128)) == toy, "the shorter side sets the scale"
    assert STEGO_CRF.scaled_to(448, reference=448) == STEGO_CRF
    assert STEGO_CRF == CRFParams() and STEGO_CRF.bilateral_sxy == 67, "STEGO's constants stay the default"
    for bad in (0, -96, 96.5, (96,), (96, 0)):
        with pytest.raises(ValueError, match="image_size"):
            STEGO_CRF.scaled_to(bad)
    with pytest.raises(ValueError, match="reference"):
        STEGO_CRF.scaled_to(96, reference=0)


def _two_strips_of_one_colour(size: int) -> tuple[np.ndarray, torch.Tensor, int]:
    """A size×size image: a red strip (left sixth, confident class 0), a blue middle (confident class 2)
    and a red strip (right sixth) whose logits barely prefer class 1 (0.3 above the others)."""
    rng = np.random.default_rng(0)
    strip = size // 6
    image = np.empty((size, size, 3))
    image[:] = (200, 60, 40)
    image[:, strip : size - strip] = (40, 90, 200)
    image = np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8)
    logits = torch.zeros(3, size, size)
    logits[0, :, :strip], logits[2, :, strip : size - strip], logits[1, :, size - strip :] = 4.0, 4.0, 0.3
    return image, logits, strip


def test_scaled_crf_does_at_96_px_what_stegos_does_at_320_px():
    def right_strip(size, params):
        image, logits, strip = _two_strips_of_one_colour(size)
        return dense_crf(image, logits, params=params, backend="pydensecrf").argmax(0)[:, -strip:].unique().tolist()

    assert right_strip(320, STEGO_CRF) == [1], "at 320 px STEGO's θα = 67 px does not reach across the image"
    assert right_strip(96, STEGO_CRF) == [0], "at 96 px it does: the far strip takes the other red strip's class"
    assert right_strip(96, STEGO_CRF.scaled_to(96)) == [1]
