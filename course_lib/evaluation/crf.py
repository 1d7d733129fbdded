"""Fully connected CRF post-processing with STEGO's parameters (pydensecrf or pure PyTorch).

Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge Potentials"
(NeurIPS 2011), as STEGO uses it (Hamilton et al., ICLR 2022, official ``src/crf.py``):

- the logits (C×h×w, e.g. at patch resolution) are upsampled bilinearly to the image (H×W,
  ``align_corners=False``) and the unary is ``U = -log(clip(softmax(logits), 1e-5, 1))``
  (pydensecrf's ``unary_from_softmax``);
- two Potts terms: an appearance-free *Gaussian* kernel ``k_g = exp(-|p_i - p_j|² / 2θγ²)``
  (θγ = sxy = 1, weight w_g = 3) and a *bilateral* kernel
  ``k_b = exp(-|p_i - p_j|² / 2θα² - |I_i - I_j|² / 2θβ²)`` (θα = 67, θβ = srgb = 3, w_b = 4);
- 10 mean-field iterations ``Q ← softmax(-U + Σ_m w_m · A_m Q)``, starting from ``softmax(-U)``.

STEGO set θα for 320-px images (:data:`CRF_REFERENCE_SIZE`); :meth:`CRFParams.scaled_to` states
and applies the rule for other sizes (θα ∝ the image's shorter side, θγ and θβ fixed), e.g.
``dense_crf(image, logits, params=STEGO_CRF.scaled_to(96))`` on the toy world's 96-px images.

Two facts from Krähenbühl's C++ code inside pydensecrf (``densecrf/src/pairwise.cpp``,
``densecrf.cpp``, ``labelcompatibility.cpp``) fix what ``A_m`` is, and the PyTorch backend follows
them so that both backends agree:

- ``PottsCompatibility(w)`` multiplies the filtered Q by ``-w`` and the message is subtracted, so
  the label's own filtered mass is *added* with weight w (energy ``w·[l_i ≠ l_j]``);
- kernels are normalised symmetrically, ``A = D^{-1/2} K D^{-1/2}`` with ``D = K·1``, and the
  permutohedral filter includes the pixel itself (``K_ii = 1``). Probing pydensecrf's normalised
  kernel on a 12×16 image gives a diagonal of 0.167 (exact Gaussian with self term: 0.183; without:
  0) and a relative Frobenius distance of 9 % (Gaussian) / 14 % (bilateral) to the exact kernel
  with the self term, against 59 % / 36 % without it. So, unlike the paper's sum over ``j ≠ i``,
  both backends keep the self term.

Backends (``backend=``): ``"pydensecrf"`` (the ``pydensecrf2`` package, permutohedral lattice: an
approximation of the Gaussian filters, CPU only; the batch API runs one image per process);
``"torch"`` (exact kernels on the logits' device, CPU or GPU: the Gaussian term is a separable
convolution truncated at 4θγ, the bilateral term a dense N×N product computed in blocks);
``"auto"`` picks pydensecrf when it is installed, else torch. For images with more than
``MAX_BILATERAL_SOURCES`` pixels the torch bilateral term takes its messages from a regular grid of
sources of stride s (each standing for its s×s block; ``bilateral_stride`` overrides the automatic
stride, 1 is exact): with θα = 67 the spatial part is smooth at that scale, and the cost falls by s².

Measured agreement of the two backends (argmax; mean |ΔQ|): 24×32 scenes with informative logits
≥ 99.3 % (≤ 0.004); photo crops with uninformative 27-class logits, the hardest case, 97 % at
96×96 (exact), 94 % at 128×128 (stride 2), 92 % at 320×320 (stride 4). On a CPU the torch backend is
about 30× slower than pydensecrf (e.g. 80 s for one 320×320 image); it is meant for GPUs and for
machines without pydensecrf (``benchmarks/bench_crf.py``).
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

BACKENDS = ("auto", "pydensecrf", "torch")
UNARY_CLIP = 1e-5
"""Probabilities are clipped to [1e-5, 1] before the log, as pydensecrf's ``unary_from_softmax``."""
MAX_BILATERAL_SOURCES = 10_000
"""Above this many pixels the torch bilateral term uses a strided grid of message sources."""
GAUSSIAN_TRUNCATION = 4.0
"""The torch Gaussian term's convolution covers ±4θγ: it leaves out at most ~1e-4 of the kernel's
mass (6e-6 for θγ = 1)."""


CRF_REFERENCE_SIZE = 320
"""Image side STEGO's CRF constants were set for: its evaluation resizes the shorter side to
``res: 320`` and centre-crops 320×320 (``src/configs/eval_config.yml:4``, ``src/utils.py:165-178``)
and runs the CRF on those images (``src/eval_segmentation.py:134``)."""


@dataclass(frozen=True)
class CRFParams:
    """Kernel widths (θγ = ``gaussian_sxy``, θα = ``bilateral_sxy``, θβ = ``bilateral_srgb``, in
    pixels and 0..255 colour units) and Potts weights of the two pairwise terms."""

    gaussian_sxy: float = 1.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 67.0
    bilateral_srgb: float = 3.0
    bilateral_compat: float = 4.0

    def __post_init__(self):
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CRFParams.{name} must be positive, got {getattr(self, name)}")

    def scaled_to(self, image_size: int | tuple[int, int], reference: int = CRF_REFERENCE_SIZE) -> CRFParams:
        """The same CRF for images of another size: the bilateral kernel's spatial width θα scaled
        by ``s = min(H, W) / reference``; θγ, θβ and the weights unchanged.

        The rule: θα is a *scene* scale (pixels within about a fifth of the image side that share a
        colour vote together: 67 px of STEGO's 320-px images), so it follows the image; θγ = 1 px is a
        *pixel* scale (it smooths away one-pixel noise at any size; scaled to 0.3 px for a 96-px image
        it would vanish: a neighbour would weigh exp(-1 / (2·0.3²)) ≈ 0.004); θβ is in colour units.
        With the default reference, ``STEGO_CRF.scaled_to(320)`` is STEGO's CRF and
        ``STEGO_CRF.scaled_to(96)`` has θα = 67·96/320 = 20.1 px: unscaled, 67 px spans a 96-px
        image and relabels whole regions of similar colour.

        Args:
            image_size: side ``S`` of square images, or ``(H, W)`` (the shorter side is used, as
                STEGO resizes the shorter side to its resolution).
            reference: the image side these parameters were set for, in pixels
                (:data:`CRF_REFERENCE_SIZE` for STEGO's).
        """
        sides = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else image_size
        if not isinstance(sides, (tuple, list)) or len(sides) != 2 or not all(isinstance(side, (int, np.integer)) and side > 0 for side in sides):
            raise ValueError(f"image_size must be a positive integer or (H, W), got {image_size!r}")
        if not isinstance(reference, (int, np.integer)) or reference <= 0:
            raise ValueError(f"reference must be a positive image side in pixels, got {reference!r}")
        return replace(self, bilateral_sxy=self.bilateral_sxy * min(sides) / reference)


STEGO_CRF = CRFParams()
"""STEGO's constants (``src/crf.py``: POS_XY_STD 1, POS_W 3, Bi_XY_STD 67, Bi_RGB_STD 3, Bi_W 4)."""


def pydensecrf_available() -> bool:
    """True when the ``pydensecrf`` module (PyPI package ``pydensecrf2``) can be imported."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def dense_crf(
    image,
    logits: torch.Tensor,
    iterations: int = 10,
    *,
    params: CRFParams = STEGO_CRF,
    backend: str = "auto",
    bilateral_stride: int | None = None,
) -> torch.Tensor:
    """Refine one image's class scores with a fully connected CRF.

    Args:
        image: H×W×3 uint8 RGB image (NumPy array or tensor).
        logits: C×h×w scores (any float dtype and device); h×w may be smaller than H×W with the
            same aspect ratio (e.g. patch resolution), it is upsampled bilinearly to H×W.
        iterations: mean-field iterations; 0 returns ``softmax`` of the upsampled logits (with
            probabilities clipped at 1e-5, as the unary is).
        params: kernel widths and weights, STEGO's by default.
        backend: ``"auto"`` (pydensecrf when installed, STEGO's numbers, even for GPU logits),
            ``"pydensecrf"`` or ``"torch"`` (runs on the logits' device; see the module docstring).
        bilateral_stride: torch backend only: stride of the grid of bilateral message sources
            (1 = exact); ``None`` chooses 1 up to ``MAX_BILATERAL_SOURCES`` pixels.

    Returns:
        C×H×W float32 probabilities (they sum to 1 over C) on the logits' device.
    """
    image_t = _check_image(image, "image")
    logits_t = _check_logits(logits, "logits")
    backend = _resolve_backend(backend, bilateral_stride, iterations)
    _check_sizes(image_t.shape[:2], logits_t.shape[1:], "image", "logits")
    if backend == "pydensecrf":
        probs = _pydensecrf_single(image_t.cpu().numpy(), logits_t.detach().float().cpu().numpy(), iterations, params)
        return torch.from_numpy(probs).to(logits_t.device)
    return _torch_mean_field(image_t[None], logits_t[None], iterations, params, bilateral_stride)[0]


def dense_crf_batch(
    images,
    logits,
    iterations: int = 10,
    workers: int | None = None,
    *,
    params: CRFParams = STEGO_CRF,
    backend: str = "auto",
    bilateral_stride: int | None = None,
) -> torch.Tensor:
    """:func:`dense_crf` on a batch of same-size images, using every core or the GPU.

    Args:
        images: B×H×W×3 uint8 array / tensor, or a sequence of B H×W×3 images of one size.
        logits: B×C×h×w tensor, or a sequence of B C×h×w tensors.
        workers: pydensecrf backend: processes in the pool (default ``os.cpu_count()``; 1 runs in
            this process). The torch backend processes the whole batch at once and ignores it.
        iterations, params, backend, bilateral_stride: as in :func:`dense_crf`.

    Returns:
        B×C×H×W float32 probabilities on the logits' device, equal to per-image calls.
    """
    images_t = _stack(images, "images", _check_image)
    logits_t = _stack(logits, "logits", _check_logits)
    if images_t.shape[0] != logits_t.shape[0]:
        raise ValueError(f"{images_t.shape[0]} images but {logits_t.shape[0]} logit maps: one per image is needed")
    backend = _resolve_backend(backend, bilateral_stride, iterations)
    _check_sizes(images_t.shape[1:3], logits_t.shape[2:], "images", "logits")
    if backend == "torch":
        return _torch_mean_field(images_t, logits_t, iterations, params, bilateral_stride)

    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    images_np = images_t.cpu().numpy()
    logits_np = logits_t.detach().float().cpu().numpy()  # NumPy pickles plainly (torch would share memory)
    jobs = [(images_np[b], logits_np[b], iterations, params) for b in range(len(images_np))]
    workers = min(workers, len(jobs))
    if workers <= 1:
        results = [_pydensecrf_single(*job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_single_threaded_worker) as pool:
            results = list(pool.map(_pydensecrf_job, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
    return torch.from_numpy(np.stack(results)).to(logits_t.device)


# ----------------------------------------------------------------------------- input checks


def _check_image(image, name: str) -> torch.Tensor:
    if not isinstance(image, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be an H×W×3 uint8 NumPy array or tensor, got {type(image).__name__}")
    image = torch.as_tensor(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        hint = " (it looks channels-first: use image.permute(1, 2, 0))" if image.ndim == 3 and image.shape[0] == 3 else ""
        raise ValueError(f"{name} must have shape H×W×3 (RGB, channels last), got {tuple(image.shape)}{hint}")
    if image.dtype != torch.uint8:
        raise TypeError(
            f"{name} must be uint8 with values 0..255 (the colour kernel's width srgb is in those units), "
            f"got {image.dtype}; e.g. convert a [0, 1] float image with (x * 255).round().to(torch.uint8)"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} is empty: shape {tuple(image.shape)}")
    return image


def _check_logits(logits, name: str) -> torch.Tensor:
    logits = torch.as_tensor(logits)
    if logits.ndim != 3:
        raise ValueError(f"{name} must have shape C×h×w (class scores), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"{name} must hold float scores (logits), got {logits.dtype}")
    if logits.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(logits.shape)}")
    return _check_finite(logits, name)


def _check_sizes(image_hw, logits_hw, image_name: str, logits_name: str) -> None:
    (H, W), (h, w) = image_hw, logits_hw
    # Upsampling must not distort: h×w may be off from the image's aspect ratio by at most one cell
    # (e.g. 321×480 pixels with 40×60 patches), measured along the longer side.
    if abs(h * W - H * w) > max(H, W):
        raise ValueError(
            f"{logits_name} of size {h}×{w} do not have the aspect ratio of {image_name} of size {H}×{W}: "
            "the logits must cover the same image (e.g. patch resolution H/8×W/8)"
        )


def _stack(items, name: str, check) -> torch.Tensor:
    if isinstance(items, (np.ndarray, torch.Tensor)):
        items = torch.as_tensor(items)
        if items.ndim != 4:
            raise ValueError(f"{name} must be a batch with 4 dimensions or a sequence, got shape {tuple(items.shape)}")
        check(items[0], f"{name}[0]")  # shape and dtype of every item
        return _check_finite(items, name) if items.is_floating_point() else items
    if not isinstance(items, Sequence) or len(items) == 0:
        raise ValueError(f"{name} must be a non-empty batch (array, tensor or sequence)")
    checked = [check(item, f"{name}[{b}]") for b, item in enumerate(items)]
    shapes = {tuple(item.shape) for item in checked}
    if len(shapes) > 1:
        raise ValueError(f"{name} have different shapes {sorted(shapes)}: batch images of one size, or call dense_crf per image")
    return torch.stack(checked)


def _check_finite(values: torch.Tensor, name: str) -> torch.Tensor:
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return values


def _resolve_backend(backend: str, bilateral_stride: int | None, iterations: int) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"Unknown CRF backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if not isinstance(iterations, (int, np.integer)) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
    if bilateral_stride is not None and (not isinstance(bilateral_stride, (int, np.integer)) or bilateral_stride < 1):
        raise ValueError(f"bilateral_stride must be a positive integer or None, got {bilateral_stride!r}")
    if backend == "auto":
        backend = "pydensecrf" if pydensecrf_available() else "torch"
    elif backend == "pydensecrf" and not pydensecrf_available():
        raise ImportError("backend='pydensecrf' needs the pydensecrf module: pip install pydensecrf2 (or use backend='torch')")
    if backend == "pydensecrf" and bilateral_stride is not None:
        raise ValueError("bilateral_stride applies to the torch backend only: pass backend='torch'")
    return backend


# ----------------------------------------------------------------------------- shared unary


def _upsampled_probabilities(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B×C×h×w logits → B×C×H×W ``softmax`` of the bilinearly upsampled logits (float32)."""
    logits = logits.float()
    if tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return F.softmax(logits, dim=1)


# ----------------------------------------------------------------------------- pydensecrf backend


def _pydensecrf_single(image: np.ndarray, logits: np.ndarray, iterations: int, params: CRFParams) -> np.ndarray:
    """STEGO's ``dense_crf``: H×W×3 uint8 RGB and C×h×w float32 logits → C×H×W float32 probabilities."""
    import pydensecrf.densecrf as dcrf

    H, W = image.shape[:2]
    probs = _upsampled_probabilities(torch.from_numpy(logits)[None], (H, W))[0].numpy()
    n_classes = probs.shape[0]
    unary = np.ascontiguousarray(-np.log(np.clip(probs, UNARY_CLIP, 1.0)).reshape(n_classes, -1), dtype=np.float32)
    crf = dcrf.DenseCRF2D(W, H, n_classes)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    # STEGO hands the lattice BGR; the exact kernel does not depend on the channel order, the lattice
    # nearly so, and the same order keeps results identical to STEGO's.
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb, rgbim=bgr, compat=params.bilateral_compat)
    return np.asarray(crf.inference(iterations), dtype=np.float32).reshape(n_classes, H, W)


def _pydensecrf_job(job) -> np.ndarray:
    return _pydensecrf_single(*job)


def _single_threaded_worker() -> None:
    torch.set_num_threads(1)  # one process per core: no oversubscription by torch's thread pool


# ----------------------------------------------------------------------------- torch backend


def _torch_mean_field(
    images: torch.Tensor, logits: torch.Tensor, iterations: int, params: CRFParams, bilateral_stride: int | None
) -> torch.Tensor:
    """B×H×W×3 uint8 images and B×C×h×w logits → B×C×H×W mean-field marginals on the logits' device."""
    device = logits.device
    H, W = images.shape[1:3]
    with torch.no_grad(), torch.autocast(device.type, enabled=False):  # float32 throughout, whatever the caller's autocast
        unary = -torch.log(_upsampled_probabilities(logits, (H, W)).clamp_(UNARY_CLIP, 1.0))
        q = F.softmax(-unary, dim=1)
        if iterations == 0:
            return q
        gaussian = _GaussianMessages(H, W, params.gaussian_sxy, device)
        bilateral = _BilateralMessages(images.to(device), params.bilateral_sxy, params.bilateral_srgb, bilateral_stride)
        for _ in range(iterations):
            pairwise = params.gaussian_compat * gaussian(q) + params.bilateral_compat * bilateral(q)
            q = F.softmax(pairwise - unary, dim=1)
        return q


class _GaussianMessages:
    """``Q ↦ D^{-1/2} K D^{-1/2} Q`` for ``K_ij = exp(-|p_i - p_j|² / 2θγ²)`` (self term included),
    as a separable convolution with zero padding (pixels outside the image do not exist)."""

    def __init__(self, height: int, width: int, sxy: float, device: torch.device):
        radius = min(math.ceil(GAUSSIAN_TRUNCATION * sxy), max(height, width) - 1)
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
        taps = torch.exp(-0.5 * (offsets / sxy) ** 2)
        self.row_kernel = taps.view(1, 1, 1, -1)
        self.column_kernel = taps.view(1, 1, -1, 1)
        self.radius = radius
        self.inv_sqrt_norm = self._filter(torch.ones(1, 1, height, width, device=device)).rsqrt()

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.row_kernel, padding=(0, self.radius))
        return F.conv2d(x, self.column_kernel, padding=(self.radius, 0))

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        B, C, H, W = q.shape
        filtered = self._filter((q * self.inv_sqrt_norm).reshape(B * C, 1, H, W)).reshape(B, C, H, W)
        return filtered * self.inv_sqrt_norm


class _BilateralMessages:
    """``Q ↦ D^{-1/2} K D^{-1/2} Q`` for the bilateral kernel (self term included), ``D = K·1``, with
    features ``f = (x/θα, y/θα, r/θβ, g/θβ, b/θβ)``.

    With stride s > 1 the sum over senders j is estimated from a grid of sources, one per s×s block,
    each standing for its block (weight = block area), except that a pixel's own term is exact: in
    its own block the source stands for the other pixels only. With s = 1 this is the exact sum.
    ``K`` is computed in blocks of receivers, ``log K_ij = [f_i, -|f_i|²/2, 1]·[f_j, 1, -|f_j|²/2]``
    (one matrix product on centred features; float64 on CUDA, where a global TF32 setting would
    round this cancelling sum); the blocks are kept when they fit ``cache_elements``, else
    recomputed into one reused buffer at every call.
    """

    cache_elements = 1 << 27  # 512 MB of float32
    block_elements = {"cpu": 1 << 24, "other": 1 << 27}

    def __init__(self, images: torch.Tensor, sxy: float, srgb: float, stride: int | None):
        B, H, W, _ = images.shape
        device = images.device
        if stride is None:
            stride = 1 if H * W <= MAX_BILATERAL_SOURCES else math.ceil(math.sqrt(H * W / MAX_BILATERAL_SOURCES))
        ys, xs = torch.meshgrid(
            torch.arange(H, dtype=torch.float32, device=device),
            torch.arange(W, dtype=torch.float32, device=device),
            indexing="ij",
        )
        positions = torch.stack([xs, ys], dim=-1).reshape(1, H * W, 2).expand(B, -1, -1) / sxy
        colours = images.reshape(B, H * W, 3).float() / srgb
        features = torch.cat([positions, colours], dim=-1)
        # Centred features keep |f|² small, so the expanded squared distances keep their precision.
        features = features - features.mean(dim=1, keepdim=True)
        half_sq_norm = 0.5 * (features**2).sum(-1, keepdim=True)
        ones = torch.ones_like(half_sq_norm)

        source_rows, row_weights = _grid(H, stride, device)
        source_cols, col_weights = _grid(W, stride, device)
        self.source_index = (source_rows[:, None] * W + source_cols[None, :]).reshape(-1)
        self.source_weight = (row_weights[:, None] * col_weights[None, :]).reshape(1, -1, 1)
        block_rows = torch.arange(H, device=device) // stride
        block_cols = torch.arange(W, device=device) // stride
        self.own_source = (block_rows[:, None] * len(source_cols) + block_cols[None, :]).reshape(-1)
        own_source_features = features[:, self.source_index[self.own_source]]
        self.own_kernel = torch.exp(-0.5 * ((features - own_source_features) ** 2).sum(-1, keepdim=True))  # B×N×1
        kernel_dtype = torch.float64 if device.type == "cuda" else torch.float32
        self.receivers = torch.cat([features, -half_sq_norm, ones], dim=-1).to(kernel_dtype)  # B×N×7
        sources = torch.cat([features, ones, -half_sq_norm], dim=-1)[:, self.source_index]
        self.sources_t = sources.transpose(1, 2).contiguous().to(kernel_dtype)  # B×7×S

        n_pixels, n_sources = H * W, self.source_index.numel()
        budget = self.block_elements["cpu" if device.type == "cpu" else "other"]
        rows = max(1, budget // (B * n_sources))
        self.bounds = [(start, min(start + rows, n_pixels)) for start in range(0, n_pixels, rows)]
        if B * n_pixels * n_sources <= self.cache_elements:
            self.blocks = [self._kernel_block(start, stop) for start, stop in self.bounds]
        else:
            self.blocks = None
            self.buffer = torch.empty(B * min(rows, n_pixels) * n_sources, dtype=kernel_dtype, device=device)
        norm = self._kernel_times(self.source_weight.expand(B, -1, -1).contiguous()) + 1 - self.own_kernel  # B×N×1
        self.inv_sqrt_norm = norm.clamp_min(1e-20).rsqrt()

    def _kernel_block(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """B×(stop-start)×S block of K: receivers start..stop, all sources."""
        log_kernel = torch.bmm(self.receivers[:, start:stop], self.sources_t, out=out)
        return log_kernel.clamp_max_(0.0).exp_().float()

    def _kernel_times(self, values: torch.Tensor) -> torch.Tensor:
        """K @ values for B×S×M values → B×N×M."""
        if self.blocks is not None:
            return torch.cat([torch.bmm(block, values) for block in self.blocks], dim=1)
        B, S, M = values.shape
        out = values.new_empty(B, self.receivers.shape[1], M)
        for start, stop in self.bounds:
            buffer = self.buffer[: B * (stop - start) * S].view(B, stop - start, S)
            out[:, start:stop] = torch.bmm(self._kernel_block(start, stop, out=buffer), values)
        return out

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        B, C, H, W = q.shape
        scaled = q.reshape(B, C, H * W).transpose(1, 2) * self.inv_sqrt_norm  # D^{-1/2} Q, B×N×C
        at_sources = scaled[:, self.source_index]
        sampled = self._kernel_times(at_sources * self.source_weight)
        own_term = scaled - self.own_kernel * at_sources[:, self.own_source]  # exact self, not its source
        messages = (sampled + own_term) * self.inv_sqrt_norm
        return messages.transpose(1, 2).reshape(B, C, H, W)


def _grid(size: int, stride: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Source coordinates (block centres, clamped into the image) and block lengths of a stride grid."""
    starts = torch.arange(0, size, stride, device=device)
    lengths = (starts + stride).clamp_max(size) - starts
    return (starts + stride // 2).clamp_max(size - 1), lengths.float()
