"""``centrobind serve``: a local web page and JSON API over a trained run and a corpus.

Needs the ``serve`` extra (``pip install "centrobind[serve]"``: FastAPI, uvicorn,
python-multipart). :class:`~centrobind.serve.explorer.Explorer` holds the run and the embedded
corpus and has no web dependency; :func:`~centrobind.serve.app.create_app` wraps it in a FastAPI
app. Both are imported on first use, so ``import centrobind.serve`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BadRequest", "Explorer", "NotFound", "create_app", "run_server"]


def __getattr__(name: str) -> Any:
    if name in ("BadRequest", "Explorer", "NotFound"):
        from . import explorer

        return getattr(explorer, name)
    if name in ("create_app", "run_server"):
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
