"""``centrobind serve``: the JSON API (in-process), its limits against a real uvicorn server, and
the page at ``/`` in headless Chromium (Debian ``chromium`` driven by Playwright)."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from centrobind.cli import main
from centrobind.serve import Explorer, create_app
from serve_helpers import tiny_space

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-breakpad",
    "--disable-crash-reporter",
    # a fake audio sink that plays in real time: a CI machine has no sound card, and a real
    # (absent) one may leave a playing clip's clock stuck at 0
    "--disable-audio-output",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    return tiny_space(tmp_path_factory)


@pytest.fixture(scope="module")
def explorer(space):
    _, data, run = space
    return Explorer(run, data, device="cpu")


@pytest.fixture(scope="module")
def client(explorer):
    return TestClient(create_app(explorer, max_upload=200_000, timeout=60, max_k=20))


class Server:
    """uvicorn in a thread on a free localhost port."""

    def __init__(self, app) -> None:
        import uvicorn

        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def colours(explorer, hits):
    return [explorer.labels["colour"][1][int(explorer.labels["colour"][0][h["row"]])] for h in hits]


# -- the API ------------------------------------------------------------------------------------


def test_api_search_by_text_vector_item_and_file(client, explorer, space):
    root, data, _ = space
    info = client.get("/api/modalities").json()
    assert [(m["name"], m["kind"], m["indexed"]) for m in info["modalities"]] == [
        ("caption", "text", 30),
        ("image", "image", 30),
        ("sound", "audio", 30),
    ]
    assert info["labels"] == ["colour"] and info["splits"] is True
    assert client.get("/api/health").json()["status"] == "ok"

    r = client.post("/api/search", json={"target": "image", "k": 5, "text": "a red square"})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 5 and [h["score"] for h in hits] == sorted(
        [h["score"] for h in hits], reverse=True
    )
    assert colours(explorer, hits) == ["red"] * 5  # a trained space, not noise
    assert hits[0]["labels"] == {"colour": "red"} and hits[0]["split"] in ("train", "val", "test")
    assert hits[0]["url"] == f"/api/items/image/{hits[0]['row']}" and "text" not in hits[0]

    # the same query as a vector from /api/embed gives the same hits
    z = client.post("/api/embed", json={"modality": "caption", "texts": ["a red square"]}).json()
    assert z["dim"] == 16 and abs(np.linalg.norm(z["embeddings"][0]) - 1) < 1e-5
    by_vec = client.post(
        "/api/search", json={"target": "image", "k": 5, "vector": z["embeddings"][0]}
    )
    assert [h["row"] for h in by_vec.json()["hits"]] == [h["row"] for h in hits]

    # search with a corpus item: an image finds its own caption's colour
    row = hits[0]["row"]
    r = client.post(
        "/api/search", json={"target": "image", "k": 1, "item": {"modality": "image", "row": row}}
    )
    assert r.json()["hits"][0]["row"] == row and r.json()["hits"][0]["score"] > 0.999
    cap = client.post(
        "/api/search", json={"target": "caption", "k": 3, "item": {"modality": "image", "row": row}}
    ).json()["hits"]
    assert all("red" in h["text"] for h in cap)

    # upload: a corpus image finds itself first; a WAV file is recognised as sound
    png = (root / "raw/img" / f"{row:03d}.png").read_bytes()
    r = client.post(
        "/api/search/file", files={"file": ("q.png", png)}, data={"target": "image", "k": "3"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["hits"][0]["row"] == row and r.json()["hits"][0]["score"] > 0.999
    wav = (root / "raw/wav/002.wav").read_bytes()  # row 2 is blue
    r = client.post(
        "/api/search/file", files={"file": ("q.wav", wav)}, data={"target": "sound", "k": "1"}
    )
    assert r.json()["hits"][0]["row"] == 2
    r = client.post("/api/embed/file", files={"file": ("q.wav", wav)}, data={"modality": "sound"})
    assert r.status_code == 200 and len(r.json()["embeddings"][0]) == 16


def test_api_items_and_no_path_traversal(client, explorer, space, tmp_path):
    root, _, _ = space
    r = client.get("/api/items/image/4")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == (root / "raw/img/004.png").read_bytes()
    r = client.get("/api/items/sound/4")
    assert r.headers["content-type"] == "audio/wav" and r.content[:4] == b"RIFF"
    assert client.get("/api/items/caption/4").json()["text"] == "a small green square"
    for url in ("/api/items/image/30", "/api/items/image/-1", "/api/items/nope/1"):
        assert client.get(url).status_code == 404, url
    assert client.get("/api/items/image/..%2F..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)

    # a listed file outside the media root, or a symlink leading out of it, is never sent
    outside = tmp_path / "secret.png"
    outside.write_bytes((root / "raw/img/000.png").read_bytes())
    link = root / "raw/img/link.png"
    link.symlink_to(outside)
    items = explorer.items["image"]
    saved = items[:3]
    try:
        items[0], items[1], items[2] = str(outside), str(link), str(root / "raw/manifest.csv")
        for row in (0, 1, 2):
            r = client.get(f"/api/items/image/{row}")
            assert r.status_code == 404 and "not served" in r.json()["detail"], r.text
    finally:
        items[:3] = saved
        link.unlink()
    assert client.get("/api/items/image/0").status_code == 200


def test_api_bad_input_is_4xx_with_a_clear_line(client):
    def post(body, **kw):
        return client.post(
            "/api/search", content=body, headers={"content-type": "application/json"}
        )

    cases = [
        (post('{"target": "image", "text": '), 400, "malformed JSON"),
        (post("[1, 2]"), 422, "valid dictionary"),
        (post('{"target": "video", "text": "x"}'), 400, "unknown target modality 'video'"),
        (post('{"target": "image", "k": 0, "text": "x"}'), 422, "k: Input should be greater"),
        (post('{"target": "image", "k": 21, "text": "x"}'), 400, "limit of 20"),
        (post('{"target": "image", "k": "many", "text": "x"}'), 422, "k: Input should be a valid"),
        (post('{"target": "image"}'), 422, "exactly one of text, vector or item"),
        (post('{"target": "image", "text": "x", "vector": [1]}'), 422, "exactly one"),
        (post('{"target": "image", "vector": [1, 2]}'), 400, "D = 16"),
        (
            post('{"target": "image", "vector": ' + json.dumps([0.0] * 16) + "}"),
            400,
            "not all zeros",
        ),
        (post('{"target": "image", "text": "' + "x" * 3000 + '"}'), 422, "at most 2000"),
        (post('{"target": "image", "text": "x", "colour": 1}'), 422, "colour: Extra inputs"),
        (post('{"target": "image", "item": {"modality": "image", "row": 99}}'), 404, "no 'image'"),
        (post('{"target": "image", "text": "x", "text_modality": "image"}'), 400, "does not take"),
    ]
    files = [
        ({"file": ("q.png", b"not an image at all")}, {"target": "image"}, 400, "neither an image"),
        ({"file": ("q.png", b"")}, {"target": "image"}, 400, "empty"),
        ({"file": ("q.png", b"\x89PNG" + b"\0" * 300_000)}, {"target": "image"}, 413, "limit"),
        ({"file": ("q.wav", b"RIFF\0\0\0\0WAVEjunk")}, {"target": "image"}, 400, "WAV"),
        ({"file": ("q.txt", b"hello")}, {"target": "image", "modality": "sound"}, 400, "PCM WAV"),
        ({"file": ("q.txt", b"hello")}, {"target": "image", "modality": "caption"}, 400, "files"),
    ]
    for files_, data, code, words in files:
        cases.append((client.post("/api/search/file", files=files_, data=data), code, words))
    for (r, code, words), i in zip(cases, range(len(cases)), strict=True):
        assert r.status_code == code, (i, r.status_code, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and words in detail, (i, detail)
    r = client.post("/api/embed", json={"modality": "image", "features": [[0.5] * 3]})
    assert r.status_code == 400 and "expected 192 features" in r.json()["detail"]
    # the server keeps serving
    r = client.post("/api/search", json={"target": "image", "k": 2, "text": "a blue square"})
    assert r.status_code == 200 and len(r.json()["hits"]) == 2


def test_slow_clients_get_408_and_others_are_served(explorer):
    app = create_app(explorer, max_upload=100_000, timeout=1.0)
    with Server(app) as srv:
        slow = []
        for _ in range(20):  # each promises 1000 bytes and sends 10
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.sendall(
                b"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n" + b'{"target":'
            )
            slow.append(s)
        import urllib.request

        t0 = time.monotonic()
        with urllib.request.urlopen(f"{srv.url}/api/health", timeout=10) as r:
            assert r.status == 200
        assert time.monotonic() - t0 < 0.9  # not queued behind the slow clients
        for s in slow:
            reply = http.client.HTTPResponse(s)
            reply.begin()
            body = reply.read().decode()
            s.close()
            assert reply.status == 408, body
            assert json.loads(body)["detail"] == "the request body took over 1 s to arrive"
        with urllib.request.urlopen(f"{srv.url}/api/modalities", timeout=10) as r:
            assert r.status == 200


def test_cli_serve_wires_flags_and_refuses_bad_ones(space, monkeypatch, capsys):
    _, data, run = space
    seen = {}

    def fake_run_server(ex, **kw):  # the real server is tested above; this checks the wiring
        seen.update(kw, explorer=ex)

    monkeypatch.setattr("centrobind.serve.app.run_server", fake_run_server)
    argv = ["serve", "--run", str(run), "--corpus", str(data), "--port", "8123"]
    assert main([*argv, "--max-upload-mb", "2", "--timeout", "7", "--device", "cpu"]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123 and seen["timeout"] == 7
    assert seen["max_upload"] == 2 * 2**20 and seen["explorer"].media_root == data.parent
    assert "serving http://127.0.0.1:8123/" in capsys.readouterr().out
    for extra, words in [
        (["--timeout", "0"], "--timeout must be > 0"),
        (["--max-k", "0"], "--max-k must be >= 1"),
        (["--index", str(data)], "--index"),
    ]:
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert main(["serve", "--run", str(data / "nope"), "--corpus", str(data)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


# -- the page in Chromium -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def page(explorer):
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "the browser tests need Chromium (scripts/install_test_deps.sh installs it)"
    with Server(create_app(explorer, timeout=60)) as srv, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="centrobind-chromium-"),
            executable_path=exe,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1200, "height": 900},
        )
        ctx.set_default_timeout(30_000)
        pg = ctx.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(srv.url + "/")
        pg.wait_for_selector('#targets button[data-target="image"][aria-checked="true"]')
        yield pg
        ctx.close()
        assert errors == []


def rendered(page):
    return page.eval_on_selector_all(
        ".hit",
        """els => els.map(e => ({row: +e.dataset.row, modality: e.dataset.modality,
            score: +e.dataset.score, img: (e.querySelector('img') || {}).naturalWidth || 0,
            tags: [...e.querySelectorAll('.tag')].map(t => t.textContent)}))""",
    )


def test_page_text_query_renders_hits(page, client, explorer):
    page.fill("#q", "a red square")
    page.press("#q", "Enter")
    page.wait_for_function("document.querySelectorAll('.hit').length === 10")
    page.wait_for_function("[...document.querySelectorAll('.hit img')].every(i => i.naturalWidth)")
    got = rendered(page)
    api = client.post("/api/search", json={"target": "image", "k": 10, "text": "a red square"})
    assert [h["row"] for h in got] == [h["row"] for h in api.json()["hits"]]
    assert all(h["modality"] == "image" and h["img"] == 16 for h in got)  # the 16x16 PNGs
    assert all("colour: red" in h["tags"] for h in got[:5])
    assert "10 hits" in page.inner_text("#status") and "a red square" in page.inner_text("#status")
    # clicking a hit searches with it: the image itself comes first
    first = got[3]["row"]
    page.click(f'.hit[data-row="{first}"] .media')
    page.wait_for_function(f"document.querySelector('.hit').dataset.row === '{first}'")
    assert "similar to image row" in page.inner_text("#query-chip")


def test_page_upload_image(page, space):
    root, _, _ = space
    page.click('#targets button[data-target="image"]')
    page.set_input_files("#file", str(root / "raw/img/007.png"))
    page.wait_for_function(
        "document.querySelector('.hit') && "
        "document.querySelector('#status').textContent.includes('007.png')"
    )
    got = rendered(page)
    assert got[0]["row"] == 7 and got[0]["score"] > 0.999
    assert "007.png" in page.inner_text("#query-chip")
    # a file that is not an image: a clear message, and the page keeps working
    bad = Path(tempfile.mkdtemp()) / "notes.png"
    bad.write_text("not a picture")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#error:not([hidden])")
    assert "neither an image" in page.inner_text("#error")
    still = [(h["row"], h["score"]) for h in rendered(page)]
    assert "007.png" in page.inner_text("#query-chip")
    assert still == [(h["row"], h["score"]) for h in got]  # the page is as it was


def test_page_play_audio_hit(page, space):
    page.click('#targets button[data-target="sound"]')
    page.fill("#q", "a blue square")
    page.press("#q", "Enter")
    page.wait_for_function(
        "document.querySelectorAll('.hit audio').length === 10 && "
        "document.querySelector('#status').textContent.includes('sound')"
    )
    played = page.evaluate(
        """async () => {
            const a = document.querySelector('.hit audio');
            const later = (s, what) => new Promise(r => setTimeout(() => r(what), s * 1000));
            const started = a.play().then(() => 'playing', e => `play() failed: ${e}`);
            const how = await Promise.race([started, later(20, 'play() did not start')]);
            const state = {how, paused: a.paused, ended: a.ended, readyState: a.readyState,
                           duration: a.duration, src: a.currentSrc, error: a.error && a.error.code};
            // What the player plays, rendered offline: a machine without a sound card plays into
            // a fake sink whose real-time clock may not advance, so the clock is not the check.
            const bytes = await (await fetch(a.currentSrc)).arrayBuffer();
            const ctx = new OfflineAudioContext(1, 16000, 16000);
            const src = ctx.createBufferSource();
            src.buffer = await ctx.decodeAudioData(bytes);
            src.connect(ctx.destination);
            src.start();
            const out = (await ctx.startRendering()).getChannelData(0);
            let loud = 0, last = 0;
            out.forEach((v, i) => { if (Math.abs(v) > 1e-3) { loud++; last = i; } });
            return {...state, decoded: src.buffer.duration, loud, last};
        }"""
    )
    assert played["how"] == "playing" and played["error"] is None, played
    assert played["readyState"] >= 1 and (not played["paused"] or played["ended"]), played
    assert abs(played["duration"] - 0.4) < 0.02 and abs(played["decoded"] - 0.4) < 0.02, played
    # the rendered clip is sound for its 0.4 s and silence after
    assert played["loud"] > 0.5 * 0.4 * 16000, played
    assert 0.3 * 16000 < played["last"] < 0.41 * 16000, played
    assert "/api/items/sound/" in played["src"]
    page.wait_for_selector(".hit .wave[data-drawn]")  # the clip was decoded for its envelope
    assert "colour: blue" in page.inner_text(".hit")
