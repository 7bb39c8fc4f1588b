"""One orchestration layer for the CLI, the HTML report, batch runs and a web app.

Given a classifier, inputs and a :class:`Request` (methods, targets, options), :func:`run`
explains each input once per method and returns one :class:`Case` per input: the
decision in words, the verdict (where the trusted method's evidence lies, measured against
the expert's marks, see :mod:`mindlens.verdict`), the other maps, what was skipped and
why, and the provenance of every map. :func:`write_outputs` writes them to a folder
(``.npz`` and ``.png`` per case, ``summary.json``, ``report.html``)::

    from mindlens import cases
    found = cases.run(clf, ["cat.jpg", "dog.jpg"], cases.Request(methods=["gradcam"]))
    cases.write_outputs(found, "out/")
    found[0].to_dict()          # JSON-ready, e.g. for a web app

The **trusted** method (the one picture a non-expert sees) is ``Request.trusted`` if
given; else the method an evaluation recommends for a non-expert audience
(``Request.criteria``: the ``criteria.json`` of ``mindlens evaluate``); else the first of
:data:`DEFAULT_TRUSTED` that ran: Grad-CAM by default, since it is class-discriminative,
passes the randomisation sanity check (Adebayo et al. 2018) and costs one forward and one
backward pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__, methods
from .api import class_names_to_indices, explain
from .errors import InputError, NotApplicableError
from .evaluate import IMAGE_SUFFIXES
from .explanation import Explanation
from .io import VOLUME_SUFFIXES, display_name
from .metrics.input_dependence import input_independence_note
from .model import Classifier, ImageLike
from .provenance import record
from .render.evidence import Outlined, outline_picture
from .runs import write_atomic
from .targets import TargetLike, class_index
from .verdict import DEFAULT_FRACTION, DEFAULT_TOLERANCE, Verdict, Words, measure

DEFAULT_METHODS = ("saliency", "guided_backprop", "cam", "gradcam", "guided_gradcam")
#: the trusted method when neither the request nor an evaluation names one: the first of
#: these that ran (see the module docstring)
DEFAULT_TRUSTED = ("gradcam", "occlusion", "area_occlusion", "cam", "lrp", "saliency")

Progress = Callable[[str], None]


@dataclass
class Request:
    """What to explain and how.

    - ``methods``: method names; ``params``: per-method parameters (``{"occlusion":
      {"window": 16}}``), with defaults filled in by each method.
    - ``target``: ``None`` (the ``top_k`` predicted classes), a class index or name
      (``"tabby cat"``; a typo gets a did-you-mean), or one per image.
    - ``baselines``: occlusion fill values to compare (adds a sensitivity figure).
    - ``trusted`` / ``criteria``: which method's picture a non-expert sees (see module).
    - ``fraction``: the most relevant part of the image the outline shows and the verdict
      counts; ``tolerance``: pixels of slack around expert marks; ``words``: how the
      verdict names the marks, a known marker and the subject.
    """

    methods: Sequence[str] = DEFAULT_METHODS
    target: TargetLike | str | Sequence[str] = None
    top_k: int = 1
    layer: str = "auto"
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    baselines: Sequence[str | float] = ()
    trusted: str | None = None
    criteria: str | Path | dict[str, Any] | None = None
    fraction: float = DEFAULT_FRACTION
    tolerance: float = DEFAULT_TOLERANCE
    words: Words = field(default_factory=Words)
    #: with ``target=None``: explain every class at least this probable (multi-label)
    threshold: float | None = None
    #: the largest image file read, in pixels (default: :data:`mindlens.io.DEFAULT_MAX_PIXELS`)
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        self.methods = list(self.methods)
        if not self.methods:
            raise InputError("give at least one method")
        for name in [*self.methods, *([self.trusted] if self.trusted else [])]:
            methods.get(name)
        if self.trusted and self.trusted not in self.methods:
            raise InputError(f"the trusted method {self.trusted!r} is not among the requested "
                             f"methods ({', '.join(self.methods)}); add it")
        if self.baselines and "occlusion" not in self.methods:
            raise InputError("baselines compare occlusion maps: add occlusion to the methods "
                             "(e.g. --methods occlusion --baselines zero,mean,blur)")
        if not 0 < self.fraction <= 1:
            raise InputError(f"fraction must be in (0, 1], got {self.fraction}")


@dataclass
class Input:
    """One input with what is known about it: the true ``label`` (index or name), the
    expert's ``mask`` and a known spurious ``marker`` (bool ``[H, W]`` at the image's
    size), a ``classifier`` for this input only, per-method ``params`` over the request's,
    methods to ``skip`` here (name -> reason) and ``notes`` shown with it."""

    image: ImageLike
    name: str | None = None
    title: str | None = None
    label: int | str | None = None
    mask: np.ndarray | None = None
    marker: np.ndarray | None = None
    classifier: Classifier | None = None
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    skip: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Decision:
    """What the model decided, from :meth:`Classifier.predict` (its probabilities)."""

    index: int
    label: str
    probability: float
    top: list[tuple[str, float]]
    true_index: int | None = None
    true_label: str | None = None
    #: the class indices of ``top``, in the same order (-1: a single-logit model's complement)
    top_indices: list[int] = field(default_factory=list)

    @property
    def wrong(self) -> bool:
        return self.true_index is not None and self.true_index != self.index

    @property
    def said(self) -> str:
        """What the model said, in words."""
        return f"The model says “{self.label}” with probability {self.probability:.0%}."

    @property
    def sentence(self) -> str:
        """What the model said, and whether it was wrong where the truth is known."""
        text = self.said
        if self.wrong:
            text += f" The model was wrong: the true class is “{self.true_label}”."
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "probability": self.probability,
                "top": [{"label": lab, "probability": p}
                        | ({"index": self.top_indices[i]} if i < len(self.top_indices)
                           and self.top_indices[i] >= 0 else {})
                        for i, (lab, p) in enumerate(self.top)],
                "true_index": self.true_index, "true_label": self.true_label,
                "wrong": self.wrong, "sentence": self.sentence}


@dataclass
class MapInfo:
    """One map of a case: method, explained class, and how it was made."""

    method: str
    title: str
    target: int
    label: str
    probability: float | None
    signed: bool
    #: the resolution the method really works at (e.g. 7x7 for Grad-CAM)
    native_shape: list[int]
    provenance: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Case:
    """One explained input: the presentation model a report or a web page shows.

    ``to_dict()`` is JSON-ready; the arrays (``x``, ``pixels``, ``explanations``, masks)
    stay on the object for rendering.
    """

    id: str
    title: str
    source: str
    decision: Decision
    verdict: Verdict | None
    trusted: str | None
    trusted_why: str
    maps: list[MapInfo]
    skipped: dict[str, str]
    notes: list[str]
    classifier: Classifier = field(repr=False)
    x: torch.Tensor = field(repr=False)
    pixels: np.ndarray = field(repr=False)
    explanations: dict[str, Explanation] = field(repr=False)
    mask: np.ndarray | None = field(default=None, repr=False)
    marker: np.ndarray | None = field(default=None, repr=False)
    sensitivity: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        from . import sensitivity

        return {
            "id": self.id, "title": self.title, "source": self.source,
            "decision": self.decision.to_dict(),
            "verdict": None if self.verdict is None else self.verdict.to_dict(),
            "trusted": self.trusted, "trusted_why": self.trusted_why,
            "maps": [m.to_dict() for m in self.maps], "skipped": dict(self.skipped),
            "notes": list(self.notes), "model": self.classifier.name,
            "model_card_sha256": self.classifier.card_sha256, "mindlens_version": __version__,
            **({"baseline_sensitivity": sensitivity.summary(self.sensitivity)}
               if self.sensitivity else {}),
        }


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; a folder becomes its image (and volume) files, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and (
                f.suffix.lower() in IMAGE_SUFFIXES or str(f).lower().endswith(VOLUME_SUFFIXES)))
            if not found:
                raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder {p}")
            out.extend(found)
        else:
            out.append(p)
    if not out:
        raise InputError("no images were given")
    return out


def pick_trusted(request: Request, ran: Sequence[str]) -> tuple[str | None, str]:
    """The trusted method among those that ran, and why it was chosen (in words)."""
    if request.trusted and request.trusted in ran:
        return request.trusted, "chosen in the request"
    if request.criteria is not None:
        from .evaluation_report import best_method
        from .metrics.criteria import CriteriaTable

        data = request.criteria
        if not isinstance(data, dict):
            path = Path(data)
            if not path.exists():
                raise InputError(f"criteria file not found: {path} (the criteria.json that "
                                 f"`mindlens evaluate` writes)")
            data = json.loads(path.read_text())
        table = CriteriaTable(rows=[r for r in data.get("rows", []) if r["method"] in ran],
                              baselines=data.get("baselines", {}))
        best = best_method(table, "intuitive interpretability")
        if best is not None:
            return best, "recommended by the evaluation for a non-expert audience"
    for name in DEFAULT_TRUSTED:
        if name in ran:
            return name, _DEFAULT_WHY
    return (ran[0], "the only kind of map requested") if ran else (None, "no map was made")


_DEFAULT_WHY = ("mindlens's default where no evaluation is given (run `mindlens evaluate` "
                "to measure which method to trust for this model)")


def _resolve_target(target: Any, clf: Classifier) -> Any:
    if isinstance(target, str) or (isinstance(target, (list, tuple)) and target
                                   and all(isinstance(t, str) for t in target)):
        return class_names_to_indices(clf, target)
    return target


def _stem(src: Any, i: int) -> str:
    """The id of an input: its file name without suffix (undecodable bytes as ``\\xNN``, so
    that the id can go into HTML and JSON), or ``image_<n>``."""
    if isinstance(src, (str, Path)):
        name = display_name(Path(src).name)
        return name[:-7] if name.lower().endswith(".nii.gz") else Path(name).stem
    return f"image_{i + 1}"


def run(classifier: Classifier, inputs: Iterable[ImageLike | Input], request: Request,
        progress: Progress | None = None, warn: Callable[[str, str], None] | None = None
        ) -> list[Case]:
    """Explain every input with every requested method; one :class:`Case` per input.

    A method that cannot run on a model (:class:`NotApplicableError`) is recorded in
    ``Case.skipped`` with the reason and not tried again on that model; ``warn(method,
    reason)`` hears of it once. ``progress(method)`` is called after each method run.
    """
    from .methods.perturbation.sensitivity import baseline_sensitivity

    items = [i if isinstance(i, Input) else Input(i) for i in inputs]
    if not items:
        raise InputError("no images were given")
    skipped_on: dict[int, dict[str, str]] = {}
    seen: set[str] = set()
    cases = []
    for i, item in enumerate(items):
        clf = item.classifier or classifier
        skipped = skipped_on.setdefault(id(clf), {})
        x = clf.preprocess(item.image, max_pixels=request.max_pixels)
        target = _resolve_target(request.target, clf)
        results: dict[str, Explanation] = {}
        here = dict(item.skip)
        sens = None
        for name in request.methods:
            if name in skipped or name in here:
                if progress:
                    progress(name)
                continue
            params = {**request.params.get(name, {}), **item.params.get(name, {})}
            kw: dict[str, Any] = {"target": target, "top_k": request.top_k,
                                  "layer": request.layer, **params}
            if request.threshold is not None and name != "occlusion":
                kw["threshold"] = request.threshold
            try:
                if name == "occlusion" and request.baselines:
                    kw.pop("layer")
                    sens = baseline_sensitivity(clf, x, list(request.baselines), **kw)
                    results[name] = sens["explanations"][sens["baselines"][0]]
                else:
                    results[name] = explain(clf, x, name, **kw)
            except NotApplicableError as e:
                skipped[name] = str(e)
                if warn:
                    warn(name, str(e))
            if progress:
                progress(name)
        stem = _unique(item.name or _stem(item.image, i), seen)
        cases.append(_case(clf, x, item, stem, results, {**skipped, **here}, sens, request))
    _mark_input_independent(cases)
    if not any(c.explanations for c in cases):
        reasons = {k: v for c in cases for k, v in c.skipped.items()}
        raise NotApplicableError("none of the requested methods can run on this model: "
                                 + "; ".join(f"{k}: {v}" for k, v in reasons.items()))
    return cases


def _mark_input_independent(cases: Sequence[Case]) -> None:
    """Cases are explained one image at a time, so a map that ignores the image (the same
    map for different images of the same class, e.g. DeconvNet on a ResNet) shows only
    across cases: where it does, each such explanation gets ``extras["input_independent"]``
    (in its provenance, and a warning under its picture in the report)."""
    groups: dict[tuple[Any, ...], list[Case]] = {}
    for c in cases:  # comparable maps: same model, method, input and map shapes
        for name, e in c.explanations.items():
            key = (id(c.classifier), name, tuple(c.x.shape), tuple(e.maps.shape))
            groups.setdefault(key, []).append(c)
    for (_, name, _, _), group in groups.items():
        if len(group) < 2:
            continue
        expls = [c.explanations[name] for c in group]
        note = input_independence_note(torch.cat([c.x for c in group]),
                                       torch.cat([e.maps[:, :1] for e in expls]),
                                       torch.cat([e.targets[:, :1] for e in expls]))
        if not note:
            continue
        for c, e in zip(group, expls, strict=True):
            e.extras["input_independent"] = note
            for m in c.maps:
                if m.method == name:
                    m.provenance = record(e)


def _case(clf: Classifier, x: torch.Tensor, item: Input, stem: str,
          results: dict[str, Explanation], skipped: dict[str, str],
          sens: dict[str, Any] | None, request: Request) -> Case:
    probs = clf.predict(x)[0]
    k = min(max(3, request.top_k), probs.shape[0])
    top_p, top_i = probs.topk(k)
    true = item.label
    if isinstance(true, str):
        true = class_index(clf.labels, true)
    entries: list[tuple[str, float, int | None]] = [
        (clf.label(int(c)), float(p), int(c)) for p, c in zip(top_p, top_i, strict=True)]
    if clf.output == "single_logit":  # the positive class and its complement (no output
        entries.append((clf.negative_label, 1.0 - entries[0][1], None))  # index: -1)
        entries.sort(key=lambda t: -t[1])
    said = entries[0]
    decision = Decision(-1 if said[2] is None else said[2], said[0], said[1],
                        [(lab, p) for lab, p, _ in entries],
                        None if true is None else int(true),
                        None if true is None else clf.label(int(true)),
                        [-1 if c is None else c for _, _, c in entries])
    pixels = clf.display_pixels(x)[0]
    maps = []
    for name, e in results.items():
        for t in range(e.targets.shape[1]):
            c = int(e.targets[0, t])
            p = float(e.probs[0, t])
            maps.append(MapInfo(name, methods.get(name).title, c,
                                clf.label(c) if c >= 0 else "custom score",
                                None if np.isnan(p) else p, e.signed,
                                list(e.native_shape), record(e)))
    trusted, why = pick_trusted(request, list(results))
    verdict = None
    if trusted is not None and pixels.ndim == 3:
        e = results[trusted]
        c = int(e.targets[0, 0])
        verdict = measure(e.maps[0, 0].float().cpu().numpy(), _fit(item.mask, pixels),
                          _fit(item.marker, pixels), request.fraction, request.tolerance,
                          request.words, clf.label(c) if c >= 0 else "the score")
        if decision.wrong:
            from .verdict import Banner

            verdict.banners.insert(0, Banner("wrong", f"The model was wrong: it says "
                                                      f"“{decision.label}”, the true class is "
                                                      f"“{decision.true_label}”."))
            verdict.status = "model wrong; " + verdict.status
    source = display_name(item.image) if isinstance(item.image, (str, Path)) else stem
    return Case(stem, item.title or (Path(source).name if source != stem else stem), source,
                decision, verdict, trusted, why, maps, skipped, list(item.notes), clf, x,
                pixels, results, _fit(item.mask, pixels), _fit(item.marker, pixels), sens)


def _fit(mask: Any, pixels: np.ndarray) -> np.ndarray | None:
    """A bool mask at the picture's size (nearest), or None."""
    if mask is None:
        return None
    m = np.asarray(mask).astype(bool)
    if m.shape != pixels.shape[:-1]:
        t = torch.from_numpy(m.astype(np.float32))[None, None]
        m = torch.nn.functional.interpolate(t, size=pixels.shape[:-1], mode="nearest")[0, 0]
        m = m.numpy() > 0.5
    return m


def _unique(stem: str, seen: set[str]) -> str:
    name, i = stem, 1
    while name in seen:
        i += 1
        name = f"{stem}_{i}"
    seen.add(name)
    return name


def write_outputs(cases: Sequence[Case], out_dir: str | Path, title: str | None = None,
                  request: Request | None = None, report: bool = True,
                  saliency_style: str = "overlay") -> dict[str, Path]:
    """Write ``<id>.npz`` (one ``[T, *spatial]`` array per method, and ``provenance``: a
    JSON string with every map's record), ``<id>.png`` (input | each method),
    ``summary.json`` and (``report=True``) ``report.html``. Returns the paths written by
    kind (``summary``, ``report``)."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "mindlens_version": __version__,
        "request": None if request is None else _request_dict(request),
        "output": getattr(cases[0].classifier, "output", "softmax") if cases else None,
        "images": {}, "skipped": {}}
    for case in cases:
        prov = {n: record(e) for n, e in case.explanations.items()}
        np.savez_compressed(out / f"{case.id}.npz", provenance=np.array(json.dumps(prov)),
                            **{n: e.maps[0].cpu().numpy().astype(np.float32)
                               for n, e in case.explanations.items()})
        Image.fromarray(strip(case)).save(out / f"{case.id}.png")
        summary["images"][case.id] = case.to_dict()
        summary["skipped"].update(case.skipped)
    paths = {"summary": out / "summary.json"}
    write_atomic(paths["summary"], json.dumps(summary, indent=2, default=str))
    if report:
        from .report import Report

        clf = cases[0].classifier if cases else None
        rep = Report(clf, title=title or f"mindlens: {getattr(clf, 'name', 'model')}",
                     saliency_style=saliency_style)
        for case in cases:
            rep.add_case(case)
        paths["report"] = rep.write(out / "report.html")
    return paths


def strip(case: Case) -> np.ndarray:
    """The PNG per case: input | each method (first target); slice montages for volumes."""
    from .render.panel import panel

    maps = {methods.get(n).title: (e.maps[0, 0].cpu().numpy(), e.signed)
            for n, e in case.explanations.items()}
    if case.pixels.ndim == 4:
        from .render.montage import montage, stack

        return stack([("input", montage(case.pixels))] + [
            (title, montage(case.pixels, m, signed)) for title, (m, signed) in maps.items()])
    return panel(case.pixels, maps)


def trusted_picture(case: Case, fraction: float = DEFAULT_FRACTION,
                    colours: list[str] | None = None) -> Outlined | None:
    """The picture a non-expert sees: the photo, the trusted map's most relevant
    ``fraction`` outlined, the expert's marks (and a known marker) outlined beside it.
    ``colours``: the photo's :func:`~mindlens.render.evidence.distinct_colours`, where
    they are known already."""
    if case.trusted is None or case.pixels.ndim != 3:
        return None
    from .verdict import evidence_threshold

    m = case.explanations[case.trusted].maps[0, 0].float().cpu().numpy()
    marks = case.mask
    if case.marker is not None:
        marks = case.marker if marks is None else (marks | case.marker)
    return outline_picture(case.pixels, m, evidence_threshold(m, fraction), marks,
                           colours=colours)


def _request_dict(request: Request) -> dict[str, Any]:
    from .provenance import _plain

    return _plain({k: v for k, v in request.__dict__.items() if k != "words"}
                  | {"words": request.words.__dict__})
