"""The explanation service behind ``mindlens serve``: models, images, a bounded worker pool,
a results cache and cancellable jobs for slow methods.

Every explanation goes through :func:`mindlens.cases.run` and is presented from its
:class:`~mindlens.cases.Case` (:func:`encode`): the page shows what the report shows.

Concurrency: each served model has two *lanes*, the caller's classifier for fast methods
and a private copy (``copy.deepcopy``) for slow ones (occlusion, ...), each behind its own
lock, so a slow job never blocks a quick Grad-CAM. Work runs in bounded thread pools;
past ``workers + queue`` waiting requests, :class:`Busy` is raised (HTTP 503). An answer's
pictures are drawn after the lock is let go (the next request may use the model), the
photo and the trusted picture on helper threads while the map is drawn.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import cases, methods, progress
from ..errors import InputError
from ..model import Classifier
from ..render.colors import colorize, to_display
from ..render.evidence import as_rgb, distinct_colours
from ..render.png import fast_png_uri
from ..verdict import Words
from .limits import DEFAULT_MAX_PIXELS, decode_image, digest
from .pictures import Picture

#: methods that take many passes through the model: run as jobs with progress, on the slow
#: lane (names of methods this version lacks are simply never requested)
SLOW = ("occlusion", "area_occlusion", "rise", "scorecam", "ablationcam", "mace",
        "integrated_gradients", "smoothgrad")


class Busy(Exception):
    """Every worker is busy and the queue is full (HTTP 503, retry later)."""


class Cancelled(Exception):
    """The job was cancelled by its client."""


@dataclass
class Lane:
    """A classifier and the lock whoever runs it holds."""

    clf: Classifier
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Served:
    """One served model: the fast lane (the caller's classifier) and the slow lane."""

    name: str
    fast: Lane
    slow: Lane

    @classmethod
    def of(cls, name: str, clf: Classifier) -> Served:
        try:
            slow = Lane(copy.deepcopy(clf))
        except Exception:  # e.g. TorchScript: share the fast lane
            return cls(name, (lane := Lane(clf)), lane)
        return cls(name, Lane(clf), slow)

    def info(self) -> dict[str, Any]:
        clf = self.fast.clf
        n = _num_classes(clf)
        return {"name": self.name, "title": clf.name, "input_size": list(clf.input_size),
                "classes": n, "labels": [clf.label(i) for i in range(n)],
                "card_sha256": clf.card_sha256}


def _num_classes(clf: Classifier) -> int:
    if clf.labels is not None:
        return len(clf.labels)
    with torch.no_grad():
        return int(clf.predict(torch.zeros(1, clf.channels, *clf.input_size)).shape[1])


@dataclass
class Ask:
    """One explanation request, validated."""

    model: str
    method: str
    image: np.ndarray
    image_key: str
    mask: np.ndarray | None = None
    target: int | str | None = None
    top_k: int = 1
    fraction: float = cases.DEFAULT_FRACTION
    pictures: bool = True  # False: no PNG data URIs in the answer (scripts)

    def key(self) -> str:
        return json.dumps([self.image_key, self.model, self.method, self.target, self.top_k,
                           self.fraction, self.pictures])


@dataclass
class Job:
    """A slow explanation running in the background.

    Its expected duration (``estimate_s``) comes, best first, from the method's own cost
    estimate (:mod:`mindlens.progress`: its planned model passes x one timed pass), from
    the planned passes x this model's measured time per image, or from the last run of the
    method on this model; progress from the planned passes done, or from the images
    through the model against the last run's count."""

    id: str
    ask: Ask
    state: str = "queued"  # queued, running, done, error, cancelled
    rows: int = 0  # images through the model so far
    expected: int | None = None  # from the last run of this method on this model
    started: float | None = None
    finished: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    planned: int | None = None  # model passes the method plans (progress reporter)
    done: int = 0  # of those, done
    estimate_s: float | None = None  # the expected duration of the whole job
    per_image_s: float | None = None  # this model's time per image, from earlier jobs
    timed: bool = False  # estimate_s is the method's own timed estimate

    def report(self, _label: str, done: int, total: int) -> None:
        """A :func:`mindlens.progress.reporting` reporter: the method's planned passes."""
        if total and self.planned is None and not self.timed and self.per_image_s:
            self.estimate_s = total * self.per_image_s
        self.done, self.planned = done, total

    def take_estimate(self, est: progress.Estimate) -> None:
        """A :func:`mindlens.progress.estimating` sink: the method's timed estimate."""
        self.estimate_s, self.timed = est.seconds, True

    def to_dict(self) -> dict[str, Any]:
        now = time.monotonic()
        elapsed = None if self.started is None else (self.finished or now) - self.started
        progress_ = eta = None
        if self.state == "done":
            progress_ = 1.0
        elif self.planned and self.done:
            progress_ = min(0.99, self.done / self.planned)
        elif self.expected and self.rows:
            progress_ = min(0.99, self.rows / self.expected)
        if self.state in ("queued", "running"):
            if progress_ and elapsed:
                eta = elapsed / progress_ - elapsed
            elif self.estimate_s is not None:
                eta = max(0.0, self.estimate_s - (elapsed or 0.0))
        return {"id": self.id, "state": self.state, "method": self.ask.method,
                "forward_passes": self.rows, "planned_passes": self.planned,
                "progress": progress_, "elapsed_s": elapsed, "estimate_s": self.estimate_s,
                "eta_s": eta, "error": self.error, "result": self.result}


class Service:
    """Models, pictures, pools, cache and jobs; see the module docstring."""

    def __init__(self, models: Mapping[str, Classifier], pictures: list[Picture] | None = None,
                 unit: str | Path | None = None, words: Words | None = None,
                 workers: int = 2, queue: int = 8, slow_workers: int = 1,
                 cache_size: int = 128, max_pixels: int = DEFAULT_MAX_PIXELS,
                 target: int | str | None = None,
                 params: dict[str, dict[str, Any]] | None = None) -> None:
        if not models:
            raise InputError("serve at least one model")
        self.models = {name: Served.of(name, clf) for name, clf in models.items()}
        self.pictures = {p.id: p for p in pictures or []}
        self.unit = None if unit is None else str(unit)
        self.words = words or Words()
        self.max_pixels = max_pixels
        self.default_target = target
        self.params = params or {}
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="mindlens-explain")
        self._slow_pool = ThreadPoolExecutor(slow_workers, thread_name_prefix="mindlens-slow")
        self._slots = threading.BoundedSemaphore(workers + queue)
        self._slow_slots = threading.BoundedSemaphore(slow_workers + queue)
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self._expected: dict[tuple[str, str], int] = {}  # images through the model
        self._took: dict[tuple[str, str], float] = {}  # seconds, last run
        self._per_image: dict[str, float] = {}  # seconds per image through the model

    # -- catalogue ----------------------------------------------------------------------
    def method_names(self) -> list[str]:
        names = methods.names()
        return [n for n in names if n != "mace" or self.unit is not None]

    def model(self, name: str | None) -> Served:
        if name is None or name == "":
            return next(iter(self.models.values()))
        if name not in self.models:
            raise InputError(f"unknown model {name!r}; served: {', '.join(self.models)}")
        return self.models[name]

    def ask(self, *, model: str | None, method: str, image: bytes | None = None,
            image_id: str | None = None, mask: bytes | None = None,
            target: str | None = None, top_k: int = 1,
            fraction: float = cases.DEFAULT_FRACTION, pictures: bool = True) -> Ask:
        """Validate a request: the image from its bytes or its id, never from a path."""
        served = self.model(model)
        if method not in self.method_names():
            raise InputError(f"unknown method {method!r}; available: "
                             f"{', '.join(self.method_names())}")
        if not 1 <= top_k <= 10:
            raise InputError(f"top_k must be in 1..10, got {top_k}")
        if not 0 < fraction <= 1:
            raise InputError(f"fraction must be in (0, 1], got {fraction}")
        if (image is None) == (image_id is None):
            raise InputError("send either an image file (image) or the id of a served image "
                             "(image_id)")
        marks = None
        if image is not None:
            pixels = decode_image(image, self.max_pixels)
            key = digest(image)
        else:
            pic = self.pictures.get(str(image_id))
            if pic is None:
                raise InputError(f"no served image has the id {image_id!r} (GET /api/images)")
            pixels = pic.load()
            marks = pic.mask()
            key = "id:" + pic.id
        if mask is not None:
            marks = decode_image(mask, self.max_pixels, "the mask").max(axis=-1) > 0
            key += ":" + digest(mask)
        elif marks is not None:
            key += ":served-mask"
        t: int | str | None = target if target not in (None, "") else self.default_target
        if isinstance(t, str) and t.strip().lstrip("-").isdigit():
            t = int(t)
        return Ask(served.name, method, pixels, key, marks, t, top_k, fraction, pictures)

    # -- running ------------------------------------------------------------------------
    def cached(self, ask: Ask) -> dict[str, Any] | None:
        with self._cache_lock:
            hit = self._cache.get(ask.key())
            if hit is not None:
                self._cache.move_to_end(ask.key())
            return hit

    def _store(self, ask: Ask, result: dict[str, Any]) -> None:
        with self._cache_lock:
            self._cache[ask.key()] = result
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def submit(self, ask: Ask | Callable[[], Ask], as_json: bool = False) -> Future:
        """Explain on the fast lane in the pool; :class:`Busy` when it is full.

        ``ask`` may be a function that makes the :class:`Ask` (validates and decodes the
        upload) in the worker: one thread hop per request instead of two. With
        ``as_json``, the future holds the answer as JSON bytes, serialised in the worker
        (not on the server's event loop)."""
        if not self._slots.acquire(blocking=False):
            raise Busy("all explanation workers are busy")

        def work() -> dict[str, Any] | bytes:
            a = ask if isinstance(ask, Ask) else ask()
            result = self._explain(a, self.models[a.model].fast)
            return to_json(result) if as_json else result

        fut = self._pool.submit(work)
        fut.add_done_callback(lambda _f: self._slots.release())
        return fut

    def explain_now(self, ask: Ask) -> dict[str, Any]:
        """Explain in the calling thread (fast lane), cached."""
        return self._explain(ask, self.models[ask.model].fast)

    def _explain(self, ask: Ask, lane: Lane, job: Job | None = None) -> dict[str, Any]:
        hit = self.cached(ask)
        if hit is not None:
            return {**hit, "cached": True}
        clf, photo = lane.clf, None
        image: np.ndarray | torch.Tensor = ask.image
        if ask.pictures and not clf.volumetric:
            # the photo is drawn on another core while the model runs (its colours too,
            # which the trusted picture needs): the answer's largest drawing costs no
            # latency on a server whose explanation leaves a core free
            image = clf.preprocess(ask.image)
            photo = _drawing().submit(Photo.draw, clf.display_pixels(image)[0])
        with lane.lock:
            case = self._case(ask, clf, [ask.method], job, image)
        # off the lock: the next may run
        result = encode(case, ask.fraction, ask.pictures, None if photo is None else photo.result())
        result["model"] = ask.model
        self._store(ask, result)
        return {**result, "cached": False}

    def _request(self, ask: Ask, names: list[str]) -> cases.Request:
        params = {k: dict(v) for k, v in self.params.items()}
        if "mace" in names and self.unit is not None:
            params["mace"] = {"unit": self.unit}
        return cases.Request(methods=names, target=ask.target, top_k=ask.top_k, params=params,
                             fraction=ask.fraction, words=self.words)

    def _case(self, ask: Ask, clf: Classifier, names: list[str],
              job: Job | None = None, image: np.ndarray | torch.Tensor | None = None
              ) -> cases.Case:
        """``image``: the ask's image, preprocessed already where the caller needed it."""
        if clf.volumetric:
            raise InputError("mindlens serve shows 2-D images; explain volumes with "
                             "`mindlens explain`")
        item = cases.Input(ask.image if image is None else image, name="image", mask=ask.mask)
        if job is None:
            return cases.run(clf, [item], self._request(ask, names))[0]
        handle = clf.module.register_forward_pre_hook(_watch(job))  # our private copy
        try:
            return cases.run(clf, [item], self._request(ask, names))[0]
        finally:
            handle.remove()

    def report(self, ask: Ask, names: list[str]) -> str:
        """The self-contained HTML report of this case with ``names`` (the CLI's report)."""
        from ..report import Report

        for n in names:
            if n not in self.method_names():
                raise InputError(f"unknown method {n!r}")
        served = self.models[ask.model]
        # with a slow method in it, the report is made on the slow lane
        lane = served.slow if any(n in SLOW for n in names) else served.fast
        if not self._slots.acquire(blocking=False):
            raise Busy("all explanation workers are busy")
        try:
            with lane.lock:
                case = self._case(ask, lane.clf, names)
                rep = Report(lane.clf, title=f"mindlens: {lane.clf.name}")
                rep.add_case(case)
                return rep.html()
        finally:
            self._slots.release()

    # -- jobs ---------------------------------------------------------------------------
    def start_job(self, ask: Ask) -> Job:
        """Run a (slow) method on the slow lane; poll :meth:`job`, cancel with
        :meth:`cancel`."""
        self._forget_old_jobs()
        if not self._slow_slots.acquire(blocking=False):
            raise Busy("the queue of slow methods is full")
        job = Job(uuid.uuid4().hex, ask, expected=self._expected.get((ask.model, ask.method)),
                  estimate_s=self._took.get((ask.model, ask.method)),
                  per_image_s=self._per_image.get(ask.model))
        self.jobs[job.id] = job
        hit = self.cached(ask)
        if hit is not None:
            job.result, job.state, job.started = {**hit, "cached": True}, "done", time.monotonic()
            job.finished = job.started
            self._slow_slots.release()
            return job
        fut = self._slow_pool.submit(self._run_job, job)
        fut.add_done_callback(lambda _f: self._slow_slots.release())
        return job

    def _run_job(self, job: Job) -> None:
        if job.cancel.is_set():
            job.state = "cancelled"
            return
        job.state, job.started = "running", time.monotonic()
        try:
            with progress.reporting(job.report), progress.estimating(job.take_estimate):
                job.result = self._explain(job.ask, self.models[job.ask.model].slow, job)
            job.state = "done"
            key = (job.ask.model, job.ask.method)
            self._expected[key] = max(job.rows, 1)
            if not job.result.get("cached"):
                took = time.monotonic() - job.started
                self._took[key] = took
                self._per_image[job.ask.model] = took / max(job.rows, 1)
        except Cancelled:
            job.state = "cancelled"
        except Exception as e:  # reported to the client, not lost
            job.state, job.error = "error", str(e)
        finally:
            job.finished = time.monotonic()

    def job(self, job_id: str) -> Job:
        if job_id not in self.jobs:
            raise KeyError(job_id)
        return self.jobs[job_id]

    def cancel(self, job_id: str) -> Job:
        job = self.job(job_id)
        job.cancel.set()
        if job.state == "queued":
            job.state = "cancelled"
        return job

    def _forget_old_jobs(self, keep_s: float = 600.0, most: int = 200) -> None:
        now = time.monotonic()
        for jid, job in list(self.jobs.items()):
            if job.finished is not None and (now - job.finished > keep_s or len(self.jobs) > most):
                self.jobs.pop(jid, None)

    def close(self) -> None:
        for job in self.jobs.values():
            job.cancel.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._slow_pool.shutdown(wait=False, cancel_futures=True)


def to_json(result: dict[str, Any]) -> bytes:
    """An answer as the JSON bytes Starlette's ``JSONResponse`` would send."""
    return json.dumps(result, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


def _watch(job: Job) -> Callable[..., None]:
    def hook(_module: torch.nn.Module, inputs: Any) -> None:
        if job.cancel.is_set():
            raise Cancelled(job.id)
        x = inputs[0] if inputs else None
        job.rows += int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() > 0 else 1
    return hook


@dataclass(frozen=True)
class Photo:
    """The input as the answer shows it: a PNG data URI, and the palette colours that
    stand out on it (:func:`~mindlens.render.evidence.distinct_colours`), for the
    trusted picture's outlines."""

    pixels: np.ndarray  # uint8 [H, W, 3], the case's display pixels
    uri: str
    colours: list[str]

    @staticmethod
    def draw(pixels: np.ndarray) -> Photo:
        rgb = as_rgb(pixels)
        return Photo(pixels, fast_png_uri(rgb), distinct_colours(rgb, 2))


def encode(case: cases.Case, fraction: float, pictures: bool = True,
           photo: Photo | None = None) -> dict[str, Any]:
    """The JSON of one case: :meth:`Case.to_dict` (decision with the top classes,
    verdict, trusted method, map provenance), ``classes`` (the decision's top classes:
    index, label, probability), the input and the trusted picture as PNG data URIs, and per
    map its colours (PNG data URI), raw values (base64 of little-endian float32) and, for
    a concept method (MACE), the report's concept panel (else ``None``). Without
    ``pictures`` the PNG data URIs (``image``, ``trusted_picture``, the maps' ``png``)
    are ``None`` and not drawn: for scripts that read the values. ``photo``: the
    case's photo drawn already (:meth:`Photo.draw`), else it is drawn here."""
    out = case.to_dict()
    out["classes"] = out["decision"]["top"]
    trusted = None
    if photo is not None and not np.array_equal(photo.pixels, case.pixels):
        photo = None  # drawn from other pixels than the case shows: not this case's photo
    if pictures:  # the trusted picture is drawn beside the maps (zlib and numpy let go of
        # the GIL: on an idle second core it costs no latency); the photo here where the
        # caller has not drawn it during the model run
        if photo is None:
            photo = Photo.draw(case.pixels)
        trusted = _drawing().submit(_trusted_picture, case, fraction, photo.colours)
    maps = []
    infos = iter(case.maps)
    for name, e in case.explanations.items():
        clip = 99.5 if e.raw is not None else None
        for t in range(e.targets.shape[1]):
            info = next(infos)
            m = e.maps[0, t].float().cpu().numpy()
            values = np.ascontiguousarray(m, dtype="<f4")
            maps.append({**info.to_dict(), "method": name,
                         "png": fast_png_uri(colorize(to_display(m, e.signed, clip)))
                         if pictures else None,
                         "values": base64.b64encode(values.tobytes()).decode(),
                         "shape": list(values.shape), "dtype": "float32",
                         "concepts": _concepts(name, e, t, case.pixels, info.label)})
    out["image"] = None if photo is None or not pictures else photo.uri
    out["trusted_picture"] = None if trusted is None else trusted.result()
    out["maps"] = maps
    return out


def _trusted_picture(case: cases.Case, fraction: float, colours: list[str] | None = None
                     ) -> dict[str, Any] | None:
    pic = cases.trusted_picture(case, fraction, colours)
    return None if pic is None else {"png": fast_png_uri(pic.pixels),
                                     "evidence_colour": pic.evidence_colour,
                                     "marks_colour": pic.marks_colour}


_DRAWING: list[ThreadPoolExecutor] = []
_DRAWING_LOCK = threading.Lock()


def _drawing() -> ThreadPoolExecutor:
    """The threads that draw an answer's pictures besides the map (made once)."""
    with _DRAWING_LOCK:
        if not _DRAWING:
            # two pictures per answer, for the default two workers at once
            _DRAWING.append(ThreadPoolExecutor(4, thread_name_prefix="mindlens-draw"))
        return _DRAWING[0]


def _concepts(name: str, e: Any, t: int, pixels: np.ndarray, label: str
              ) -> dict[str, Any] | None:
    """The report's concept panel (:func:`mindlens.report.concept_panel`) as JSON: the
    summary sentence, the top concepts (share of the evidence, found or not, the region as
    a data URI, training patches) and the fidelity and agreement sentences."""
    if "concepts" not in e.extras:
        return None
    from ..report import concept_panel

    panel = concept_panel(name, e, 0, t, as_rgb(pixels), label)
    return None if panel is None else dataclasses.asdict(panel)
