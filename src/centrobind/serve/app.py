"""The FastAPI app of ``centrobind serve``: a JSON API over an :class:`Explorer` and the page at
``/`` (plain HTML, CSS and JS from ``static/``; no build step).

Limits, enforced by :class:`Limits` around every request: a body larger than ``max_upload`` bytes
gets 413, a client that has not sent its whole body within ``timeout`` seconds gets 408, and a
request still unanswered after ``timeout`` seconds gets 503. Every error body is
``{"detail": "<one line>"}``.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .. import __version__
from ..errors import CentrobindError
from .explorer import BadRequest, Explorer, NotFound

__all__ = ["create_app", "Limits", "STATIC"]

STATIC = Path(__file__).parent / "static"
MAX_TEXT = 2000  # characters of a text query
MAX_ROWS = 256  # rows of one embed request
HITS: dict[str, Any] = {"response_model_exclude_none": True}  # no "text": null in a hit


class ItemRef(BaseModel):
    """A corpus item: search with its own embedding."""

    model_config = ConfigDict(extra="forbid")
    modality: str
    row: int = Field(ge=0)


class SearchRequest(BaseModel):
    """Exactly one of ``text``, ``vector`` or ``item``, and the modality to search in."""

    model_config = ConfigDict(extra="forbid")
    target: str = Field(description="corpus modality to search in")
    k: int = Field(10, ge=1, description="hits to return (at most the server's max_k)")
    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    text_modality: str | None = Field(None, description="text modality (default: the first)")
    vector: list[float] | None = Field(None, description="a query in the shared space [D]")
    item: ItemRef | None = None

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        given = [k for k in ("text", "vector", "item") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of text, vector or item (got {given or 'none'})")
        return self


class EmbedRequest(BaseModel):
    """Raw texts, or input features ``[n, D_m]``, of one modality."""

    model_config = ConfigDict(extra="forbid")
    modality: str
    texts: list[str] | None = Field(None, min_length=1, max_length=MAX_ROWS)
    features: list[list[float]] | None = Field(None, min_length=1, max_length=MAX_ROWS)

    @model_validator(mode="after")
    def _one_input(self) -> EmbedRequest:
        if (self.texts is None) == (self.features is None):
            raise ValueError("give exactly one of texts or features")
        return self


class Hit(BaseModel):
    row: int
    modality: str
    score: float
    split: str | None = None
    labels: dict[str, str] | None = None
    text: str | None = None
    url: str | None = None


class SearchResponse(BaseModel):
    target: str
    k: int
    query: dict[str, Any]
    hits: list[Hit]
    took_ms: float


class EmbedResponse(BaseModel):
    modality: str
    dim: int
    embeddings: list[list[float]]


def create_app(
    explorer: Explorer, max_upload: int = 10 * 2**20, timeout: float = 30.0, max_k: int = 100
) -> FastAPI:
    """The app; ``max_upload`` in bytes, ``timeout`` in seconds (see the module docstring).
    Longer than 80 lines: one flat list of the routes, read top to bottom like the API."""
    app = FastAPI(
        title="centrobind",
        version=__version__,
        description="Search a corpus in a trained centrobind space by text, file or vector.",
    )
    app.add_middleware(Limits, max_body=max_upload, timeout=timeout)  # type: ignore[arg-type]
    ex = explorer

    @app.exception_handler(CentrobindError)
    async def _user_error(request: Request, e: CentrobindError) -> JSONResponse:
        code = 404 if isinstance(e, NotFound) else 400
        return JSONResponse({"detail": " ".join(str(e).split())}, status_code=code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = list(e.errors())
        bad_json = any(err.get("type") == "json_invalid" for err in errors)
        code = 400 if bad_json else 422
        return JSONResponse({"detail": _validation_line(errors)}, status_code=code)

    def check_k(k: int) -> None:
        if k > max_k:
            raise BadRequest(f"k = {k} is above this server's limit of {max_k}")

    def respond(target: str, k: int, query: dict[str, Any], q: np.ndarray, t0: float) -> Any:
        norm = float(np.linalg.norm(q))
        if not np.isfinite(q).all() or norm == 0:
            raise BadRequest("the query vector must be finite and not all zeros")
        hits = ex.search(q / norm, target, k)
        took = round(1000 * (time.perf_counter() - t0), 2)
        return {"target": target, "k": k, "query": query, "hits": hits, "took_ms": took}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/api/health", summary="liveness and what is loaded")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "run": str(ex.run_path),
            "corpus": ex.corpus_name,
            "indexed": {m: len(t.rows) for m, t in ex.targets.items()},
            "uptime_s": round(time.time() - ex.started, 1),
        }

    @app.get("/api/modalities", summary="the run's modalities and what each takes")
    def modalities() -> dict[str, Any]:
        return {**ex.info(), "max_k": max_k, "max_upload_bytes": max_upload}

    @app.post(
        "/api/search", response_model=SearchResponse, summary="search by text/vector/item", **HITS
    )
    def search(req: SearchRequest) -> Any:
        t0 = time.perf_counter()
        check_k(req.k)
        query: dict[str, Any]
        if req.text is not None:
            m = ex.text_modality(req.text_modality)
            q, query = ex.encode_texts([req.text], m)[0], {"text": req.text, "modality": m}
        elif req.vector is not None:
            if len(req.vector) != ex.model.embed_dim:
                raise BadRequest(
                    f"the vector has {len(req.vector)} numbers; this space has D = "
                    f"{ex.model.embed_dim}"
                )
            q, query = np.asarray(req.vector, dtype=np.float32), {"vector": len(req.vector)}
        else:
            assert req.item is not None
            q = ex.item_vector(req.item.modality, req.item.row)
            query = {"item": req.item.model_dump()}
        return respond(req.target, req.k, query, q, t0)

    @app.post("/api/search/file", response_model=SearchResponse, summary="search by upload", **HITS)
    def search_file(
        file: Annotated[UploadFile, File(description="an image or a PCM WAV file")],
        target: Annotated[str, Form(description="corpus modality to search in")],
        k: Annotated[int, Form(ge=1)] = 10,
        modality: Annotated[str | None, Form(description="default: found from the file")] = None,
    ) -> Any:
        t0 = time.perf_counter()
        check_k(k)
        data = file.file.read()
        if not data:
            raise BadRequest("the uploaded file is empty")
        q = ex.encode_file(data, modality or None, file.filename or "")[0]
        return respond(target, k, {"file": file.filename or "upload"}, q, t0)

    @app.post("/api/embed", response_model=EmbedResponse, summary="embed texts or features", **HITS)
    def embed(req: EmbedRequest) -> Any:
        if req.texts is not None:
            z = ex.encode_texts(req.texts, req.modality)
        else:
            assert req.features is not None
            z = ex.encode_features(req.modality, req.features)
        return {"modality": req.modality, "dim": int(z.shape[1]), "embeddings": z.tolist()}

    @app.post(
        "/api/embed/file", response_model=EmbedResponse, summary="embed an uploaded file", **HITS
    )
    def embed_file(
        file: Annotated[UploadFile, File(description="an image or a PCM WAV file")],
        modality: Annotated[str | None, Form(description="default: found from the file")] = None,
    ) -> Any:
        data = file.file.read()
        if not data:
            raise BadRequest("the uploaded file is empty")
        z = ex.encode_file(data, modality or None, file.filename or "")
        return {"modality": modality or "", "dim": int(z.shape[1]), "embeddings": z.tolist()}

    @app.get(
        "/api/items/{modality}/{row}",
        summary="a corpus item: the raw image or audio file, or {text}",
        responses={200: {"content": {"image/*": {}, "audio/*": {}, "application/json": {}}}},
    )
    def item(modality: str, row: int) -> Any:
        what, value = ex.item(modality, row)
        if what == "text":
            return {"modality": modality, "row": row, "text": value}
        path, media = value
        headers = {"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"}
        return FileResponse(path, media_type=media, headers=headers)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _validation_line(errors: Any) -> str:
    """FastAPI's validation errors as one line: ``k: Input should be ... (got 0)``."""
    parts = []
    for err in list(errors)[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx", {}).get("error", "")
            parts.append(f"malformed JSON ({ctx})" if ctx else "malformed JSON")
            continue
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        got = err.get("input")
        shown = json.dumps(got)[:60] if isinstance(got, (int, float, str)) else None
        parts.append(f"{loc + ': ' if loc else ''}{msg}" + (f" (got {shown})" if shown else ""))
    return "; ".join(parts) or "invalid request"


class Limits:
    """ASGI middleware: body size limit (413), slow-client timeout (408), request timeout (503)."""

    def __init__(self, app: Any, max_body: int, timeout: float) -> None:
        self.app, self.max_body, self.timeout = app, max_body, timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _reply(send, 413, self._too_large())
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        seen = 0
        started = reading = False  # reading: waiting for the client's next body chunk

        async def limited_receive() -> Any:
            nonlocal seen, reading
            reading = True
            try:
                msg = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.001))
            except asyncio.TimeoutError:
                raise HTTPException(408, self._slow()) from None
            reading = False
            if msg.get("type") == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    raise HTTPException(413, self._too_large())
            return msg

        async def tracked_send(msg: Any) -> None:
            nonlocal started
            started = started or msg.get("type") == "http.response.start"
            await send(msg)

        try:
            await asyncio.wait_for(self.app(scope, limited_receive, tracked_send), self.timeout)
        except asyncio.TimeoutError:  # the whole request: a slow client (408) or slow work (503)
            if not started and reading:
                await _reply(send, 408, self._slow())
            elif not started:
                await _reply(send, 503, f"the request took over {self.timeout:g} s; try again")
        except HTTPException as e:  # raised by limited_receive outside FastAPI's handlers
            if not started:
                await _reply(send, e.status_code, str(e.detail))

    def _slow(self) -> str:
        return f"the request body took over {self.timeout:g} s to arrive"

    def _too_large(self) -> str:
        return f"the request body is over the server's limit of {self.max_body / 2**20:.3g} MiB"


async def _reply(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def run_server(
    explorer: Explorer,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload: int = 10 * 2**20,
    timeout: float = 30.0,
    max_k: int = 100,
) -> None:
    """Serve until interrupted (uvicorn, one process)."""
    import uvicorn

    app = create_app(explorer, max_upload=max_upload, timeout=timeout, max_k=max_k)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_keep_alive=5)
