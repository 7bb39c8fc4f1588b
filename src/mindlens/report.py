"""A self-contained HTML report (one file, images embedded) that a non-expert can read.

It opens with a summary table (image, decision, verdict, link). Each case
(:class:`mindlens.cases.Case`, added with :meth:`Report.add_case`) then opens with its
verdict: the decision in words with its probability, banners for a wrong decision and for
evidence away from the marks or on a known marker, one picture (the trusted method's most
relevant part outlined in a colour the photo lacks, the expert's marks outlined beside it)
and one sentence with the measured numbers. Everything else sits in a collapsed section
"for engineers": the picture (with the expert's marks, if given), the model's top
classes with their probabilities, one heat map per method and explained class (over a gray
copy of the image, one colour scale per method across classes), the method glossary with
a line saying what each method needs from the model, costs and provenance. Concept
explanations (MACE) get a concept panel under their map: the top concepts with their share
of the evidence, where each is found in the image and the training patches it looks like,
and the concept summary's fidelity in plain words. A volume (``x`` of shape ``[B, C, D, H,
W]``) is shown as slice montages (:mod:`mindlens.render.montage`) instead of single
pictures.
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image

from . import __version__, methods
from .explanation import Explanation
from .model import OUTPUTS, Classifier
from .render.colors import DisplayMap, css_gradient, gray_saliency, to_display_shared
from .render.evidence import PALETTE, desaturate
from .render.montage import montage
from .render.overlay import mask_outline, overlay, png_data_uri


@dataclass
class Panel:
    method: str
    title: str
    image: str
    degenerate: bool
    cost: str
    notes: list[str] = field(default_factory=list)
    wide: bool = False
    #: a warning in words under the picture (e.g. the map does not depend on the image)
    warning: str = ""


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]


@dataclass
class Concept:
    """One concept of a class as the report shows it."""

    rank: int
    share: float  # signed share of the concepts' evidence, in [-1, 1]
    contribution: float  # rho_{c,q}, its term in the class relevance logit
    found: bool  # False when its map is zero everywhere in this image
    region: str  # data URI: the image dimmed outside the concept's region
    prototypes: list[str] = field(default_factory=list)


@dataclass
class ConceptPanel:
    """The concept panel under a concept map: one image, one explained class."""

    method: str
    label: str  # the explained class, without its probability
    summary: str
    concepts: list[Concept]
    fidelity: str | None
    agreement: str | None


@dataclass
class VerdictView:
    """The first screen of a case: decision, banners, the trusted picture, one sentence."""

    decision: str
    wrong: bool
    picture: str | None
    method: str | None
    method_title: str | None
    why: str
    explained: str | None
    sentence: str | None
    status: str
    banners: list[tuple[str, str]]
    evidence_colour: tuple[str, str] | None  # (name, CSS rgb)
    marks_colour: tuple[str, str] | None
    fraction: float
    resize: str | None = None


@dataclass
class Item:
    title: str
    image: str
    mask_image: str | None
    top: list[tuple[str, float]]
    rows: list[tuple[str, list[Panel]]]
    notes: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    concepts: dict[str, list[ConceptPanel]] = field(default_factory=dict)
    wide: bool = False
    id: str = ""
    verdict: VerdictView | None = None
    provenance: list[dict] = field(default_factory=list)
    figures: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class MethodInfo:
    name: str
    title: str
    meaning: str
    needs: str
    reference: str
    signed: bool
    legend: str
    #: LRP: the measured relevance sum / class score of every map in the report
    conservation: list[float] = field(default_factory=list)

    @property
    def conservation_note(self) -> str | None:
        """The measured conservation in words, and why it may be below 1."""
        c = sorted(v for v in self.conservation if np.isfinite(v))
        if not c:
            return None
        mid = c[len(c) // 2]
        span = f"{c[0]:.2f}" if len(c) == 1 else f"{c[0]:.2f} to {c[-1]:.2f} (median {mid:.2f})"
        return (f"Measured in this report: the relevance adds up to {span} of the class "
                f"score. It can be below 1 because the flat and epsilon rules and the layers' "
                f"biases absorb part of the score on the way to the pixels.")


@dataclass
class Report:
    """Collects images and explanations, then writes one HTML file."""

    classifier: Classifier
    title: str = "mindlens report"
    items: list[Item] = field(default_factory=list)
    method_info: dict[str, MethodInfo] = field(default_factory=dict)
    figures: list[tuple[str, str, str]] = field(default_factory=list)
    saliency_style: str = "overlay"

    def add(self, x: torch.Tensor, explanations: dict[str, Explanation],
            titles: Sequence[str] | None = None, masks: np.ndarray | None = None,
            top_k: int = 3, pixels: np.ndarray | None = None,
            notes: Sequence[Sequence[str]] | None = None,
            classifier: Classifier | None = None) -> None:
        """Add a batch: ``x`` in model space, one :class:`Explanation` per method.

        ``classifier`` overrides the report's model for this batch (a demo with two models).
        """
        clf = classifier or self.classifier
        pixels = clf.display_pixels(x) if pixels is None else pixels
        probs = clf.predict(x)  # per the model's output kind (Classifier.probabilities)
        # multi-label: each label is its own yes/no, so show them all (up to 20)
        k = min(max(top_k, 20) if clf.output == "sigmoid" else top_k, probs.shape[1])
        top_p, top_i = probs.topk(k, dim=1)
        for b in range(x.shape[0]):
            image = pixels[b]
            volume = image.ndim == 4
            mask_image = None
            if masks is not None and masks[b] is not None and np.asarray(masks[b]).any():
                mask_image = png_data_uri(
                    montage(image, mask=np.asarray(masks[b], dtype=bool)) if volume
                    else mask_outline(image, _fit(masks[b], image), color=MARKS_GREEN))
            item = Item(
                title=titles[b] if titles else f"image {len(self.items) + 1}",
                image=png_data_uri(montage(image) if volume else image), mask_image=mask_image,
                wide=volume,
                top=_top(clf, top_p[b], top_i[b]),
                rows=[], notes=list(notes[b]) if notes else [],
            )
            by_target: dict[str, list[Panel]] = {}
            outline = None  # the expert's marks, drawn on every 2-D map too
            if mask_image is not None and not volume:
                outline = _fit(masks[b], image)
            for name, expl in explanations.items():
                self._describe(name, expl)
                # one colour scale for the classes of one method: comparable across them
                clip = 99.5 if expl.raw is not None else None
                disps = to_display_shared(list(expl.maps[b]), expl.signed, clip)
                for t in range(expl.targets.shape[1]):
                    label = self._target_label(expl, b, t, clf)
                    panel = self._panel(name, expl, b, t, image, disps[t], outline)
                    by_target.setdefault(label, []).append(panel)
                    cp = concept_panel(name, expl, b, t, image, label)
                    if cp is not None:
                        item.concepts.setdefault(label, []).append(cp)
                item.tables.extend(_tables(name, expl, b))
                cons = expl.extras.get("conservation")
                if isinstance(cons, torch.Tensor) and cons.dim() == 2:
                    self.method_info[name].conservation.extend(cons[b].float().tolist())
            item.rows = list(by_target.items())
            self.items.append(item)

    def add_figure(self, title: str, pixels: np.ndarray, caption: str) -> None:
        """An extra figure (e.g. baseline sensitivity) shown after the images."""
        self.figures.append((title, png_data_uri(pixels, None), caption))

    def _target_label(self, expl: Explanation, b: int, t: int,
                      clf: Classifier | None = None) -> str:
        c = int(expl.targets[b, t])
        if c < 0:
            return "custom score"
        p = float(expl.probs[b, t])
        return f"{(clf or self.classifier).label(c)} ({p:.0%})"

    def _panel(self, name: str, expl: Explanation, b: int, t: int, image: np.ndarray,
               disp: DisplayMap, marks: np.ndarray | None = None) -> Panel:
        """One map: ``disp`` (pixel-level maps clipped at their 99.5th percentile, so one
        spike does not dim the rest) over a desaturated copy of the image, whose own
        colours then cannot be mistaken for the map's."""
        m = expl.maps[b, t]
        if image.ndim == 4:  # a volume: one montage of slices, the map scaled once
            pic = montage(image, disp=disp)
        elif name == "saliency" and self.saliency_style == "gray":
            pic = np.repeat(gray_saliency(m)[..., None], 3, axis=2)
        else:
            pic = overlay(desaturate(image), disp)
        if marks is not None and pic.shape[:2] == marks.shape:
            pic = _ring(pic, marks)
        cost = f"{expl.cost.forward} forward, {expl.cost.backward} backward, " \
               f"{expl.cost.seconds * 1000 / max(1, expl.batch_size):.0f} ms per image"
        cls = methods.get(name)
        warning = ("This map is the same for other images of this class: here the method "
                   "does not look at the image, so the map explains nothing about it."
                   if expl.extras.get("input_independent") else "")
        return Panel(name, cls.title, png_data_uri(pic), disp.degenerate, cost,
                     _notes(name, expl, b, t), wide=image.ndim == 4, warning=warning)

    def add_case(self, case: Any) -> None:
        """Add one :class:`mindlens.cases.Case`: its verdict first, everything else in the
        section for engineers."""
        from .cases import trusted_picture

        clf = case.classifier
        masks = None
        if case.mask is not None or case.marker is not None:
            parts = [m for m in (case.mask, case.marker) if m is not None]
            masks = np.logical_or.reduce(parts)[None]
        notes = [*case.notes, *(f"{methods.get(n).title} was not run: {why}"
                                for n, why in case.skipped.items())]
        self.add(case.x, case.explanations, titles=[case.title], masks=masks,
                 pixels=case.pixels[None], notes=[notes], classifier=clf)
        item = self.items[-1]
        item.id = case.id
        item.provenance = [m.to_dict() for m in case.maps]
        if case.sensitivity:
            from . import sensitivity

            item.figures.append((
                f"{case.title}: does the occlusion map depend on the fill value?",
                png_data_uri(sensitivity.figure(case.sensitivity, clf, case.x), None),
                sensitivity.caption(case.sensitivity, clf)))
        v = case.verdict
        pic = trusted_picture(case, v.fraction) if v is not None else None
        e = case.explanations.get(case.trusted) if case.trusted else None
        explained = None
        if e is not None:
            c = int(e.targets[0, 0])
            explained = clf.label(c) if c >= 0 else "the score"
        item.verdict = VerdictView(
            decision=case.decision.said, wrong=case.decision.wrong,
            picture=None if pic is None else png_data_uri(pic.pixels, None),
            method=case.trusted,
            method_title=methods.get(case.trusted).title if case.trusted else None,
            why=case.trusted_why, explained=explained,
            sentence=None if v is None else v.sentence,
            status="" if v is None else v.status,
            banners=[] if v is None else [(bn.kind, bn.text) for bn in v.banners],
            evidence_colour=None if pic is None else _swatch(pic.evidence_colour),
            marks_colour=None if pic is None or pic.marks_colour is None
            else _swatch(pic.marks_colour),
            fraction=0.0 if v is None else v.fraction,
            resize=getattr(clf, "resize", None))

    def _describe(self, name: str, expl: Explanation) -> None:
        if name in self.method_info:
            return
        cls = methods.get(name)
        self.method_info[name] = MethodInfo(
            name, cls.title, cls.meaning, cls.needs.describe(), cls.reference, expl.signed,
            css_gradient(expl.signed),
        )

    def html(self) -> str:
        env = Environment(loader=PackageLoader("mindlens", "templates"),
                          autoescape=select_autoescape(["html"]))
        template = env.get_template("report.html")
        clf = self.classifier
        return template.render(
            title=self.title, report=self, model_name=clf.name, version=__version__,
            input_desc="x".join(map(str, clf.input_size)) + f", {clf.channels} channel(s)",
            n_classes=len(clf.labels) if clf.labels else None,
            output_desc=OUTPUTS[clf.output],
            created=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        )

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html(), encoding="utf-8")
        return path


def _top(clf: Classifier, p: torch.Tensor, i: torch.Tensor) -> list[tuple[str, float]]:
    """``(label, probability)`` of the shown classes; a single-logit model shows its
    positive class and the complement."""
    top = [(clf.label(int(c)), float(q)) for q, c in zip(p, i, strict=True)]
    if clf.output == "single_logit":
        top.append((clf.negative_label, 1.0 - top[0][1]))
        top.sort(key=lambda t: -t[1])
    return top


#: the expert's marks on the engineers' maps: a green neither colour map contains
MARKS_GREEN = (80, 255, 0)


def _ring(image: np.ndarray, marks: np.ndarray, factor: int = 2) -> np.ndarray:
    """The image enlarged ``factor`` times (nearest) with a green ring just outside the
    marks, so that a map on a 2-pixel lesion stays visible inside its ring."""
    from scipy import ndimage

    big = image.repeat(factor, axis=0).repeat(factor, axis=1)
    m = marks.repeat(factor, axis=0).repeat(factor, axis=1)
    ring = ndimage.binary_dilation(m) & ~m
    big = big.copy()
    big[ring] = MARKS_GREEN
    return big


def _swatch(name: str) -> tuple[str, str]:
    r, g, b = PALETTE[name]
    return name, f"rgb({r},{g},{b})"


def _fit(mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask).astype(bool)
    if mask.shape == image.shape[:2]:
        return mask
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    t = torch.nn.functional.interpolate(t, size=image.shape[:2], mode="nearest")
    return t[0, 0].numpy() > 0.5


def _notes(name: str, expl: Explanation, b: int, t: int) -> list[str]:
    """Short method-specific facts worth a line under the picture."""
    notes = []
    if "conservation" in expl.extras:
        cons = expl.extras["conservation"]
        if isinstance(cons, torch.Tensor) and cons.dim() == 2:
            notes.append(f"relevance sum / score = {float(cons[b, t]):.2f}")
    if expl.native_shape and tuple(expl.native_shape) != tuple(expl.maps.shape[2:]):
        notes.append("computed at " + "x".join(map(str, expl.native_shape)) + ", then enlarged")
    approx = expl.extras.get("approximation")
    if isinstance(approx, dict):
        notes.append(f"quick preview: {approx['run']} of {approx['windows']} window "
                     f"positions were run, the others estimated; {_checked(approx)}")
    return notes


def _checked(approx: dict) -> str:
    """What the approximate mode's own check found, in words."""
    k = approx.get("check_windows", 0)
    err = approx.get("relative_error")
    if not k:
        return "its error was not measured (check_windows=0)"
    if err is None:
        return f"the {k} windows also run exactly did not move the score, so its error " \
               f"could not be measured against them"
    size = (f"up to {err:.0%}" if err >= 0.1 else f"up to {err:.1%}" if err >= 0.001
            else "less than 0.1%")
    return f"on {k} windows also run exactly (a sample, not a bound) it was off by " \
           f"{size} of their largest drop"


def _tables(name: str, expl: Explanation, b: int) -> list[Table]:
    regions = expl.extras.get("regions")
    if not isinstance(regions, list) or not regions or not isinstance(regions[0], dict):
        return []
    rows = regions[b] if isinstance(regions[0], list) else regions
    if not rows:
        return []
    header = list(rows[0].keys())
    return [Table(f"{methods.get(name).title}: regions", header,
                  [[_fmt(r[h]) for h in header] for r in rows[:30]])]


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def concept_panel(name: str, expl: Explanation, b: int, t: int, image: np.ndarray,
                   label: str, top: int = 3) -> ConceptPanel | None:
    """Template data for ``extras["concepts"]`` (MACE): the ``top`` concepts of target
    ``t`` of image ``b``, ranked by relevance, pruned ones left out (the report's concept
    panel; ``mindlens serve`` sends the same panel as JSON). ``None`` without concepts."""
    concepts = expl.extras.get("concepts")
    if not isinstance(concepts, dict) or "relevance" not in concepts:
        return None
    rho = concepts["relevance"][b, t].double()
    kept = ~concepts["pruned"][b, t].bool()
    total = float(rho[kept].abs().sum())
    protos = concepts.get("prototypes")
    shown = []
    for q in torch.nonzero(kept).flatten().tolist()[:top]:
        m = concepts["maps"][b, t, q].float().cpu().numpy()
        shown.append(Concept(
            rank=len(shown) + 1, share=float(rho[q]) / total if total > 0 else 0.0,
            contribution=float(rho[q]), found=bool(m.max() > 0),
            region=_jpeg_data_uri(_concept_region(image, m)),
            prototypes=[] if protos is None else
            [png_data_uri(c.numpy(), None) for c in protos[b, t, q]]))
    cls = label.rsplit(" (", 1)[0]
    fid = expl.extras.get("fidelity")
    agrees = expl.extras.get("surrogate_agrees")
    balance = float(rho[kept].clamp_min(0).sum()) / total if total > 0 else 0.0
    return ConceptPanel(
        method=name, label=cls,
        summary=_concept_summary(cls, int(kept.sum()), shown, balance, protos is not None),
        concepts=shown,
        fidelity=None if fid is None else _fidelity_sentence(
            float(fid), expl.extras.get("fidelity_on")),
        agreement=None if agrees is None else (
            "On this image, too, it reaches the same decision as the model."
            if bool(agrees[b]) else "On this image it does NOT reach the model's decision: "
            "read these concepts with care."))


def _concept_region(image: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The image dimmed outside a concept's region, the region (half the map's peak and
    above) outlined in yellow; an absent concept leaves the whole image dimmed. Small
    images are enlarged first (nearest) so that the outline stays smooth."""
    factor = max(1, 160 // max(image.shape[:2]))
    if factor > 1:
        image = image.repeat(factor, axis=0).repeat(factor, axis=1)
    if m.shape != image.shape[:2]:
        t = torch.from_numpy(m)[None, None]
        m = torch.nn.functional.interpolate(t, size=image.shape[:2], mode="bilinear",
                                            align_corners=False)[0, 0].numpy()
    peak = float(m.max())
    w = np.clip(m / peak, 0, 1) if peak > 0 else np.zeros_like(m)
    dimmed = (image.astype(np.float32) * (0.3 + 0.7 * w[..., None])).round().astype(np.uint8)
    return mask_outline(dimmed, w >= 0.5, color=(255, 214, 0)) if peak > 0 else dimmed


def _concept_summary(cls: str, n_kept: int, shown: list[Concept], balance: float,
                     protos: bool) -> str:
    """One plain sentence or three: how many concepts, for or against, the top one."""
    if not shown:
        return f"The concept summary has no concept left for “{cls}” (all were pruned)."
    first = shown[0]
    text = (f"The model judges “{cls}” with {n_kept} learnt concept"
            f"{'s' if n_kept != 1 else ''}; on this image {balance:.0%} of their evidence "
            f"speaks for it, {1 - balance:.0%} against.")
    if first.share <= 0:
        return text + (" None of them speaks for it; even the three most favourable ones, "
                       "below, speak against it.")
    like = " and looks like these patches from training images" if protos else ""
    if first.found:
        return (f"{text} The most relevant one ({first.share:.0%}) is found in the outlined "
                f"region{like}.")
    return (f"{text} The most relevant one ({first.share:.0%}) is absent from this image "
            f"(its absence is what counts here); where present, it{like.replace(' and', '')}.")


def _fidelity_sentence(fidelity: float, on: object) -> str:
    pct = "over 99%" if 0.99 < fidelity < 1 and round(fidelity * 100) == 100 \
        else f"{fidelity:.0%}"
    images = "held-out images (not used to train it)" if on == "held-out" else "test images"
    return (f"The concepts are a simplified copy of the model: their summary agrees with the "
            f"model's decision on {pct} of {images}.")


def _jpeg_data_uri(pixels: np.ndarray, quality: int = 88) -> str:
    """A JPEG data URI: photographs in a fifth of a PNG's bytes (keeps the page light)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
