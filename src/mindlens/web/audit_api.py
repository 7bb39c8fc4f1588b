"""The audit view of ``mindlens serve --audit``: the page ``/audit`` and its JSON API
(``/api/audits...``, in the OpenAPI spec under the tag ``audit``). The audits themselves
live in :class:`.audit.Audits`; images are addressed by their position in the store's
index, class names by their exact text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from .audit import Audits, Failed, NotReady, Unknown
from .http_errors import answer_errors

STATIC = Path(__file__).parent / "static"
RETRY_AFTER_S = 1
#: pictures may be cached by the browser: an audit does not change while it is served
CACHE = {"Cache-Control": "private, max-age=3600"}


def register(app: FastAPI, audits: Audits) -> None:
    """Add the audit page and API to ``app`` (routes only; the app's guard applies)."""
    app.state.audits = audits

    answer_errors(app, {Unknown: 404, Failed: 500, NotReady: 503}, RETRY_AFTER_S)

    @app.get("/audit", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "audit.html")

    @app.get("/api/audits", tags=["audit"])
    async def list_audits() -> list[dict[str, Any]]:
        """The served audits (``mindlens serve --audit``): name, source, method, state
        (``queued``, ``computing``, ``ready`` or ``error``) and, when ready, the classes
        with their number of strategies and their flags in plain words."""
        return [s.summary() for s in audits.audits.values()]

    @app.get("/api/audits/{audit}", tags=["audit"])
    async def one_audit(audit: str) -> JSONResponse:
        """One audit's summary; 202 while it is still being computed (poll again)."""
        s = audits.get(audit)
        return JSONResponse(s.summary(), status_code=200 if s.state in ("ready", "error")
                            else 202)

    @app.get("/api/audits/{audit}/classes/{cls:path}/clusters/{k}", tags=["audit"])
    async def cluster(audit: str, cls: str, k: int) -> dict[str, Any]:
        """One strategy (cluster) of a class: its size, share, where its evidence sits,
        flags, its most typical images and every member (position in the index and id)."""
        return audits.cluster_view(audit, cls, k)

    @app.get("/api/audits/{audit}/classes/{cls:path}/mean.png", tags=["audit"],
             response_class=Response)
    async def mean(audit: str, cls: str, cluster: Annotated[int | None, Query(
            description="a strategy's index (default: the whole class)")] = None) -> Response:
        """The mean map (evidence for the class) of a class or of one of its strategies."""
        png = await run_in_threadpool(audits.mean_picture, audit, cls, cluster)
        return Response(png, media_type="image/png", headers=CACHE)

    @app.get("/api/audits/{audit}/classes/{cls:path}", tags=["audit"])
    async def klass(audit: str, cls: str) -> dict[str, Any]:
        """A class of the audit: the eigenvalues, the number of strategies, the flags, the
        share of evidence inside the marks, each strategy's figures and typical images, and
        the 2-D picture (t-SNE of the spectral embedding) as points with their strategy."""
        return audits.class_view(audit, cls)

    @app.get("/api/audits/{audit}/images/{position}.png", tags=["audit"],
             response_class=Response)
    async def picture(audit: str, position: int,
                      overlay: Annotated[bool, Query(description="lay the map over the image "
                                                     "(its positive part: the evidence for "
                                                     "the class)")] = True,
                      size: Annotated[int, Query(description="side of the square picture, "
                                                 "pixels (32..640)")] = 320) -> Response:
        """An audited image by its position in the store's index (never by a path), with
        its map laid over and the expert's marks outlined (header ``X-Marks-Colour``)."""
        png, colour = await run_in_threadpool(audits.picture, audit, position, overlay, size)
        headers = {**CACHE, **({"X-Marks-Colour": colour} if colour else {})}
        return Response(png, media_type="image/png", headers=headers)

    @app.get("/api/audits/{audit}/images/{position}", tags=["audit"])
    async def row(audit: str, position: int) -> dict[str, Any]:
        """An audited image's index row: its label, the decision and the top classes with
        their probabilities, the share of its evidence inside the marks, its strategy."""
        return audits.row_view(audit, position)
