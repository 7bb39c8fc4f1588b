"""Shared fixtures: real asset models, a model-state fingerprint, peer-library imports."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import mindlens

ASSETS = Path(os.environ.get("MINDLENS_ASSETS", Path(__file__).parents[2] / "shared" / "assets"))


def assets_or_skip() -> Path:
    if not (ASSETS / "zoo.py").exists():
        pytest.skip(f"test assets not found at {ASSETS} (set MINDLENS_ASSETS)")
    return ASSETS


def load_asset(name: str) -> mindlens.Classifier:
    """A real pretrained model from ../shared/assets as a Classifier."""
    root = assets_or_skip()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import zoo  # type: ignore[import-not-found]

    module, card = zoo.load(name)
    return mindlens.Classifier(module, card["input_size"], card["channels"], card["mean"],
                               card["std"], card["labels"], card["offset"], name=name)


@pytest.fixture(scope="session")
def resnet20() -> mindlens.Classifier:
    return load_asset("cifar10_resnet20")


@pytest.fixture(scope="session")
def mobilenet_v2() -> mindlens.Classifier:
    return load_asset("mobilenet_v2")


@pytest.fixture(scope="session")
def lenet() -> mindlens.Classifier:
    return load_asset("cifar10_lenet")


def asset_images(pattern: str) -> list[Path]:
    return sorted((assets_or_skip() / "images").glob(pattern))


def fingerprint(model: torch.nn.Module) -> dict:
    """Everything a method must leave exactly as it was."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modules": [(n, type(m), id(m)) for n, m in model.named_modules()],
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad is None for p in model.parameters()],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
        "hooks": mindlens.patching.has_hooks(model),
    }


def assert_untouched(before: dict, model: torch.nn.Module) -> None:
    after = fingerprint(model)
    assert before["state"].keys() == after["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), f"state {k} changed"
    for key in ("modules", "training", "requires_grad", "grads", "inplace", "hooks"):
        assert before[key] == after[key], f"{key} changed"


TORCHVISION_STUB = {
    "__init__.py": "from . import models, transforms, ops\n",
    "models/__init__.py": "from . import resnet\n",
    "models/resnet.py": "class BasicBlock: pass\nclass Bottleneck: pass\n",
    "transforms/__init__.py": textwrap.dedent("""
        from . import functional
        class _Unusable:
            def __init__(self, *a, **k): raise RuntimeError('torchvision stub')
        Compose = Normalize = ToTensor = Resize = _Unusable
    """),
    "transforms/functional.py": "def resize(*a, **k): raise RuntimeError('torchvision stub')\n",
    "ops/__init__.py": "def box_iou(*a, **k): raise RuntimeError('torchvision stub')\n",
}


@pytest.fixture(scope="session")
def torchvision_stub(tmp_path_factory: pytest.TempPathFactory) -> None:
    """zennit, pytorch-grad-cam and quantus import torchvision, which does not work here:
    put a minimal stand-in first on sys.path of this test process only (it also shadows a
    broken installed torchvision, which is never imported)."""
    if "torchvision" in sys.modules:
        return
    root = tmp_path_factory.mktemp("tvstub")
    for rel, text in TORCHVISION_STUB.items():
        path = root / "torchvision" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    sys.path.insert(0, str(root))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for modules of many small passes: on a shared 2-core machine,
    thread start-up and oversubscription cost more than they save (10-30x under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_audit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A tiny scanned store and its audit (``tests/spray/tiny.py``), built once: the
    audit reader's and the web audit view's tests only read it (or copy it)."""
    from .spray.tiny import tiny_audit as build

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build(tmp_path_factory.mktemp("tiny-audit"))
    finally:
        torch.set_num_threads(before)
