"""RISE (spec methods-more.md §18): all-ones masks, constant and linear models (exact
finite-sample identities), mask statistics, localisation, invariances, the authors' mask
recipe against scikit-image, and a naive loop over stored masks on a real model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mindlens
from mindlens.methods.rise import interpolation_matrix, make_masks

F64 = torch.float64


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


class LinearScore(nn.Module):
    """Logits ``[w . z + b, 0]``: the score of class 0 is linear in the masked input."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.w = nn.Parameter(randn(*shape, seed=1))
        self.b = nn.Parameter(torch.tensor(0.7, dtype=F64))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        s = (z * self.w).flatten(1).sum(1) + self.b
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def test_all_ones_masks_give_the_score_everywhere() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 5))
    clf = mindlens.Classifier(net.double().eval(), (12, 12))
    x = randn(2, 3, 12, 12, seed=2)
    e = mindlens.explain(clf, x, "rise", top_k=2, n_masks=7, s=3, p1=1.0)
    expected = clf.module(x).softmax(1).gather(1, e.targets).detach()
    torch.testing.assert_close(e.maps, expected[..., None, None].expand_as(e.maps),
                               rtol=1e-12, atol=1e-14)
    assert e.cost.forward == 8 and e.native_shape == (3, 3)


def test_linear_model_exact_identity_and_constant_model() -> None:
    h, w = 10, 12
    lin = LinearScore((3, h, w))
    clf = mindlens.Classifier(lin, (h, w))
    x = randn(2, 3, h, w, seed=3)
    n, p1 = 50, 0.4
    e = mindlens.explain(clf, x, "rise", target=0, n_masks=n, s=4, p1=p1, score="logit",
                         batch_size=7, seed=5)
    m = make_masks(n, 4, p1, (h, w), 5).masks(0, n).flatten(1)  # [N, HW]
    r = (lin.w.detach() * x).sum(1).flatten(1)  # [B, HW]
    expected = torch.einsum("np,bn->bp", m, r @ m.T + 0.7) / (n * p1)
    torch.testing.assert_close(e.maps[:, 0].flatten(1), expected, rtol=1e-12, atol=1e-13)

    class Const(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.tensor([[1.5, -2.0]], dtype=z.dtype).expand(z.shape[0], 2)

    const = mindlens.Classifier(Const(), (h, w))  # no parameters: runs in float32
    c = mindlens.explain(const, x[:1], "rise", target=0, n_masks=n, s=4, p1=p1,
                         score="logit", seed=5)
    torch.testing.assert_close(c.maps[0, 0].flatten().double(), 1.5 * m.mean(0) / p1,
                               rtol=1e-6, atol=1e-7)


def test_mask_statistics_and_shifts() -> None:
    n, s, p1, size = 3000, 5, 0.3, (17, 23)
    ms = make_masks(n, s, p1, size, 0)
    m = ms.masks(0, n)
    assert float(m.min()) >= 0 and float(m.max()) <= 1 + 1e-12
    se = math.sqrt(p1 * (1 - p1) / n)
    assert float((m.mean(0) - p1).abs().max()) < 4 * se
    assert int(ms.shifts[:, 0].max()) < math.ceil(17 / s)
    assert int(ms.shifts[:, 1].max()) < math.ceil(23 / s)
    assert int(ms.shifts.min()) >= 0
    again = make_masks(n, s, p1, size, 0)
    assert torch.equal(again.grids, ms.grids) and torch.equal(again.shifts, ms.shifts)
    assert torch.equal(again.masks(100, 150), m[100:150])
    assert not torch.equal(make_masks(n, s, p1, size, 1).masks(0, 50), m[:50])


def test_clamp_border_equals_torch_interpolate_and_mirror_equals_scikit_image() -> None:
    g = (torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=F64) < 0.5
         ).double()
    u = interpolation_matrix(4, 15, "clamp", F64)
    ref = F.interpolate(g, size=(15, 15), mode="bilinear", align_corners=False)
    torch.testing.assert_close(u @ g @ u.T, ref, rtol=0, atol=1e-14)
    from skimage.transform import resize
    um = interpolation_matrix(4, 15, "mirror", F64)
    for i in range(3):
        sk = resize(g[i, 0].numpy(), (15, 15), order=1, mode="reflect", anti_aliasing=False)
        np.testing.assert_allclose((um @ g[i, 0] @ um.T).numpy(), sk, rtol=0, atol=1e-12)


def test_authors_recipe_reproduces_their_masks() -> None:
    """eclique/RISE explanations.py generate_masks, under np.random.RandomState(seed)."""
    from skimage.transform import resize
    n, s, p1, size = 6, 4, 0.5, (14, 14)
    ours = make_masks(n, s, p1, size, 3, recipe="authors").masks(0, n)
    rs = np.random.RandomState(3)
    cell = np.ceil(np.array(size) / s)
    up = (s + 1) * cell
    grid = (rs.rand(n, s, s) < p1).astype("float32")
    for i in range(n):
        dx, dy = rs.randint(0, cell[0]), rs.randint(0, cell[1])
        ref = resize(grid[i], up, order=1, mode="reflect", anti_aliasing=False)
        ref = ref[dx:dx + size[0], dy:dy + size[1]]
        np.testing.assert_allclose(ours[i].numpy(), ref, rtol=0, atol=1e-7)


def test_localisation_of_a_one_pixel_probe() -> None:
    class Probe(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            v = z[:, 1, 9, 5]
            return torch.stack([v, -v], dim=1)

    clf = mindlens.Classifier(Probe(), (16, 16))
    x = torch.zeros(1, 3, 16, 16, dtype=F64)
    x[0, 1, 9, 5] = 1.0
    e = mindlens.explain(clf, x, "rise", target=0, n_masks=2000, s=4, p1=0.5, score="logit")
    i, j = divmod(int(e.maps[0, 0].argmax()), 16)
    assert abs(i - 9) <= 4 and abs(j - 5) <= 4


def test_independent_of_batch_size_and_image_order() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 5 * 5, 6)).double().eval()
    clf = mindlens.Classifier(net, (12, 12))
    x = randn(3, 3, 12, 12, seed=4)
    runs = [mindlens.explain(clf, x, "rise", target=[1, 2, 3], n_masks=40, s=3, batch_size=bs)
            for bs in (1, 7, 300)]
    for r in runs[1:]:
        torch.testing.assert_close(r.maps, runs[0].maps, rtol=1e-12, atol=1e-15)
    rev = mindlens.explain(clf, x.flip(0), "rise", target=[3, 2, 1], n_masks=40, s=3)
    torch.testing.assert_close(rev.maps.flip(0), runs[0].maps, rtol=1e-12, atol=1e-15)


def test_bad_parameters_say_the_fix() -> None:
    for kw, match in (({"p1": 0}, "p1"), ({"s": 0}, "s must be"), ({"score": "x"}, "score"),
                      ({"border": "wrap"}, "border"), ({"n_masks": 2.5}, "n_masks")):
        with pytest.raises(mindlens.InputError, match=match):
            mindlens.methods.get("rise")(**kw)


def test_equals_naive_loop_over_stored_masks(resnet20) -> None:
    """The spec's formula with every mask stored and one forward per mask, on a real model
    (cifar10_resnet20, float32), blur fill: same map within 1e-5 of its max."""
    x = randn(2, 3, 32, 32, seed=6).float()
    n, s, p1 = 12, 4, 0.5
    e = mindlens.explain(resnet20, x, "rise", target=[2, 7], n_masks=n, s=s, p1=p1,
                         fill="blur", batch_size=10)
    from mindlens.methods.perturbation import gaussian_blur
    fill = gaussian_blur(x, [5.0, 5.0])
    masks = make_masks(n, s, p1, (32, 32), 0).masks(0, n)
    sal = torch.zeros(2, 32, 32, dtype=F64)
    with torch.no_grad():
        for i in range(2):
            for k in range(n):
                m = masks[k].float()
                prob = resnet20.module((x[i] * m + fill[i] * (1 - m))[None]).softmax(1)
                sal[i] += float(prob[0, [2, 7][i]]) * masks[k]
    sal /= n * p1
    torch.testing.assert_close(e.maps[:, 0].double(), sal, rtol=0,
                               atol=1e-5 * float(sal.abs().max()))


def test_model_that_rejects_channels_last_runs_contiguous() -> None:
    class ViewNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 3)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(z).view(z.shape[0], -1))

    torch.manual_seed(0)
    clf = mindlens.Classifier(ViewNet().eval(), (8, 8))
    x = torch.randn(2, 3, 8, 8)
    e = mindlens.explain(clf, x, "rise", target=1, n_masks=30, s=2, batch_size=8)
    ref = mindlens.explain(clf, x[:1], "rise", target=1, n_masks=30, s=2, batch_size=1)
    torch.testing.assert_close(e.maps[:1], ref.maps, rtol=1e-5, atol=1e-6)


def test_progress_counts_every_masked_pass_and_the_estimate_knows_them() -> None:
    """RISE says its passes before it starts (so a first run has a time estimate) and
    ticks them off as it runs."""
    from mindlens import progress

    N = progress.MIN_PASSES  # a call small enough for no estimate would not be timed
    torch.manual_seed(0)
    clf = mindlens.Classifier(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                                                  torch.nn.LazyLinear(3)), (12, 12), 3)
    x = torch.rand(2, 3, 12, 12)
    clf(x)
    seen: list[tuple[str, int, int]] = []
    estimates: list = []
    with progress.reporting(lambda name, done, total: seen.append((name, done, total))), \
            progress.estimating(estimates.append):
        mindlens.explain(clf, x, "rise", n_masks=N, batch_size=64)
    total = 2 * (N + 1)
    assert mindlens.methods.get("rise")(n_masks=N).passes(clf, x) == total
    assert seen[0] == ("rise", 0, total) and seen[-1] == ("rise", total, total)
    dones = [d for _, d, _ in seen]
    assert dones == sorted(dones) and len(set(dones)) > 3
    assert estimates and estimates[0].passes == total
