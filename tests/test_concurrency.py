"""Several threads explaining with one model: the model afterwards is bit-identical and
every map equals the map of the same call run alone (the per-model lock of
:mod:`mindlens.patching`). The long version (8 threads x every method for 30 s) is
``benchmarks/threads.py``; ``hammer`` below is shared with it."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import mindlens
from mindlens.errors import MindlensError
from mindlens.patching import ModelPatch, model_lock
from mindlens.targets import Targets

from .conftest import assert_untouched, fingerprint

#: settings that keep the slow methods short on 32 px inputs; each path is still taken
#: (exact and incremental occlusion, SLIC regions, a trained MACE unit)
FAST: dict[str, dict[str, Any]] = {
    "occlusion": {"window": 16, "stride": 16},
    "occlusion_incremental": {"window": 16, "stride": 16, "mode": "incremental"},
    "area_occlusion": {"segmenter_options": {"n_segments": 6}},
}

Call = tuple[str, str, dict[str, Any]]  # (label, method name, params)
Outcome = tuple[str, Any]  # ("map", tensor) or ("error", message)


def calls(names: list[str], extra: dict[str, dict[str, Any]] | None = None) -> list[Call]:
    """One call per method (two for occlusion: exact and incremental), fast settings."""
    out: list[Call] = []
    extra = extra or {}
    for name in names:
        labels = ["occlusion", "occlusion_incremental"] if name == "occlusion" else [name]
        for label in labels:
            out.append((label, name, {**FAST.get(label, {}), **extra.get(name, {})}))
    return out


def run_one(clf: mindlens.Classifier, x: torch.Tensor, call: Call) -> Outcome:
    _, name, params = call
    try:
        algo = mindlens.methods.get(name)(**params)
        return "map", algo.explain(clf, x, Targets(None, 1)).maps.detach().clone()
    except MindlensError as err:
        return "error", str(err)


def same(a: Outcome, b: Outcome) -> bool:
    if a[0] != b[0]:
        return False
    return torch.equal(a[1], b[1]) if a[0] == "map" else a[1] == b[1]


def hammer(clf: mindlens.Classifier, x: torch.Tensor, todo: list[Call], threads: int,
           seconds: float = 0.0, rounds: int = 1, seed: int = 0) -> dict[str, Any]:
    """Run every call alone (the reference), then ``threads`` threads that each run the
    calls in their own shuffled order, ``rounds`` times or until ``seconds`` have passed;
    return counts and every mismatch. The model must be bit-identical afterwards."""
    before = fingerprint(clf.module)
    alone = {c[0]: run_one(clf, x, c) for c in todo}
    assert_untouched(before, clf.module)
    done: list[int] = [0] * threads
    bad: list[str] = []
    crashed: list[BaseException] = []
    stop = time.perf_counter() + seconds

    def worker(k: int) -> None:
        rng = random.Random(seed + k)
        try:
            r = 0
            while r < rounds or time.perf_counter() < stop:
                order = list(todo)
                rng.shuffle(order)
                for c in order:
                    got = run_one(clf, x, c)
                    if not same(got, alone[c[0]]):
                        bad.append(f"thread {k} round {r}: {c[0]} differs")
                    done[k] += 1
                r += 1
        except BaseException as e:
            crashed.append(e)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    after = fingerprint(clf.module)
    untouched = True
    try:
        assert_untouched(before, clf.module)
    except AssertionError:
        untouched = False
    return {"calls": sum(done), "seconds": time.perf_counter() - start, "mismatches": bad,
            "crashed": crashed, "untouched": untouched, "after": after,
            "applicable": sorted(k for k, v in alone.items() if v[0] == "map"),
            "not_applicable": sorted(k for k, v in alone.items() if v[0] == "error")}


class TrainModeNet(nn.Module):
    """A small CNN in train mode: BatchNorm (running statistics), Dropout, in-place ReLU,
    spectral norm on the last convolution, a frozen first layer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
            nn.utils.spectral_norm(nn.Conv2d(6, 8, 3, padding=1)), nn.ReLU(inplace=True))
        self.drop = nn.Dropout(0.5)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
        self.features[0].weight.requires_grad_(False)
        self.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))


def train_mode_classifier() -> mindlens.Classifier:
    return mindlens.Classifier(TrainModeNet(), (16, 16), 3, name="train-mode net")


@pytest.fixture(scope="module")
def mace_unit(tmp_path_factory: pytest.TempPathFactory, resnet20: mindlens.Classifier
              ) -> Path:
    from mindlens.methods.mace import train

    from .conftest import asset_images

    out = tmp_path_factory.mktemp("mace") / "unit.safetensors"
    train(resnet20, asset_images("foolbox/cifar10_*")[:4], out, epochs=1, seed=0,
          concepts=2, hidden=8, val_fraction=0.25, prototypes=0)
    return out


def test_lock_is_per_model_reentrant_and_not_on_the_model() -> None:
    a, b = nn.Linear(1, 1), nn.Linear(1, 1)
    assert model_lock(a) is model_lock(a) and model_lock(a) is not model_lock(b)
    assert "_lock" not in vars(a) and all("lock" not in k for k in vars(a))
    with ModelPatch(a), ModelPatch(a):  # nesting in one thread
        entered = threading.Event()

        def other() -> None:
            with ModelPatch(b):  # a different model: not blocked
                entered.set()
            with ModelPatch(a):  # the same model: waits for the outer patch
                pass

        t = threading.Thread(target=other)
        t.start()
        assert entered.wait(10)
        t.join(0.2)
        assert t.is_alive()  # still waiting for a
    t.join(10)
    assert not t.is_alive()


@pytest.mark.usefixtures("one_thread")
def test_resnet20_threads_all_methods(resnet20: mindlens.Classifier, mace_unit: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    todo = calls(mindlens.methods.names(), {"mace": {"unit": str(mace_unit)}})
    out = hammer(resnet20, x, todo, threads=2)
    assert not out["crashed"], out["crashed"]
    assert out["untouched"] and not out["mismatches"], out["mismatches"]
    assert "mace" in out["applicable"] and "occlusion_incremental" in out["applicable"]
    assert out["calls"] == 2 * len(todo)


@pytest.mark.usefixtures("one_thread")
def test_train_mode_model_threads_all_methods() -> None:
    clf = train_mode_classifier()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 16, 16)
    todo = calls([n for n in mindlens.methods.names() if n != "mace"])
    out = hammer(clf, x, todo, threads=3)
    assert not out["crashed"], out["crashed"]
    assert out["untouched"] and not out["mismatches"], out["mismatches"]
    assert clf.module.training and clf.module.features[1].training
    assert len(out["applicable"]) >= 8, out


class Recorder(nn.Module):
    """Records the train/eval mode each forward pass sees."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.training)
        return self.linear(x.flatten(1)[:, :4])


def test_plain_calls_wait_for_a_patch() -> None:
    """``clf(x)`` in another thread never runs the patched (eval-mode) model."""
    net = Recorder().train()
    clf = mindlens.Classifier(net, (2, 2), 1, name="recorder")
    entered, release = threading.Event(), threading.Event()

    def patched() -> None:
        with clf.patched():  # eval mode while inside
            entered.set()
            release.wait(10)

    def plain() -> None:
        entered.wait(10)
        with torch.no_grad():
            clf(torch.zeros(1, 1, 2, 2))

    pool = [threading.Thread(target=patched), threading.Thread(target=plain)]
    for t in pool:
        t.start()
    assert entered.wait(10)
    time.sleep(0.2)
    assert net.seen == []  # the plain call waits for the patch to end
    release.set()
    for t in pool:
        t.join(10)
    assert net.seen == [True]
