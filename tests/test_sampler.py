"""The resumable, shardable sampler and the imbalance helpers."""

import functools
import operator
from collections import Counter

import torch

from train.data import ResumableSampler, balanced_weights, class_loss_weights


def test_same_seed_and_epoch_give_the_same_order_and_epochs_differ():
    a, b = ResumableSampler(50, shuffle=True, seed=3), ResumableSampler(50, shuffle=True, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b) and sorted(a) == list(range(50))
    b.set_epoch(3)
    assert list(a) != list(b)


def test_resume_mid_epoch_yields_exactly_the_rest():
    sampler = ResumableSampler(37, shuffle=True, seed=0)
    sampler.set_epoch(1)
    full = list(sampler)
    sampler.set_epoch(1, start=16)
    assert list(sampler) == full[16:] and len(sampler) == 21


def test_ranks_get_disjoint_equal_shards_covering_everything():
    shards = []
    for rank in range(3):
        s = ResumableSampler(10, shuffle=True, seed=1, rank=rank, world_size=3)
        s.set_epoch(0)
        shards.append(list(s))
    assert {len(s) for s in shards} == {4}
    assert set().union(*shards) == set(range(10))
    evaluation = [list(ResumableSampler(10, shuffle=False, seed=0, rank=r, world_size=3)) for r in range(3)]
    assert sorted(functools.reduce(operator.iadd, evaluation, [])) == list(range(10))


def test_balanced_sampler_draws_classes_equally():
    labels = [0] * 950 + [1] * 50
    sampler = ResumableSampler(len(labels), shuffle=True, seed=0, weights=balanced_weights(labels, 2))
    counts = Counter(labels[i] for i in sampler)
    assert abs(counts[1] / len(labels) - 0.5) < 0.06


def test_class_loss_weights_are_inverse_frequency():
    weights = class_loss_weights([0, 0, 0, 1], 3)
    assert torch.allclose(weights, torch.tensor([4 / 9, 4 / 3, 0.0]))
