"""The codebook at the paper's shapes (8192 x 128, 16 windows x 450 tokens a step) and across processes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from modeling_fmrilm import FmriTokenizerConfig
from modeling_fmrilm.modeling_fmri_tokenizer import FmriVectorQuantizer
from tests.support.tiny_tokenizer import tiny_config, unit

PAPER_CODES, PAPER_DIM, PAPER_VECTORS = 8192, 128, 16 * 450


def clustered_batches(num_vectors: int, dim: int, num_clusters: int, seed: int):
    """Endless batches of unit vectors around `num_clusters` centres with Zipf-like cluster sizes."""
    generator = torch.Generator().manual_seed(seed)
    centres = unit(torch.randn(num_clusters, dim, generator=generator))
    weights = torch.arange(1, num_clusters + 1).float() ** -0.7
    while True:
        members = torch.multinomial(weights, num_vectors, replacement=True, generator=generator)
        yield unit(centres[members] + torch.randn(num_vectors, dim, generator=generator) / math.sqrt(dim))


@pytest.mark.slow
def test_codebook_holds_at_the_paper_shapes():
    # paper shapes and the default usage rule; 2 k-means iterations instead of 10 keep the test in seconds
    config = FmriTokenizerConfig(num_codes=PAPER_CODES, code_dim=PAPER_DIM, kmeans_iters=2)
    quantizer = FmriVectorQuantizer(config).train()
    batches = clustered_batches(PAPER_VECTORS, PAPER_DIM, num_clusters=1024, seed=0)
    assert quantizer.max_restarts == 24  # ceil(8192 / (100 * ln(1 / 0.03))): 0.29% of the codes a step

    # warm-up: k-means waits for 4 x 8192 vectors, 5 steps of 7200
    warm_up_steps = 0
    while int(quantizer.kmeans_vectors_used) == 0:
        quantizer(next(batches)[None])
        warm_up_steps += 1
    assert (warm_up_steps, int(quantizer.kmeans_vectors_used)) == (5, 5 * PAPER_VECTORS)
    assert (quantizer.code_usage > 0).all()  # k-means left no code empty

    def step() -> tuple[int, int]:
        """(codes restarted, of which the step used)."""
        before = quantizer.codebook.weight.clone()
        _, codes, _ = quantizer(next(batches)[None])
        used = torch.zeros(PAPER_CODES, dtype=torch.bool)
        used[codes.reshape(-1)] = True
        moved = (quantizer.codebook.weight * before).sum(-1) < 0.999  # an EMA step moves a code far less
        assert int(moved.sum()) == int(quantizer.last_restart_count)
        return int(moved.sum()), int((moved & used).sum())

    # after warm-up no code is due: the old rule (EMA count < 1.0 while a code's share is 0.88 a step)
    # restarted about a quarter of the codes here, every step
    assert [step() for _ in range(3)] == [(0, 0)] * 3
    # every code's usage gone (as if unused for many horizons): the cap holds and no used code moves
    quantizer.code_usage.zero_()
    for restarted, of_them_used in [step() for _ in range(3)]:
        assert restarted == 24 and restarted / PAPER_CODES < 0.005 and of_them_used == 0


def _distributed_worker(rank: int, world_size: int, rendezvous: str, steps: list, results: dict) -> None:
    torch.set_num_threads(
        1
    )  # a forked child must not use the parent's OpenMP pool (it hangs without OMP_NUM_THREADS=1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(100 + rank)  # each rank draws its own restart picks: rank 0's must win
        # 32 codes need 4 x 32 = 128 vectors before k-means: 3 steps of 2 x 24 vectors
        quantizer = FmriVectorQuantizer(
            tiny_config(num_codes=32, code_dim=4, dead_code_horizon=2, dead_code_min_usage=0.3)
        ).train()
        gathered_at, restarted = [], 0
        for batch in steps:
            quantizer(batch[rank * 24 : (rank + 1) * 24][None])  # the two ranks split each batch of 48
            gathered_at.append(int(quantizer.kmeans_vectors_used))
            restarted += int(quantizer.last_restart_count)
        state = torch.cat([quantizer.codebook.weight.flatten(), quantizer.ema_sum.flatten(), quantizer.code_usage])
        states = [torch.empty_like(state) for _ in range(world_size)]
        dist.all_gather(states, state)
        # without k-means and restarts, the EMA statistics of the split batches are those of the whole batches
        plain = FmriVectorQuantizer(tiny_config(**PLAIN_EMA)).train()
        for batch in steps:
            plain(batch[rank * 24 : (rank + 1) * 24][None])
        results[rank] = {
            "gathered_at": gathered_at,
            "identical": all(torch.equal(other, state) for other in states),
            "restarted": restarted,
            "plain": torch.cat([plain.codebook.weight.flatten(), plain.code_usage]),
        }
    finally:
        dist.destroy_process_group()


PLAIN_EMA = dict(num_codes=32, code_dim=4, kmeans_init=False, dead_code_min_usage=0.0, ema_decay=0.8)


def test_two_processes_keep_one_codebook(tmp_path):
    batches = clustered_batches(48, 4, num_clusters=6, seed=7)
    steps = [next(batches) for _ in range(8)]
    with mp.Manager() as manager:
        results = manager.dict()
        # fork: the children start at once, without importing torch and transformers again (CPU, gloo)
        mp.start_processes(
            _distributed_worker, args=(2, str(tmp_path / "rendezvous"), steps, results), nprocs=2, start_method="fork"
        )
        results = dict(results)
    whole = FmriVectorQuantizer(tiny_config(**PLAIN_EMA)).train()
    for batch in steps:
        whole(batch[None])
    for rank in (0, 1):
        # k-means starts once both ranks together hold 4 x 32 vectors (3 steps of 2 x 24), on all of them
        assert results[rank]["gathered_at"] == [0, 0, 144, 144, 144, 144, 144, 144], rank
        assert results[rank]["identical"], rank  # codebook, EMA sums and usage equal on both ranks
        assert results[rank]["restarted"] > 0, rank  # with rank 0's restart vectors, though the ranks draw differently
        torch.testing.assert_close(
            results[rank]["plain"], torch.cat([whole.codebook.weight.flatten(), whole.code_usage])
        )
