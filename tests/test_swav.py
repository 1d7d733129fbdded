"""SwAV (course_lib.ssl.swav): Sinkhorn-Knopp, the swapped prediction, the queue, prototype freezing."""
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from course_lib.ssl.swav import (Prototypes, SwAVQueue, distributed_sinkhorn, freeze_prototypes_if_early, sinkhorn,
                                 swapped_prediction_loss, swav_codes)


pytestmark = pytest.mark.usefixtures("one_thread")


def naive_sinkhorn(scores, epsilon, iterations):
    """The official SwAV code, line by line (no max subtraction), in float64."""
    q = torch.exp(scores.double() / epsilon).t()
    k, b = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    q *= b
    return q.t()


def unit_scores(batch=64, prototypes=16, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(batch, dim, generator=generator), dim=1)
    c = F.normalize(torch.randn(prototypes, dim, generator=generator), dim=1)
    return z @ c.t()


def test_sinkhorn_rows_sum_to_one():
    codes = sinkhorn(unit_scores())
    assert codes.shape == (64, 16)
    assert torch.allclose(codes.sum(dim=1), torch.ones(64), atol=1e-5)
    assert (codes >= 0).all()


def test_sinkhorn_matches_the_naive_reference():
    scores = unit_scores(batch=12, prototypes=5)
    for epsilon, iterations in ((0.05, 3), (0.5, 1), (0.1, 10)):
        expected = naive_sinkhorn(scores, epsilon, iterations).float()
        assert torch.allclose(sinkhorn(scores, epsilon, iterations), expected, atol=1e-6)


def test_sinkhorn_approaches_equipartition():
    scores = unit_scores(batch=200, prototypes=10)
    scores[:, 0] += 1.0  # every sample prefers prototype 0: softmax alone puts most mass there
    errors = []
    for iterations in (1, 3, 10, 50):
        mass = sinkhorn(scores, 0.05, iterations).sum(dim=0)  # samples per prototype
        errors.append(float((mass - 20).abs().max()))
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.5 < errors[0]
    plain = torch.softmax(scores / 0.05, dim=1).sum(dim=0)
    assert plain[0] > 100  # without Sinkhorn one prototype takes over


def test_sinkhorn_has_no_overflow_on_large_scores():
    scores = unit_scores(batch=8, prototypes=4)
    assert not torch.isfinite(naive_sinkhorn(scores * 100, 0.05, 3)).all()  # the naive code overflows
    shifted = sinkhorn(scores * 100 + 1e4, 0.05, 3)
    assert torch.isfinite(shifted).all()
    assert torch.allclose(shifted, sinkhorn(scores * 100, 0.05, 3))  # a shift of all scores changes nothing
    assert torch.allclose(shifted.sum(dim=1), torch.ones(8), atol=1e-5)


def test_sinkhorn_rejects_bad_input():
    with pytest.raises(ValueError, match="B×K"):
        sinkhorn(torch.zeros(0, 4))
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn(torch.zeros(2, 4), epsilon=0)


def test_distributed_sinkhorn_without_process_group_is_sinkhorn():
    scores = unit_scores()
    assert torch.equal(distributed_sinkhorn(scores), sinkhorn(scores))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sinkhorn_worker(rank, port, scores, results):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        half = scores.shape[0] // 2
        results[rank] = distributed_sinkhorn(scores[rank * half:(rank + 1) * half], 0.05, 3)
    finally:
        dist.destroy_process_group()


def test_distributed_sinkhorn_equals_sinkhorn_over_the_union_of_the_batches():
    scores = unit_scores(batch=32, prototypes=6) * 20  # large scores: the global max must be shared
    results = mp.Manager().dict()
    mp.spawn(_sinkhorn_worker, args=(_free_port(), scores, results), nprocs=2)
    assert torch.allclose(torch.cat([results[0], results[1]]), sinkhorn(scores, 0.05, 3), atol=1e-6)


def test_swapped_prediction_loss_by_hand():
    scores = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]])]
    codes = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    ce = lambda s, q: float(-(q * torch.log_softmax(s / 0.1, dim=1)).sum())
    crop0 = (ce(scores[1], codes[0]) + ce(scores[2], codes[0])) / 2
    crop1 = (ce(scores[0], codes[1]) + ce(scores[2], codes[1])) / 2
    loss = swapped_prediction_loss(scores, codes, (0, 1), temperature=0.1)
    assert loss.item() == pytest.approx((crop0 + crop1) / 2, rel=1e-6)


def test_prototypes_stay_on_the_unit_sphere():
    prototypes = Prototypes(8, 5)
    with torch.no_grad():
        prototypes.weight.mul_(3)
    prototypes.normalize_()
    assert torch.allclose(prototypes.weight.norm(dim=1), torch.ones(5))


def test_queue_is_used_once_full_and_is_first_in_first_out():
    torch.manual_seed(0)
    prototypes, queue = Prototypes(4, 3), SwAVQueue(1, 6, 4)
    batches = [F.normalize(torch.randn(3, 4), dim=1) for _ in range(3)]
    scores = prototypes(batches[0])
    assert queue.scores_with_queue(0, scores, prototypes).shape == (3, 3)  # empty queue: batch only
    queue.push(0, batches[0])
    assert queue.scores_with_queue(0, scores, prototypes).shape == (3, 3)  # half full: still unused
    queue.push(0, batches[1])
    assert queue.scores_with_queue(0, scores, prototypes).shape == (9, 3)
    queue.push(0, batches[2])
    assert torch.equal(queue.embeddings[0], torch.cat([batches[2], batches[1]]))  # newest first, oldest dropped


def test_swav_codes_keep_the_batch_rows_of_a_queued_sinkhorn():
    torch.manual_seed(0)
    prototypes, queue = Prototypes(4, 3), SwAVQueue(2, 4, 4)
    queue.embeddings.copy_(F.normalize(torch.randn(2, 4, 4), dim=2))
    before = queue.embeddings.clone()
    embeddings = [F.normalize(torch.randn(2, 4), dim=1) for _ in range(3)]
    scores = [prototypes(z) for z in embeddings]
    codes = swav_codes(embeddings, scores, prototypes, (0, 1), queue)
    for index in (0, 1):
        expected = sinkhorn(torch.cat([prototypes(before[index]), scores[index]]))[-2:]
        assert torch.allclose(codes[index], expected)
        assert torch.equal(queue.embeddings[index, :2], embeddings[index])  # the batch entered the queue


def test_prototypes_are_frozen_only_during_the_first_iterations():
    prototypes = Prototypes(4, 3)
    prototypes(torch.ones(1, 4)).sum().backward()
    assert freeze_prototypes_if_early(prototypes, 0, 2) and prototypes.weight.grad is None
    prototypes(torch.ones(1, 4)).sum().backward()
    assert not freeze_prototypes_if_early(prototypes, 2, 2) and prototypes.weight.grad is not None


def test_sinkhorn_and_swav_loss_stay_float32_for_bf16_scores():
    """Under bf16 autocast (CUDA training) the scores arrive in bf16: the codes and the loss are float32,
    and the loss equals the float32 computation on the same (bf16-rounded) values, even inside autocast."""
    scores = [unit_scores(batch=16, prototypes=8, seed=seed).bfloat16().requires_grad_() for seed in (0, 1, 2)]
    codes = [sinkhorn(scores[0]), sinkhorn(scores[1])]
    assert all(q.dtype == torch.float32 for q in codes)
    assert torch.allclose(codes[0], sinkhorn(scores[0].float()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = swapped_prediction_loss(scores, codes, (0, 1))
    assert loss.dtype == torch.float32
    assert torch.equal(loss, swapped_prediction_loss([s.float() for s in scores], codes, (0, 1)))
    loss.backward()
    assert scores[2].grad.dtype == torch.bfloat16 and torch.isfinite(scores[2].grad.float()).all()
