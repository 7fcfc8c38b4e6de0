import os
import socket
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_temporal.metrics import (
    EERAccuracy,
    MeanClassAccuracy,
    classification_metrics,
    eer_accuracy,
    equal_error_rate,
)


def brute_force_eer(scores, targets):
    """Every threshold tried one by one (numpy), the FPR = FNR crossing interpolated linearly.

    Returns (eer, accuracy at the interpolated point, accuracy of the two bracketing thresholds).
    """
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets).astype(bool)
    thresholds = [np.inf] + sorted(set(scores.tolist()), reverse=True)
    rows = []
    for t in thresholds:
        pred = scores >= t
        fpr = np.sum(pred & ~targets) / np.sum(~targets)
        fnr = np.sum(~pred & targets) / np.sum(targets)
        acc = np.mean(pred == targets)
        rows.append((fpr, fnr, acc))
    for (f0, n0, a0), (f1, n1, a1) in zip(rows[:-1], rows[1:]):
        if f0 - n0 < 0 <= f1 - n1:
            lam = (n0 - f0) / ((f1 - n1) - (f0 - n0))
            eer_fp = f0 + lam * (f1 - f0)
            eer_fn = n0 + lam * (n1 - n0)
            assert abs(eer_fp - eer_fn) < 1e-12  # the interpolated point really has FPR == FNR
            return eer_fp, a0 + lam * (a1 - a0), (a0, a1)
    raise AssertionError("no crossing")


@pytest.mark.parametrize("seed", range(6))
def test_eer_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    targets = rng.random(n) < rng.uniform(0.1, 0.9)
    targets[:2] = [True, False]
    scores = rng.normal(size=n) + targets * rng.uniform(0, 2)
    if seed % 2:
        scores = np.round(scores, 1)  # many ties
    eer, acc, (a0, a1) = brute_force_eer(scores, targets)
    res = equal_error_rate(torch.tensor(scores, dtype=torch.float32), torch.tensor(targets))
    assert res.eer.item() == pytest.approx(eer, abs=1e-6)
    assert res.accuracy.item() == pytest.approx(acc, abs=1e-6)
    assert min(a0, a1) - 1e-6 <= res.accuracy.item() <= max(a0, a1) + 1e-6
    # the metric, fed in uneven batches, agrees with the functional twin
    metric = EERAccuracy()
    cuts = sorted(rng.choice(np.arange(1, n), size=min(3, n - 1), replace=False).tolist())
    for a, b in zip([0] + cuts, cuts + [n]):
        metric.update(torch.tensor(scores[a:b], dtype=torch.float32), torch.tensor(targets[a:b]).long())
    assert metric.compute().item() == pytest.approx(acc, abs=1e-6)
    assert metric.compute_eer().eer.item() == pytest.approx(eer, abs=1e-6)


def test_eer_threshold_is_between_bracketing_scores():
    scores = torch.tensor([0.1, 0.2, 0.7, 0.3, 0.8, 0.9, 0.25])
    targets = torch.tensor([0, 0, 0, 1, 1, 1, 0])
    res = equal_error_rate(scores, targets)
    eer, acc, _ = brute_force_eer(scores.numpy(), targets.numpy())
    assert res.eer.item() == pytest.approx(eer)
    assert 0.3 <= res.threshold.item() <= 0.7
    # exact crossing at a threshold: its own accuracy
    res = equal_error_rate(torch.tensor([0.1, 0.2, 0.7, 0.3, 0.8, 0.9]), torch.tensor([0, 0, 0, 1, 1, 1]))
    assert res.eer.item() == pytest.approx(1 / 3) and res.accuracy.item() == pytest.approx(2 / 3)
    assert res.threshold.item() == pytest.approx(0.7)


def test_separable_and_inverted():
    neg, pos = torch.rand(40) - 2.0, torch.rand(25) + 3.0
    scores, targets = torch.cat([neg, pos]), torch.cat([torch.zeros(40), torch.ones(25)]).long()
    assert eer_accuracy(scores, targets).item() == 1.0
    assert equal_error_rate(scores, targets).eer.item() == 0.0
    assert eer_accuracy(-scores, targets).item() == 0.0


def test_two_class_logits_equal_logit_difference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 2, generator=g)
    targets = torch.randint(0, 2, (50,), generator=g)
    want = eer_accuracy(logits[:, 1] - logits[:, 0], targets)
    assert eer_accuracy(logits, targets) == want
    # monotone transform of the score (the class-1 probability): same ranking, same result
    assert eer_accuracy(logits.softmax(1)[:, 1].double(), targets).item() == pytest.approx(want.item())
    m = EERAccuracy()
    m.update(logits, targets)
    assert m.compute() == want


def test_merge_state_equals_single_instance():
    g = torch.Generator().manual_seed(1)
    scores, targets = torch.randn(101, generator=g), torch.randint(0, 2, (101,), generator=g)
    one, a, b = EERAccuracy(), EERAccuracy(), EERAccuracy()
    one.update(scores, targets)
    a.update(scores[:30], targets[:30])
    b.update(scores[30:70], targets[30:70])
    b.update(scores[70:], targets[70:])
    a.merge_state(b)
    assert a.compute() == one.compute()
    assert a.compute_eer() == one.compute_eer()


def test_single_class_gives_nan_with_warning():
    m = EERAccuracy()
    m.update(torch.randn(5), torch.ones(5, dtype=torch.long))
    with pytest.warns(UserWarning, match="undefined with 5 positive and 0 negative"):
        assert torch.isnan(m.compute())


def test_eer_bad_input():
    with pytest.raises(ValueError, match="0 or 1; got 2 at index 1"):
        eer_accuracy(torch.tensor([0.1, 0.2]), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="NaN score"):
        EERAccuracy().update(torch.tensor([0.1, float("nan")]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        eer_accuracy(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="same shape"):
        eer_accuracy(torch.randn(4), torch.tensor([0, 1, 0]))


def direct_mean_class_acc(pred, target):
    per_class = [np.mean(pred[target == c] == c) for c in np.unique(target)]
    return float(np.mean(per_class))


def test_mean_class_accuracy_and_collection_against_direct():
    g = torch.Generator().manual_seed(2)
    K = 8
    logits = torch.randn(200, K, generator=g)
    target = torch.randint(0, K - 1, (200,), generator=g)  # class K-1 never occurs in the targets
    logits[target == 0, 0] += 3  # class 0 mostly right
    mca = MeanClassAccuracy(K)
    for chunk in range(4):
        sl = slice(chunk * 50, (chunk + 1) * 50)
        mca.update(logits[sl], target[sl])
    pred = logits.argmax(1)
    assert mca.compute().item() == pytest.approx(direct_mean_class_acc(pred.numpy(), target.numpy()), abs=1e-6)

    metrics = classification_metrics(K, prefix="val/")
    metrics.update(logits, target)
    out = metrics.compute()
    assert set(out) == {"val/top1", "val/top5", "val/mean_class_acc"}
    top5 = logits.topk(5, dim=1).indices
    assert out["val/top1"].item() == pytest.approx((pred == target).float().mean().item())
    assert out["val/top5"].item() == pytest.approx((top5 == target[:, None]).any(1).float().mean().item())
    assert out["val/mean_class_acc"].item() == pytest.approx(mca.compute().item())

    assert set(classification_metrics(5).keys()) == {"top1", "mean_class_acc"}  # top-5 only when K > 5
    assert set(classification_metrics(2).keys()) == {"top1", "mean_class_acc", "eer_acc"}
    with pytest.raises(ValueError, match="num_classes == 2"):
        classification_metrics(3, eer=True)
    with pytest.raises(ValueError, match="outside 0..7"):
        MeanClassAccuracy(K).update(logits[:2], torch.tensor([0, 8]))


# ---------------------------------------------------------------------------------------------------------------
# Two real processes (gloo, CPU): states gathered by torchmetrics' declared reductions
# ---------------------------------------------------------------------------------------------------------------
def _data():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(77, 2, generator=g)
    target = torch.randint(0, 2, (77,), generator=g)
    logits[target == 1, 1] += 1.0
    return logits, target


def _ddp_worker(rank, world, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        logits, target = _data()
        shard = slice(0, 50) if rank == 0 else slice(50, None)  # uneven shards, like a last partial batch
        metrics = classification_metrics(2)
        eer = EERAccuracy()
        for sl in (slice(shard.start, (shard.start or 0) + 20), slice((shard.start or 0) + 20, shard.stop)):
            metrics.update(logits[sl], target[sl])
            eer.update(logits[sl], target[sl])
        res = {k: v.item() for k, v in metrics.compute().items()}
        res["eer"] = eer.compute_eer().eer.item()
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_single_process(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    logits, target = _data()
    single = classification_metrics(2)
    single.update(logits, target)
    want = {k: v.item() for k, v in single.compute().items()}
    want["eer"] = equal_error_rate(logits, target).eer.item()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k], abs=1e-6), (rank, k)
    # a metric that was not gathered would differ: the shard alone gives another EER accuracy
    assert eer_accuracy(logits[:50], target[:50]).item() != pytest.approx(want["eer_acc"], abs=1e-6)
