"""MACE training, unit files and explanations: frozen base, resume, fingerprint check,
real CIFAR-10 run, and one clear error per kind of bad input."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import mindlens
from mindlens.methods.mace import load_unit, train
from mindlens.methods.mace.unit import MaceUnit

from ..conftest import assert_untouched, asset_images, fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")


class Toy(nn.Module):
    """conv -> ReLU -> 4x4 feature map -> GAP -> linear (3 classes)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def toy(seed: int = 0) -> mindlens.Classifier:
    return mindlens.Classifier(Toy(seed), (8, 8), 3, name=f"toy{seed}")


def toy_images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


SMALL = {"concepts": 3, "embed": 4, "hidden": 16, "batch_size": 16, "progress": False,
         "prototypes": 2, "prototype_size": 4}


@pytest.fixture(scope="module")
def cifar_unit(tmp_path_factory: pytest.TempPathFactory, resnet20: mindlens.Classifier
               ) -> tuple[Path, dict]:
    """A unit trained on the 20 real CIFAR-10 test images (few epochs)."""
    images = asset_images("foolbox/cifar10_*")
    assert len(images) == 20
    before = fingerprint(resnet20.module)
    out = tmp_path_factory.mktemp("mace") / "unit.safetensors"
    train(resnet20, images, out, epochs=8, seed=0, concepts=4, hidden=32, progress=True)
    return out, before


def test_training_leaves_base_model_untouched(cifar_unit, resnet20) -> None:
    _, before = cifar_unit
    assert_untouched(before, resnet20.module)


def test_cifar_unit_file_and_non_predicted_class(cifar_unit, resnet20) -> None:
    path, _ = cifar_unit
    tu = load_unit(path)
    assert tu.attachment.layer == "layer3" and tu.attachment.head == "linear"
    assert tu.meta["train"]["images"] == 20 and 0 <= tu.fidelity <= 1
    assert tu.prototypes is not None
    assert tu.prototypes.crops.shape == (10, 4, 5, 32, 32, 3)
    image = asset_images("foolbox/cifar10_00_*")[0]  # a cat (class 3)
    pred = int(resnet20.predict(resnet20.preprocess(image)).argmax())
    other = (pred + 5) % 10
    before = fingerprint(resnet20.module)
    ex = mindlens.explain(resnet20, image, method="mace", unit=str(path),
                          target=[[pred, other]])
    assert_untouched(before, resnet20.module)
    assert ex.targets.tolist() == [[pred, other]]
    assert ex.maps.shape == (1, 2, 32, 32) and not ex.signed
    con = ex.extras["concepts"]
    rel = con["relevance"]
    assert rel.shape == (1, 2, 4)
    assert (rel[..., :-1] >= rel[..., 1:]).all()  # ranked
    torch.testing.assert_close(ex.maps[:, :, None], con["maps"][:, :, :1])  # top concept
    assert con["prototypes"].shape == (1, 2, 4, 5, 32, 32, 3)
    assert ex.extras["fidelity"] == tu.fidelity
    assert 0 < float(ex.extras["relevance"][0, 1]) < 1
    weighted = mindlens.explain(resnet20, image, method="mace", unit=str(path),
                                target=other, maps="weighted")
    expected = (con["relevance"][0, 1, :, None, None] * con["maps"][0, 1]).sum(0)
    torch.testing.assert_close(weighted.maps[0, 0], expected)
    assert weighted.signed


def test_every_class_can_be_explained(cifar_unit, resnet20) -> None:
    path, _ = cifar_unit
    image = asset_images("foolbox/cifar10_01_*")[0]
    ex = mindlens.explain(resnet20, image, method="mace", unit=str(path),
                          target=[list(range(10))])
    assert ex.maps.shape[:2] == (1, 10) and torch.isfinite(ex.maps).all()


def test_training_is_reproducible_and_resumes_after_a_kill(tmp_path) -> None:
    clf, x = toy(), toy_images(40)
    straight = train(clf, x, tmp_path / "a.safetensors", epochs=4, seed=3, **SMALL)

    def kill(epoch: int, _stats: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(clf, x, tmp_path / "b.safetensors", epochs=4, seed=3, on_epoch=kill, **SMALL)
    assert (tmp_path / "b.safetensors.ckpt").exists()
    seen: list[int] = []
    resumed = train(clf, x, tmp_path / "b.safetensors", epochs=4, seed=3,
                    on_epoch=lambda e, s: seen.append(e), **SMALL)
    assert seen == [3, 4]  # picked up after epoch 2
    assert not (tmp_path / "b.safetensors.ckpt").exists()
    for k, v in straight.unit.state_dict().items():
        assert torch.equal(v, resumed.unit.state_dict()[k]), k
    other = train(clf, x, None, epochs=1, seed=4, **SMALL)
    assert not torch.equal(other.unit.map_generator.weight, straight.unit.map_generator.weight)


def test_one_training_step_changes_only_the_unit() -> None:
    clf = toy()
    before = fingerprint(clf.module)
    torch.manual_seed(0)
    fresh = MaceUnit(train(clf, toy_images(16), None, epochs=1, seed=0, **SMALL).unit.config)
    trained = train(clf, toy_images(16), None, epochs=1, seed=0, **SMALL).unit
    assert_untouched(before, clf.module)
    assert not torch.equal(fresh.output_generator[0].weight, trained.output_generator[0].weight)


def colour_toy() -> mindlens.Classifier:
    """A toy whose class is the colour of a blob: feature channels detect R, G, B."""
    clf = toy(0)
    m = clf.module
    with torch.no_grad():
        m.conv.weight.zero_()
        m.fc.weight.zero_()
        m.fc.bias.zero_()
        for i in range(6):
            m.conv.weight[i, i % 3, 1, 1] = 1.0
        m.conv.bias.fill_(-0.35)
        for j in range(3):
            m.fc.weight[j, j] = m.fc.weight[j, j + 3] = 5.0
    return clf


def blobs(n: int, seed: int) -> torch.Tensor:
    """Faint noise with one 3x3 blob of a random primary colour at a random place."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g) * 0.3
    colour = torch.randint(0, 3, (n,), generator=g)
    pos = torch.randint(0, 6, (n, 2), generator=g)
    for i in range(n):
        x[i, colour[i], pos[i, 0]:pos[i, 0] + 3, pos[i, 1]:pos[i, 1] + 3] = 1.0
    return x


def test_toy_fidelity_on_held_out_images() -> None:
    """Spec §8.8 test 7 (heuristic threshold 95 %)."""
    clf, x = colour_toy(), blobs(240, 5)
    assert torch.bincount(clf.predict(x).argmax(1), minlength=3).min() > 40  # not trivial
    tu = train(clf, x, None, epochs=25, seed=0, val_fraction=0.25, lr=1e-2,
               **{**SMALL, "batch_size": 32, "hidden": 64})
    assert tu.meta["fidelity_on"] == "held-out" and tu.meta["train"]["held_out"] == 60
    assert tu.fidelity >= 0.95


# -- bad input: one clear error each -----------------------------------------------------------
def test_unit_of_another_model_is_refused(tmp_path) -> None:
    path = tmp_path / "u.safetensors"
    train(toy(0), toy_images(12), path, epochs=1, **SMALL)
    with pytest.raises(mindlens.InputError, match="trained for another model"):
        mindlens.explain(toy(1), toy_images(1), method="mace", unit=str(path))


def test_empty_data_folder(tmp_path) -> None:
    (tmp_path / "cats").mkdir()
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(mindlens.InputError, match="no images found"):
        train(toy(), tmp_path, tmp_path / "u.safetensors", epochs=1, **SMALL)


def test_image_size_policy(cifar_unit, resnet20, tmp_path) -> None:
    path, _ = cifar_unit
    big = tmp_path / "big.png"  # files and arrays are resized to the model's input size
    Image.open(asset_images("foolbox/cifar10_02_*")[0]).resize((64, 64)).save(big)
    ex = mindlens.explain(resnet20, big, method="mace", unit=str(path))
    assert ex.maps.shape == (1, 1, 32, 32)
    # a model-space tensor is taken as it is: another size gives other feature maps
    with pytest.raises(mindlens.InputError, match="trained on"):
        mindlens.explain(resnet20, torch.zeros(1, 3, 64, 64), method="mace", unit=str(path))
    with pytest.raises(mindlens.InputError, match="model takes"):
        train(resnet20, torch.zeros(2, 3, 64, 64), None, epochs=1, **SMALL)


def test_model_without_spatial_feature_map() -> None:
    mlp = mindlens.Classifier(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)), (8, 8), 3)
    with pytest.raises(mindlens.NotApplicableError, match="spatial feature map"):
        train(mlp, np.zeros((4, 8, 8, 3), np.uint8), None, epochs=1, **SMALL)


def test_missing_unit_parameter_and_file(tmp_path) -> None:
    with pytest.raises(mindlens.InputError, match="needs unit"):
        mindlens.explain(toy(), toy_images(1), method="mace")
    with pytest.raises(mindlens.InputError, match="not found"):
        mindlens.explain(toy(), toy_images(1), method="mace", unit=str(tmp_path / "x"))


def test_lesion_ratio_and_demo_measure() -> None:
    from mindlens.methods.mace.demo_unit import lesion_ratio, measure

    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True  # a quarter of the image
    assert lesion_ratio(masks.float(), masks)["ratio"] == pytest.approx(4.0)
    assert lesion_ratio(torch.ones(2, 4, 4), masks)["ratio"] == pytest.approx(1.0)
    # end to end on the colour toy: the blob plays the lesion
    clf, x = colour_toy(), blobs(120, 5)
    tu = train(clf, x, None, epochs=5, seed=0, **{**SMALL, "hidden": 32})
    fresh = blobs(24, 9)
    images = (fresh.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    blob = fresh.amax(dim=1) > 0.99
    labels = clf.predict(fresh).argmax(1).numpy()
    result = measure(clf, tu, images, labels, blob.numpy())
    assert 0 <= result["fidelity"] <= 1 and result["lesions"]["images"] == 24
    assert result["lesions"]["ratio"] > 0


def test_pruning_after_training() -> None:
    clf, x = colour_toy(), blobs(60, 5)
    tu = train(clf, x, None, epochs=2, seed=0, prune_threshold=0.1, **SMALL)
    keep = tu.unit.keep.bool()
    assert tu.meta["pruned"] == int((~keep).sum()) > 0  # some concepts never pass 0.1
    ex = mindlens.explain(clf, x[:4], method="mace", unit=tu, target=[[0, 1, 2]] * 4)
    con = ex.extras["concepts"]
    assert torch.equal(con["pruned"], ~keep[ex.targets[..., None], con["index"]])
    assert (con["relevance"][con["pruned"]] == 0).all()
    n_kept = keep.sum(1)[ex.targets]  # pruned concepts are ranked last
    for b, t in itertools.product(range(4), range(3)):
        assert not con["pruned"][b, t, : int(n_kept[b, t])].any()


def test_model_untouched_when_explain_fails_half_way(cifar_unit, resnet20) -> None:
    path, _ = cifar_unit
    before = fingerprint(resnet20.module)
    with pytest.raises(mindlens.InputError, match="out of range"):
        mindlens.explain(resnet20, torch.zeros(1, 3, 32, 32), method="mace", unit=str(path),
                         target=12)
    assert_untouched(before, resnet20.module)
