"""The FastAPI app of ``mindlens serve``: the page and the JSON API.

``create_app(models, images_dir, masks_dir, unit, token, audits=...)`` builds it. The API
(``/api/explain``, ``/api/jobs``, ``/api/report``, ``/api/models``, ``/api/methods``,
``/api/images``, ``/api/health``, and ``/api/audits...`` with ``audits``: see
:mod:`.audit_api`) is described by ``/openapi.json``; ``/docs`` renders that
spec with the page's own script (no Swagger UI from a CDN: the app works offline).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from .. import __version__, methods
from ..errors import MindlensError
from ..model import Classifier
from ..verdict import DEFAULT_FRACTION, Words
from . import audit_api
from .audit import Audits
from .http_errors import answer_errors
from .limits import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, TooLarge
from .pictures import Picture, folder_pictures
from .security import COOKIE, Guard, read_limited, token_ok
from .service import SLOW, Ask, Busy, Service

STATIC = Path(__file__).parent / "static"
RETRY_AFTER_S = 2


def create_app(models: Mapping[str, Classifier | str | Path],
               images_dir: str | Path | None = None, masks_dir: str | Path | None = None,
               unit: str | Path | None = None, token: str | None = None, *,
               pictures: list[Picture] | None = None, words: Words | None = None,
               target: int | str | None = None,
               params: dict[str, dict[str, Any]] | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
               max_pixels: int = DEFAULT_MAX_PIXELS, workers: int = 2, queue: int = 8,
               cache_size: int = 128, title: str = "mindlens",
               audits: Sequence[str | Path] | None = None,
               audit_region: str = "region") -> FastAPI:
    """The app serving ``models`` (name -> classifier or model card path).

    ``images_dir`` (and ``masks_dir``, masks by file stem) or ``pictures``: images the page
    offers as thumbnails, addressed by id. ``unit``: a trained MACE unit (adds ``mace``).
    ``token``: required on every API call but ``/api/health``. ``target``: the class every
    map explains unless the request names one (the demo explains "diseased"); ``params``:
    per-method parameters (``{"occlusion": {"window": 16}}``). ``audits``: scan stores or
    folders of ``mindlens audit`` shown at ``/audit`` (stores are audited in the
    background; ``audit_region``: what their masks mark, for the flags' words); with
    audits, ``models`` may be empty (the page is then the audit view).
    """
    from ..model_card import load_model

    clfs = {name: m if isinstance(m, Classifier) else load_model(m) for name, m in models.items()}
    pics = list(pictures or [])
    if images_dir is not None:
        pics += folder_pictures(Path(images_dir), None if masks_dir is None else Path(masks_dir),
                                max_pixels)
    views = Audits(audits or [], max_pixels, audit_region)  # none: GET /api/audits is []
    service = None if audits and not clfs else Service(
        clfs, pics, unit=unit, words=words, workers=workers, queue=queue,
        max_pixels=max_pixels, target=target, params=params, cache_size=cache_size)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if service is not None:
            service.close()
        views.close()

    app = FastAPI(title=f"{title} API", version=__version__, docs_url=None, redoc_url=None,
                  lifespan=lifespan,
                  description="Explain an image classifier's decision: upload an image, get "
                              "the decision, the verdict and the maps (see /docs).")
    app.state.service = service
    app.state.token = token
    app.state.max_bytes = max_bytes
    app.add_middleware(Guard, token=token, max_bytes=max_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _errors(app)
    _pages(app)
    _health(app)
    if service is not None:
        _api(app, service, max_bytes)
    audit_api.register(app, views)
    views.start()
    return app


def _errors(app: FastAPI) -> None:
    answer_errors(app, {TooLarge: 413, MindlensError: 422, Busy: 503}, RETRY_AFTER_S)


def _pages(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        if app.state.service is None:  # audits only
            return RedirectResponse("/audit", status_code=307)
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html")

    @app.get("/login", include_in_schema=False)
    async def login(request: Request, token: str = "") -> Response:
        if not token_ok(app.state.token, {"authorization": f"Bearer {token}"}, {}):
            return JSONResponse({"detail": "wrong token"}, status_code=401)
        resp = RedirectResponse("/", status_code=303)
        if app.state.token:
            resp.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return resp


class Form_:
    """The fields of an explanation request (multipart form)."""

    def __init__(
        self,
        image: Annotated[UploadFile | None, File(description="the image file (PNG, JPEG, "
                                                  "...); its bytes are decoded, the content "
                                                  "type is not trusted")] = None,
        image_id: Annotated[str | None, Form(description="or: the id of a served image "
                                             "(GET /api/images)")] = None,
        mask: Annotated[UploadFile | None, File(description="the expert's marks: an image, "
                                                 "nonzero = marked; gives the verdict")] = None,
        method: Annotated[str, Form(description="GET /api/methods")] = "gradcam",
        target: Annotated[str | None, Form(description="class index or name (default: the "
                                           "top class)")] = None,
        top_k: Annotated[int, Form(description="explain the k top classes (the answer "
                                   "lists max(3, k))")] = 1,
        model: Annotated[str | None, Form(description="GET /api/models (default: the first)")
                         ] = None,
        fraction: Annotated[float, Form(description="the most relevant part of the image the "
                                        "outline shows and the verdict counts")] = DEFAULT_FRACTION,
        pictures: Annotated[bool, Form(description="false: leave out the PNG data URIs "
                                       "(image, trusted_picture, the maps' png are null), "
                                       "for scripts that read the raw values; faster")] = True,
    ) -> None:
        self.image, self.image_id, self.mask = image, image_id, mask
        self.fields = {"method": method, "target": target, "top_k": top_k,
                       "model": model, "fraction": fraction, "pictures": pictures}


async def _asker(service: Service, form: Form_, max_bytes: int) -> Callable[[], Ask]:
    """Read the uploads (size-limited); the returned function validates and decodes them
    (:meth:`Service.ask`), to be called in a worker thread."""
    image = None if form.image is None else await read_limited(form.image, max_bytes)
    mask = None if form.mask is None else await read_limited(form.mask, max_bytes, "the mask")
    return lambda: service.ask(image=image, image_id=form.image_id, mask=mask, **form.fields)


async def _ask(service: Service, form: Form_, max_bytes: int) -> Ask:
    return await run_in_threadpool(await _asker(service, form, max_bytes))


def _health(app: FastAPI) -> None:
    @app.get("/api/health", tags=["server"])
    async def health() -> dict[str, Any]:
        """Whether the server is up (needs no token)."""
        return {"status": "ok", "version": __version__}


def _api(app: FastAPI, service: Service, max_bytes: int) -> None:
    @app.get("/api/models", tags=["catalogue"])
    async def models() -> list[dict[str, Any]]:
        """The served models with their class names."""
        return [m.info() for m in service.models.values()]

    @app.get("/api/methods", tags=["catalogue"])
    async def methods_() -> list[dict[str, Any]]:
        """The explanation methods; ``slow`` ones run as jobs with progress."""
        return [{"name": n, "title": methods.get(n).title, "meaning": methods.get(n).meaning,
                 "needs": methods.get(n).needs.describe(), "slow": n in SLOW}
                for n in service.method_names()]

    @app.get("/api/images", tags=["catalogue"])
    async def images() -> list[dict[str, Any]]:
        """The served images (``--images`` or the demo), by id."""
        return [{"id": p.id, "name": p.name, "has_mask": p.has_mask,
                 "thumb": f"/api/images/{p.id}/thumb"} for p in service.pictures.values()]

    @app.get("/api/images/{image_id}/thumb", tags=["catalogue"])
    async def thumb(image_id: str) -> Response:
        """A served image as PNG (at most 160 px), by id only."""
        pic = service.pictures.get(image_id)
        if pic is None:
            raise HTTPException(404, f"no served image has the id {image_id!r}")
        return Response(await run_in_threadpool(_thumb, pic), media_type="image/png")

    @app.post("/api/explain", tags=["explain"], response_model=dict[str, Any])
    async def explain(form: Annotated[Form_, Depends()]) -> Any:
        """Explain one image with one method: the classes, the decision, the verdict
        (where a mask is known), the trusted picture and each map as a PNG data URI and as
        raw float32 values (base64, little-endian, with its shape), with provenance; a
        MACE map (where the server has a unit) also carries ``concepts``, the report's
        concept panel (summary, top concepts with their share of the evidence and region,
        fidelity), ``null`` for other methods. Slow methods run on their own lane (see
        /api/jobs for progress, time estimate and cancelling)."""
        if form.fields["method"] in SLOW:
            job = service.start_job(await _ask(service, form, max_bytes))
            while job.state in ("queued", "running"):
                await asyncio.sleep(0.05)
            if job.state != "done":
                raise HTTPException(500, job.error or job.state)
            assert job.result is not None
            return job.result
        # quick methods: decoded, explained and serialised in one worker (one thread hop)
        body = await asyncio.wrap_future(
            service.submit(await _asker(service, form, max_bytes), as_json=True))
        return Response(body, media_type="application/json")

    @app.post("/api/jobs", tags=["explain"], status_code=202)
    async def start_job(form: Annotated[Form_, Depends()]) -> dict[str, Any]:
        """Start an explanation in the background (for slow methods): poll
        ``GET /api/jobs/{id}`` for progress and the time estimate, cancel with
        ``DELETE``."""
        return service.start_job(await _ask(service, form, max_bytes)).to_dict()

    @app.get("/api/jobs/{job_id}", tags=["explain"])
    async def job(job_id: str) -> dict[str, Any]:
        """State, images through the model so far (``forward_passes``), the passes the
        method plans (``planned_passes``, where it can say), ``progress``, the expected
        duration of the whole job (``estimate_s``: the method's own timed estimate, its
        planned passes x this model's time per image, or the last run of the method on
        this model; ``null`` before anything is known), ``elapsed_s``, the time left
        (``eta_s``), and the result when done."""
        try:
            return service.job(job_id).to_dict()
        except KeyError:
            raise HTTPException(404, "no such job") from None

    @app.delete("/api/jobs/{job_id}", tags=["explain"])
    async def cancel(job_id: str) -> dict[str, Any]:
        """Cancel a job (it stops at its next forward pass)."""
        try:
            return service.cancel(job_id).to_dict()
        except KeyError:
            raise HTTPException(404, "no such job") from None

    @app.post("/api/report", tags=["explain"], response_class=HTMLResponse)
    async def report(form: Annotated[Form_, Depends()],
                     methods: Annotated[str, Form(description="comma-separated method names")
                                        ] = "gradcam") -> HTMLResponse:
        """This case as the self-contained HTML report of ``mindlens explain``."""
        ask = await _ask(service, form, max_bytes)
        names = [m.strip() for m in methods.split(",") if m.strip()] or [ask.method]
        html = await run_in_threadpool(service.report, ask, names)
        return HTMLResponse(html, headers={
            "Content-Disposition": 'attachment; filename="mindlens-report.html"'})


def _thumb(pic: Picture) -> bytes:
    from PIL import Image

    from ..render.evidence import as_rgb
    from ..render.overlay import png_bytes

    img = Image.fromarray(as_rgb(pic.load()))
    img.thumbnail((160, 160))
    return png_bytes(np.asarray(img))
