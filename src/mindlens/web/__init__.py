"""``mindlens serve``: a web page and a JSON API that explain an image classifier's decision
to someone without Python (needs the ``web`` extra: FastAPI, uvicorn, python-multipart).

- :func:`create_app` (:mod:`.app`): the FastAPI app, routes and error mapping.
- :mod:`.service`: models, worker pools, cache, jobs; every explanation
  through :func:`mindlens.cases.run`.
- :mod:`.security`: token, size limit, security headers; :mod:`.limits`: decoding uploads
  with the pixel limit checked from the header; :mod:`.pictures`: served images by id.
"""

from .app import create_app

__all__ = ["create_app"]
