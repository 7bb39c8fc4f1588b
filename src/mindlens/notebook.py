"""Notebook ergonomics: short reprs, HTML reprs (Jupyter's ``_repr_html_``) and
``show()`` with matplotlib for :class:`~mindlens.explanation.Explanation`,
:class:`~mindlens.model.Classifier` and :class:`~mindlens.cases.Case`.

An explanation keeps the pixels it explained (``extras["pixels"]``, ``uint8 [B, H, W,
3]``, 2-D images only), so that it can be shown without the input at hand.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

MAX_SHOWN = 4  # images and targets shown by a repr or show()


def _labels(expl: Any) -> list[list[str]]:
    prov = expl.params.get("provenance") or {}
    if "labels" in prov:
        return prov["labels"]
    return [[f"class {int(c)}" for c in row] for row in expl.targets.tolist()]


def explanation_repr(expl: Any) -> str:
    """One line: method, shape, targets with labels, signedness, native size, cost."""
    labels = _labels(expl)
    first = ", ".join(labels[0][:MAX_SHOWN]) + (", ..." if len(labels[0]) > MAX_SHOWN else "")
    more = f" (+{len(labels) - 1} more image(s))" if len(labels) > 1 else ""
    native = "x".join(map(str, expl.native_shape)) or "?"
    return (f"Explanation(method={expl.method!r}, maps={list(expl.maps.shape)}, "
            f"targets=[{first}]{more}, signed={expl.signed}, native={native}, "
            f"cost={expl.cost.forward} fwd/{expl.cost.backward} bwd/"
            f"{expl.cost.seconds * 1000:.0f} ms)")


def _tiles(expl: Any) -> list[tuple[str, np.ndarray]]:
    """(caption, picture) per image and target: the image, then each map over it."""
    from .render.colors import to_display_shared
    from .render.evidence import as_rgb, desaturate
    from .render.overlay import overlay

    pixels = expl.extras.get("pixels")
    labels = _labels(expl)
    out = []
    for b in range(min(expl.batch_size, MAX_SHOWN)):
        if expl.maps.dim() != 4:
            break
        image = None if pixels is None else as_rgb(np.asarray(pixels[b]))
        if image is not None:
            out.append((f"image {b}", image))
        disps = to_display_shared(list(expl.maps[b][:MAX_SHOWN]), expl.signed)
        for t, disp in enumerate(disps):
            p = float(expl.probs[b, t])
            cap = labels[b][t] + ("" if np.isnan(p) else f" ({p:.0%})")
            ground = desaturate(image) if image is not None else np.full(
                (*disp.values.shape, 3), 128, np.uint8)
            out.append((cap, overlay(ground, disp)))
    return out


def explanation_html(expl: Any) -> str:
    """The image with its maps and their labels, as an HTML snippet."""
    from .render.overlay import png_data_uri

    cells = "".join(
        f'<figure style="margin:0 6px 6px 0;display:inline-block;text-align:center">'
        f'<img src="{png_data_uri(pic, 160)}" style="width:160px;height:160px;'
        f'object-fit:contain"><figcaption style="font-size:12px">{html.escape(cap)}'
        f"</figcaption></figure>" for cap, pic in _tiles(expl))
    return f"<div><code>{html.escape(explanation_repr(expl))}</code><br>{cells}</div>"


def show(obj: Any, ax: Any = None) -> Any:
    """Show an :class:`Explanation` (the image and each map with its label) or a
    :class:`~mindlens.cases.Case` (the trusted picture, titled with the decision) with
    matplotlib; returns the figure."""
    import matplotlib.pyplot as plt

    if hasattr(obj, "decision") and hasattr(obj, "explanations"):  # a Case
        from .cases import trusted_picture

        pic = trusted_picture(obj)
        fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5, 5))
        ax.imshow(obj.pixels if pic is None else pic.pixels)
        ax.set_title(obj.decision.sentence, fontsize=9, wrap=True)
        if obj.verdict is not None:
            ax.set_xlabel(obj.verdict.sentence, fontsize=8, wrap=True)
        ax.set_xticks([])
        ax.set_yticks([])
        return fig
    tiles = _tiles(obj)
    if not tiles:
        raise ValueError("show() draws 2-D maps; for volumes use mindlens.render.montage")
    fig, axes = plt.subplots(1, len(tiles), figsize=(2.6 * len(tiles), 2.9), squeeze=False)
    for a, (cap, pic) in zip(axes[0], tiles, strict=True):
        a.imshow(pic)
        a.set_title(cap, fontsize=9)
        a.axis("off")
    fig.suptitle(f"{obj.method}", fontsize=10)
    fig.tight_layout()
    return fig


def classifier_repr(clf: Any) -> str:
    """One line: name, input, classes, module type, parameter count, card hash."""
    n_params = sum(p.numel() for p in clf.module.parameters())
    classes = f"{len(clf.labels)} classes" if clf.labels else "unnamed classes"
    size = "x".join(map(str, clf.input_size))
    extra = "" if clf.resize == "stretch" else f", resize={clf.resize}"
    card = f", card {clf.card_sha256[:12]}" if clf.card_sha256 else ""
    kind = "black box" if clf.black_box else type(clf.module).__name__
    return (f"Classifier({clf.name!r}, input {size}x{clf.channels}, {classes}, {kind}, "
            f"{n_params / 1e6:.2f}M parameters{extra}{card})")


def classifier_html(clf: Any) -> str:
    """A small table: name, input, normalisation, classes (first few), module, card."""
    labels = list(clf.labels or [])
    shown = ", ".join(labels[:8]) + (f", ... ({len(labels)} in all)" if len(labels) > 8
                                      else "")
    rows = [("name", clf.name), ("input", "x".join(map(str, clf.input_size))
                                 + f", {clf.channels} channel(s), resize: {clf.resize}"),
            ("mean / std", f"{list(clf.mean)} / {list(clf.std)}"),
            ("classes", shown or "unnamed"),
            ("module", "black box" if clf.black_box else type(clf.module).__name__),
            ("model card SHA-256", clf.card_sha256 or "n/a")]
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                   f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    return f"<table>{body}</table>"
