"""Synthetic retinal fundus photographs for diabetic-retinopathy screening, with exact lesions.

Each image is a colour fundus photograph in miniature: an orange-red retina on a black
background, darker towards the rim (vignetting), a bright optic disc left or right of the
centre (left or right eye) with a pale cup, a darker macula on the other side, dark-red
arteries and veins that leave the optic disc in four arcades and branch twice, choroidal
texture and sensor noise. Distractors that are *not* disease appear in both classes: vessel
crossings, specular glare and a pigment crescent at the disc edge.

Class ``diseased`` (label 1) adds 1-8 red lesions, microaneurysms (tiny round dots) and blot
haemorrhages (larger irregular blots), and in half of the images a cluster of yellow hard
exudates, the lesions a grader looks for in non-proliferative diabetic retinopathy. Class
``healthy`` (label 0) has none. The lesion mask is True exactly where lesion pixels were drawn:
``generate(n, seed, lesions=False)`` draws the same scenes without lesions, and the pixels that
differ are exactly the mask (lesions change the red channel by at least 40 %, or paint an
opaque yellow, so no lesion pixel is lost to rounding).

Everything is vectorised NumPy and deterministic: each part of the scene draws from its own
random stream derived from ``seed``, so the same seed gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 128
LABELS = ("healthy", "diseased")
MAX_RED, MAX_EXUDATES = 8, 10
_CHUNK = 128  # images rendered at once (bounds memory)


def generate(n: int, seed: int = 0, *, size: int = SIZE, lesions: bool = True
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` fundus images, their labels and lesion masks.

    Parameters
    ----------
    n : number of images (half healthy, half diseased, in random order).
    seed : the same seed gives the same bytes.
    size : image height and width in pixels.
    lesions : ``False`` draws the very same scenes without lesions (labels and masks are
        unchanged), to check that the masks cover exactly the drawn lesions.

    Returns
    -------
    images : ``uint8 [n, size, size, 3]``; labels : ``int64 [n]`` (1 = diseased);
    masks : ``bool [n, size, size]``, True on lesion pixels (all False for healthy images).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    scene = sample_scenes(n, seed, size)
    return render(scene, lesions=lesions)


@dataclass
class Scenes:
    """The random parameters of ``n`` scenes; :func:`render` turns them into pixels."""

    seed: int
    size: int
    labels: np.ndarray                  # [N] int64
    streams: dict[str, np.random.SeedSequence]


def sample_scenes(n: int, seed: int, size: int = SIZE) -> Scenes:
    root = np.random.SeedSequence([int(seed), 0x5E71A])
    names = ("labels", "fundus", "vessels", "distractors", "lesions", "noise")
    streams = dict(zip(names, root.spawn(len(names)), strict=True))
    rng = np.random.default_rng(streams["labels"])
    labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
    return Scenes(int(seed), int(size), labels, streams)


def render(scene: Scenes, lesions: bool = True, start: int = 0, stop: int | None = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels, labels and lesion masks of ``scene`` (all images, rendered in chunks)."""
    n = len(scene.labels) if stop is None else stop
    size = scene.size
    images = np.empty((n - start, size, size, 3), np.uint8)
    masks = np.zeros((n - start, size, size), bool)
    rngs = {k: np.random.default_rng(s) for k, s in scene.streams.items()}
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        # every stream is consumed for every chunk, so the bytes do not depend on `lesions`
        img, mask = _render_chunk(rngs, scene.labels[lo:hi], size, lesions)
        if hi > start:
            a, b = max(lo, start) - lo, hi - lo
            images[max(lo, start) - start:hi - start] = img[a:b]
            masks[max(lo, start) - start:hi - start] = mask[a:b]
    return images, scene.labels[start:n].copy(), masks


# -- the parts of a scene -------------------------------------------------------------------

def _render_chunk(rngs: dict[str, np.random.Generator], labels: np.ndarray, size: int,
                  lesions: bool) -> tuple[np.ndarray, np.ndarray]:
    n = len(labels)
    geo = _fundus_geometry(rngs["fundus"], n, size)
    img, inside = _fundus(rngs["fundus"], geo, size)
    _vessels(rngs["vessels"], img, geo, size)
    _distractors(rngs["distractors"], img, geo, size)
    red, yellow = _lesion_alpha(rngs["lesions"], geo, labels, size)
    mask = (red > 0) | (yellow > 0)
    if lesions:
        shade = np.array([0.5, 0.3, 0.35], np.float32)  # dark red: red channel x0.5 at most
        img *= 1.0 - red[..., None] * (1.0 - shade)
        ink = np.array([1.0, 0.9, 0.42], np.float32) * geo["bright"][:, None, None, None]
        img += yellow[..., None] * (ink - img)
    noise = rngs["noise"]
    sigma = noise.uniform(0.012, 0.03, (n, 1, 1, 1)).astype(np.float32)
    grain = noise.standard_normal(img.shape, dtype=np.float32) * sigma
    img += grain * (0.35 + 0.65 * inside[..., None])
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), mask


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = np.arange(size, dtype=np.float32) + 0.5
    return c[None, :, None], c[None, None, :]  # y [1, H, 1], x [1, 1, W]


def _fundus_geometry(rng: np.random.Generator, n: int, size: int) -> dict[str, np.ndarray]:
    u = lambda lo, hi: rng.uniform(lo, hi, n).astype(np.float32)  # noqa: E731
    R = size * u(0.44, 0.49)
    cy, cx = size / 2 + u(-3, 3), size / 2 + u(-3, 3)
    side = np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(np.float32)  # optic disc side
    od_x, od_y = cx + side * R * u(0.32, 0.46), cy + R * u(-0.12, 0.12)
    od_r = R * u(0.12, 0.16)
    mac_x, mac_y = cx - side * R * u(0.05, 0.2), cy + R * u(-0.06, 0.1)
    return dict(R=R, cy=cy, cx=cx, side=side, od_x=od_x, od_y=od_y, od_r=od_r,
                mac_x=mac_x, mac_y=mac_y, bright=u(0.78, 1.0))


def _smooth_noise(rng: np.random.Generator, n: int, cells: int, size: int) -> np.ndarray:
    """Band-limited noise ``[n, size, size]``: a ``cells x cells`` grid, bilinearly upsampled."""
    g = rng.standard_normal((n, cells, cells)).astype(np.float32)
    pos = (np.arange(size, dtype=np.float32) + 0.5) / size * (cells - 1)
    lo = np.minimum(pos.astype(int), cells - 2)
    t = pos - lo
    M = np.zeros((size, cells), np.float32)
    M[np.arange(size), lo] = 1 - t
    M[np.arange(size), lo + 1] = t
    return np.einsum("hc,ncd,wd->nhw", M, g, M, optimize=True)


def _fundus(rng: np.random.Generator, geo: dict[str, np.ndarray], size: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Retina colour with vignetting, choroidal texture, macula and optic disc."""
    n = len(geo["R"])
    y, x = _grid(size)
    e = lambda k: geo[k][:, None, None]  # noqa: E731
    r = np.hypot(y - e("cy"), x - e("cx")) / e("R")
    inside = np.clip((1.0 - r) * e("R") / 1.5, 0.0, 1.0)  # anti-aliased rim
    f32 = lambda lo, hi, shape: rng.uniform(lo, hi, shape).astype(np.float32)  # noqa: E731
    red = f32(0.78, 0.98, n)
    base = np.stack([red, red * f32(0.28, 0.46, n), red * f32(0.07, 0.17, n)],
                    1).astype(np.float32) * geo["bright"][:, None]
    fall, power = f32(0.35, 0.6, n), f32(1.6, 2.6, n)
    vignette = 1.0 - fall[:, None, None] * r ** power[:, None, None]
    texture = 1.0 + f32(0.03, 0.08, (n, 1, 1)) * _smooth_noise(rng, n, 12, size)
    texture += f32(0.01, 0.03, (n, 1, 1)) * _smooth_noise(rng, n, 40, size)
    shade = (vignette * texture * inside).astype(np.float32)
    img = base[:, None, None, :] * shade[..., None]
    # macula: a darker, browner patch; fovea: a faint bright pit reflex
    dm = np.hypot(y - e("mac_y"), x - e("mac_x")) / e("R")
    depth = f32(0.2, 0.4, (n, 1, 1))
    img *= (1.0 - depth * np.exp(-(dm / 0.22) ** 2))[..., None] * np.float32([1.0, 0.85, 0.9])
    img += (0.06 * np.exp(-(dm / 0.025) ** 2))[..., None] * inside[..., None]
    # optic disc: pale yellow-pink rim with a whiter cup; soft halo
    do = np.hypot(y - e("od_y"), x - e("od_x"))
    disc = _sigmoid((e("od_r") - do) / 1.2)
    halo = 0.35 * np.exp(-((do / (e("od_r") * 1.8)) ** 2))
    pale = np.float32([1.0, 0.82, 0.55]) * geo["bright"][:, None, None, None]
    img += (np.maximum(disc * 0.9, halo))[..., None] * (pale - img)
    cup_r = e("od_r") * f32(0.35, 0.6, (n, 1, 1))
    cup_x = e("od_x") - e("side") * e("od_r") * f32(0.0, 0.3, (n, 1, 1))
    dc = np.hypot(y - e("od_y"), x - cup_x)
    cup = 0.8 * _sigmoid((cup_r - dc) / 1.5)
    img += cup[..., None] * (np.float32([1.0, 0.96, 0.85]) - img)
    return img.astype(np.float32), inside.astype(np.float32)


def _walk(rng: np.random.Generator, start: np.ndarray, theta0: np.ndarray, bend: np.ndarray,
          steps: int, wiggle: float) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random curves: ``start [N, K, 2]`` (y, x), angles ``[N, K]`` -> points and
    angles ``[N, K, steps]``; the angle drifts by ``bend`` radians over the curve."""
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)
    noise = rng.standard_normal((*theta0.shape, steps)).astype(np.float32) * wiggle
    walk = np.cumsum(noise, -1)
    c = np.cumsum(np.pad(walk, [(0, 0)] * (walk.ndim - 1) + [(4, 3)], mode="edge"), -1)
    walk = (c[..., 7:] - c[..., :-7]) / 7.0  # moving average over 7 steps
    theta = theta0[..., None] + bend[..., None] * (3 * t**2 - 2 * t**3) + walk
    dy, dx = -np.sin(theta), np.cos(theta)  # angle 0 = +x, positive = up
    ys = start[..., 0:1] + np.cumsum(dy, -1) - dy[..., :1]
    xs = start[..., 1:2] + np.cumsum(dx, -1) - dx[..., :1]
    return np.stack([ys, xs], -1), theta


def _stamp(alpha: np.ndarray, pts: np.ndarray, width: np.ndarray, kind: np.ndarray,
           radius: int) -> None:
    """Draw discs of half-width ``width [N, ...]`` at ``pts [N, ..., 2]`` into
    ``alpha [kinds, N, H, W]`` at ``kind [N, ...]`` (maximum of anti-aliased coverage)."""
    _, n, h, w = alpha.shape
    img = np.broadcast_to(np.arange(n).reshape((n,) + (1,) * (width.ndim - 1)), width.shape)
    py, px = pts[..., 0], pts[..., 1]
    live = (width > 0) & (py > -radius) & (py < h + radius) & (px > -radius) & (px < w + radius)
    py, px, wd, img, kind = py[live], px[live], width[live], img[live], kind[live]
    off = np.arange(-radius, radius + 1, dtype=np.float32)
    oy, ox = (g.ravel() for g in np.meshgrid(off, off, indexing="ij"))
    qy = np.floor(py)[:, None] + oy
    qx = np.floor(px)[:, None] + ox
    d = np.hypot(qy + 0.5 - py[:, None], qx + 0.5 - px[:, None])
    a = np.clip(wd[:, None] - d + 0.5, 0.0, 1.0)
    ok = (a > 0) & (qy >= 0) & (qy < h) & (qx >= 0) & (qx < w)
    base = (kind * n + img)[:, None] * h
    flat = ((np.broadcast_to(base, ok.shape)[ok] + qy[ok].astype(np.int64)) * w
            + qx[ok].astype(np.int64))
    np.maximum.at(alpha.reshape(-1), flat, a[ok])


def _mirror(theta_rel: np.ndarray, tx: np.ndarray) -> np.ndarray:
    """Angle measured from the temporal direction -> image angle (0 = +x, up positive)."""
    return np.pi / 2 - tx * (np.pi / 2 - theta_rel)


def _vessels(rng: np.random.Generator, img: np.ndarray, geo: dict[str, np.ndarray],
             size: int) -> None:
    """Veins and arteries in four arcades from the optic disc, each branching twice."""
    n = len(geo["R"])
    scale = size / SIZE
    tx = -geo["side"][:, None]  # temporal x direction
    deg = np.float32(np.pi / 180)
    up = np.float32([1, -1, 1, -1, 1, -1, 1, -1])[None]  # superior / inferior
    temporal = np.float32([1, 1, 0, 0, 1, 1, 0, 0])[None]  # 4 veins then 4 arteries
    vein = np.float32([1, 1, 1, 1, 0, 0, 0, 0])[None]
    u = lambda lo, hi, shape=(n, 8): rng.uniform(lo, hi, shape).astype(np.float32)  # noqa: E731
    base_angle = np.where(temporal > 0, u(68, 92), u(100, 135)) * deg
    base_angle[:, 4:] = base_angle[:, :4] + u(-14, 14, (n, 4)) * deg  # arteries follow veins
    bend = np.where(temporal > 0, -u(45, 72), u(0, 30)) * deg
    theta0 = _mirror(up * base_angle, tx)
    start = np.stack([geo["od_y"][:, None] + u(-2, 2), geo["od_x"][:, None] + u(-2, 2)], -1)
    steps = int(95 * scale)
    pts, theta = _walk(rng, start, theta0, tx * up * bend, steps, 0.035)
    t = np.linspace(0, 1, steps, dtype=np.float32)
    w0 = np.where(vein > 0, u(1.5, 2.0), u(1.05, 1.4)) * np.where(temporal > 0, 1.0, 0.8)
    width = (w0 * scale)[..., None] * (1.0 - 0.5 * t)
    width *= t <= u(0.6, 1.0)[..., None]  # nasal and some temporal vessels end earlier
    curves = [(pts, width, vein, 3)]
    # branches: 3 per main vessel; twigs: 1 per branch
    for kids, (lo, hi), length, ang, shrink in ((3, (0.1, 0.7), 0.5, (25, 65), 0.7),
                                               (1, (0.15, 0.6), 0.3, (30, 70), 0.65)):
        pts_p, theta_p, width_p, vein_p = curves[-1][0], theta, curves[-1][1], curves[-1][2]
        k = pts_p.shape[1]
        steps_p = pts_p.shape[2]
        idx = (u(lo, hi, (n, k, kids)) * steps_p).astype(int)
        nb = k * kids
        at = idx.reshape(n, nb)
        parent = np.repeat(np.arange(k), kids)[None, :, None].repeat(n, 0)
        pick = lambda a, parent=parent: np.take_along_axis(a, parent, 1)  # noqa: E731
        ps = np.take_along_axis(pick(pts_p.reshape(n, k, -1)).reshape(n, nb, steps_p, 2),
                                at[..., None, None].repeat(2, -1), 2)[:, :, 0]
        th = np.take_along_axis(pick(theta_p), at[..., None], 2)[..., 0]
        wp = np.take_along_axis(pick(width_p), at[..., None], 2)[..., 0]
        sign = np.where(rng.random((n, nb)) < 0.5, -1.0, 1.0).astype(np.float32)
        th0 = th + sign * u(*ang, (n, nb)) * deg
        bsteps = int(steps * length)
        bpts, theta = _walk(rng, ps, th0, u(-25, 25, (n, nb)) * deg, bsteps, 0.04)
        tb = np.linspace(0, 1, bsteps, dtype=np.float32)
        bw = np.maximum(wp * shrink, 0.55 * scale)[..., None] * (1.0 - 0.4 * tb)
        bw *= tb <= u(0.35, 1.0, (n, nb))[..., None]
        bw *= (wp > 0)[..., None]  # no branch from a vessel that already ended
        curves.append((bpts, bw, np.repeat(vein_p, kids, 1), 2))
    inside = np.clip((geo["R"][:, None, None] - np.hypot(
        _grid(size)[0] - geo["cy"][:, None, None], _grid(size)[1] - geo["cx"][:, None, None]))
        / 1.5, 0, 1)
    alpha = np.zeros((2, n, size, size), np.float32)  # veins, arteries
    for pts_c, w_c, v_c, radius in curves:
        kind = np.broadcast_to((v_c == 0).astype(np.int64)[..., None], w_c.shape)
        _stamp(alpha, pts_c, w_c, kind, radius)
    alpha *= inside
    for k, colour in enumerate(((0.5, 0.3, 0.45), (0.72, 0.5, 0.6))):
        img *= 1.0 - alpha[k][..., None] * (1.0 - np.float32(colour))


def _distractors(rng: np.random.Generator, img: np.ndarray, geo: dict[str, np.ndarray],
                 size: int) -> None:
    """Not disease, in both classes: specular glare and a pigment crescent at the disc."""
    n = len(geo["R"])
    y, x = _grid(size)
    k = 3
    r = geo["R"][:, None] * 0.8 * np.sqrt(rng.random((n, k)))
    phi = rng.uniform(0, 2 * np.pi, (n, k))
    gy, gx = geo["cy"][:, None] + r * np.sin(phi), geo["cx"][:, None] + r * np.cos(phi)
    amp = rng.uniform(0.12, 0.4, (n, k)) * (rng.random((n, k)) < 0.45)
    sa, sb = rng.uniform(2, 9, (n, k)) * size / SIZE, rng.uniform(1, 3, (n, k)) * size / SIZE
    rot = rng.uniform(0, np.pi, (n, k))
    glare = np.zeros((n, size, size), np.float32)
    for j in range(k):
        i = np.flatnonzero(amp[:, j] > 0)
        f = lambda a, i=i, j=j: a[i, j].astype(np.float32)[:, None, None]  # noqa: E731
        dy, dx = y - f(gy), x - f(gx)
        c, s = np.cos(f(rot)), np.sin(f(rot))
        q = ((c * dx + s * dy) / f(sa)) ** 2 + ((c * dy - s * dx) / f(sb)) ** 2
        glare[i] = np.maximum(glare[i], f(amp) * np.exp(-q))
    img += glare[..., None] * (np.float32([1.0, 0.96, 0.92]) - img)
    # peripapillary pigment crescent on the temporal side of the disc
    strength = ((rng.random(n) < 0.4) * rng.uniform(0.3, 0.6, n)).astype(np.float32)
    i = np.flatnonzero(strength > 0)
    g = {k: geo[k][i][:, None, None] for k in ("od_x", "od_y", "od_r", "side")}
    do = np.hypot(y - g["od_y"], x - g["od_x"])
    ring = np.exp(-(((do - g["od_r"] * 1.15) / 1.3) ** 2))
    facing = np.clip(-g["side"] * (x - g["od_x"]) / np.maximum(do, 1e-3), 0, 1)
    crescent = strength[i][:, None, None] * ring * facing**2
    img[i] *= 1.0 - crescent[..., None] * np.float32([0.45, 0.5, 0.5])


def _lesion_alpha(rng: np.random.Generator, geo: dict[str, np.ndarray], labels: np.ndarray,
                  size: int) -> tuple[np.ndarray, np.ndarray]:
    """Coverage maps ``[N, H, W]`` of red lesions and of yellow exudates (0 or >= 0.8)."""
    n = len(labels)
    scale = size / SIZE
    ill = labels[:, None] == 1
    # red lesions: microaneurysms (round, r 1.2-2) or blot haemorrhages (irregular, r 2.2-4.5)
    count = rng.integers(1, MAX_RED + 1, n)
    blot = rng.random((n, MAX_RED)) < 0.5
    rad = np.where(blot, rng.uniform(2.2, 4.5, (n, MAX_RED)), rng.uniform(1.2, 2.0, (n, MAX_RED)))
    wob = rng.uniform(0, 0.22, (n, MAX_RED, 3)) * blot[..., None]
    wphase = rng.uniform(0, 2 * np.pi, (n, MAX_RED, 3))
    cy, cx, ok = _places(rng, geo, n, MAX_RED, rad * scale + 2)
    red_on = ill & (np.arange(MAX_RED)[None] < count[:, None]) & ok
    # exudates: a cluster of 3-10 small yellow spots in half of the diseased images
    ey, ex, eok = _places(rng, geo, n, 1, 10 * scale)
    spread = rng.uniform(3, 8, (n, 1)) * scale
    sy = ey + rng.standard_normal((n, MAX_EXUDATES)) * spread
    sx = ex + rng.standard_normal((n, MAX_EXUDATES)) * spread
    erad = rng.uniform(0.9, 2.0, (n, MAX_EXUDATES))
    ecount = rng.integers(3, MAX_EXUDATES + 1, n)
    has_ex = ill[:, 0] & (rng.random(n) < 0.5) & eok[:, 0]
    ex_on = has_ex[:, None] & (np.arange(MAX_EXUDATES)[None] < ecount[:, None])
    ex_on &= _allowed(geo, sy, sx, erad * scale + 1)
    red = _blobs((n, size, size), cy, cx, rad * scale, wob, wphase, red_on, core=True)
    yellow = _blobs((n, size, size), sy, sx, erad * scale, None, None, ex_on, core=False)
    return red, yellow


def _allowed(geo: dict[str, np.ndarray], y: np.ndarray, x: np.ndarray, margin: np.ndarray
             ) -> np.ndarray:
    """Inside the retina (away from the rim) and off the optic disc."""
    r = np.hypot(y - geo["cy"][:, None], x - geo["cx"][:, None])
    d = np.hypot(y - geo["od_y"][:, None], x - geo["od_x"][:, None])
    return (r + margin < geo["R"][:, None] * 0.9) & (d > geo["od_r"][:, None] * 1.4 + margin)


def _places(rng: np.random.Generator, geo: dict[str, np.ndarray], n: int, k: int,
            margin: np.ndarray | float, tries: int = 12
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniform positions on the retina away from rim and disc: first valid of ``tries``."""
    r = geo["R"][:, None, None] * 0.9 * np.sqrt(rng.random((n, k, tries)))
    phi = rng.uniform(0, 2 * np.pi, (n, k, tries))
    y = geo["cy"][:, None, None] + r * np.sin(phi)
    x = geo["cx"][:, None, None] + r * np.cos(phi)
    m = np.broadcast_to(np.asarray(margin, np.float64)[..., None] if np.ndim(margin) else
                        margin, (n, k, tries))
    ok = _allowed(geo, y.reshape(n, -1), x.reshape(n, -1), m.reshape(n, -1)).reshape(n, k, tries)
    first = ok.argmax(-1)[..., None]
    pick = lambda a: np.take_along_axis(a, first, -1)[..., 0]  # noqa: E731
    return pick(y), pick(x), ok.any(-1)


def _blobs(shape: tuple[int, int, int], cy: np.ndarray, cx: np.ndarray, rad: np.ndarray,
           wob: np.ndarray | None, phase: np.ndarray | None, on: np.ndarray, core: bool
           ) -> np.ndarray:
    """Coverage of (wobbly) discs, 0 outside and >= 0.8 inside; ``[N, K]`` blob parameters."""
    n, h, w = shape
    out = np.zeros(shape, np.float32)
    half = 8
    off = np.arange(-half, half + 1)
    py = np.floor(cy)[..., None, None] + off[:, None]
    px = np.floor(cx)[..., None, None] + off[None, :]
    dy, dx = py + 0.5 - cy[..., None, None], px + 0.5 - cx[..., None, None]
    d = np.hypot(dy, dx)
    edge = np.broadcast_to(rad[..., None, None], d.shape).copy()
    if wob is not None and phase is not None:
        ang = np.arctan2(dy, dx)
        for j, m in enumerate((2, 3, 5)):
            edge *= 1.0 + wob[..., j, None, None] * np.sin(m * ang + phase[..., j, None, None])
    edge = np.minimum(edge, half - 0.5)
    a = (0.8 + 0.2 * np.clip(1.0 - d / edge, 0, 1)) if core else np.full(d.shape, 0.9)
    hit = (d < edge) & on[..., None, None] & (py >= 0) & (py < h) & (px >= 0) & (px < w)
    img = np.broadcast_to(np.arange(n)[:, None, None, None], hit.shape)
    py, px = np.broadcast_arrays(py.astype(np.int64), px.astype(np.int64))
    flat = (img[hit] * h + py[hit]) * w + px[hit]
    np.maximum.at(out.reshape(-1), flat, a[hit].astype(np.float32))
    return out
