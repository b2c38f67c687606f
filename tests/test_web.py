"""The web page, driven in headless Chromium (Debian's /usr/bin/chromium through Playwright).

Playwright never downloads a browser here: it is pointed at the system
Chromium. Without it (or without the playwright package) these tests skip.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web tests need the 'server' extra: pip install 'lookalike[server]'")

from PIL import Image  # noqa: E402

from lookalike import Index  # noqa: E402

from .conftest import DEMO, ODD, ROOT  # noqa: E402
from .live_server import LiveServer  # noqa: E402

CHROMIUM = Path(os.environ.get("LOOKALIKE_CHROMIUM", "/usr/bin/chromium"))  # Debian's package
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = ROOT / "artifacts"
TOKEN = "page-token-123"
THUMBS_LOADED = "() => { const imgs = [...document.querySelectorAll('.hit img')];" \
                " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium chromium-driver)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("web")
    photos = base / "photos"
    photos.mkdir()
    for p in sorted(DEMO.glob("*.jpg")):
        shutil.copy(p, photos / p.name)
    idx = base / "idx"
    with Index.create(idx, "cnn") as ix:
        ix.add(photos, jobs=1)
    queries = base / "queries"
    queries.mkdir()
    with Image.open(DEMO / "rocket.jpg") as im:  # an edited copy: mirrored and cropped
        w, h = im.size
        im.transpose(Image.FLIP_LEFT_RIGHT).crop((w // 8, h // 8, w - w // 8, h - h // 8)).save(queries / "rocket-edit.jpg")
    return {"photos": photos, "index": idx, "queries": queries}


@pytest.fixture(scope="module")
def server(gallery):
    with LiveServer(gallery["index"]) as s:
        yield s


@pytest.fixture(scope="module")
def token_server(gallery):
    with LiveServer(gallery["index"], "--token", TOKEN) as s:
        yield s


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.set_default_timeout(30_000)
    yield pg
    context.close()


def hits(page) -> list[dict]:
    return page.eval_on_selector_all(
        ".hit", "els => els.map(e => ({id: +e.dataset.id, rank: +e.dataset.rank, path: e.dataset.path,"
                " score: +e.dataset.score, text: e.innerText}))")


def wait_for_results(page, first_path_end: str) -> list[dict]:
    page.wait_for_function(
        "end => { const h = document.querySelector('.hit'); return h && h.dataset.path.endsWith(end); }",
        arg=first_path_end)
    page.wait_for_function(THUMBS_LOADED)
    return hits(page)


def test_pick_an_image_and_see_the_original_first(page, server, gallery):
    page.goto(server.url + "/")
    page.wait_for_function("() => document.getElementById('index-info').textContent.includes('8 images')")
    page.set_input_files("#file", str(DEMO / "cat.jpg"))
    found = wait_for_results(page, "/cat.jpg")
    assert found[0]["path"] == str(gallery["photos"] / "cat.jpg") and found[0]["rank"] == 1
    assert found[0]["score"] > 0.999 and "1.000" in found[0]["text"] and "cat.jpg" in found[0]["text"]
    assert len(found) == 8 and [h["rank"] for h in found] == list(range(1, 9))
    assert "8 hits" in page.inner_text("#status")
    assert page.is_visible("#query-image")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-search.png"), full_page=True)
    assert page.errors == []


def test_drop_an_edited_copy(page, server, gallery):
    page.goto(server.url + "/")
    data = base64.b64encode((gallery["queries"] / "rocket-edit.jpg").read_bytes()).decode()
    page.evaluate(
        """b64 => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], 'rocket-edit.jpg', {type: 'image/jpeg'}));
            const drop = document.getElementById('drop');
            drop.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));
            drop.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        data,
    )
    found = wait_for_results(page, "/rocket.jpg")
    assert found[0]["score"] > 0.8
    assert "rocket-edit.jpg" in page.inner_text("#query-caption")
    assert page.errors == []


def test_click_a_hit_to_search_from_it(page, server, gallery):
    page.goto(server.url + "/")
    page.set_input_files("#file", str(DEMO / "cat.jpg"))
    found = wait_for_results(page, "/cat.jpg")
    second = found[1]
    page.click(".hit[data-rank='2']")
    now = wait_for_results(page, "/" + os.path.basename(second["path"]))
    assert now[0]["id"] == second["id"] and now[0]["score"] > 0.999
    assert page.eval_on_selector(".hit", "e => e.classList.contains('self')")
    assert page.url.endswith(f"#id={second['id']}")
    assert second["path"] in page.inner_text("#query-caption")
    # the link can be reloaded: the page searches the id from the URL again
    page.reload()
    assert wait_for_results(page, "/" + os.path.basename(second["path"]))[0]["id"] == second["id"]
    page.go_back()
    assert page.errors == []


def test_a_bad_file_gives_a_clear_message(page, server):
    page.goto(server.url + "/")
    page.set_input_files("#file", str(ODD / "text.jpg"))
    page.wait_for_selector("#status.error")
    text = page.inner_text("#status")
    assert "not an image" in text and "[not_an_image]" in text
    assert page.query_selector_all(".hit") == []
    page.wait_for_function("() => document.getElementById('query-image').hidden")  # no broken-image icon
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-error.png"))
    page.set_input_files("#file", str(ODD / "truncated.jpg"))
    page.wait_for_function("() => document.getElementById('status').textContent.includes('truncated')")


def test_token_from_the_url_is_kept_for_the_session(page, token_server):
    page.goto(token_server.url + "/#token=" + TOKEN)
    page.wait_for_function("() => document.getElementById('index-info').textContent.includes('8 images')")
    assert "token" not in page.url  # taken out of the address bar at once
    assert page.evaluate("() => sessionStorage.getItem('lookalike.token')") == TOKEN
    page.set_input_files("#file", str(DEMO / "cat.jpg"))
    found = wait_for_results(page, "/cat.jpg")  # thumbnails too: fetched with the header
    assert found[0]["score"] > 0.999
    assert page.errors == []


def test_without_a_token_the_page_asks_for_it(page, token_server):
    page.goto(token_server.url + "/")
    page.wait_for_selector("#token-form", state="visible")
    page.fill("#token-input", TOKEN)
    page.click("#token-form button")
    page.wait_for_function("() => document.getElementById('index-info').textContent.includes('8 images')")
    page.set_input_files("#file", str(DEMO / "cat.jpg"))
    assert wait_for_results(page, "/cat.jpg")[0]["score"] > 0.999
    assert page.is_hidden("#token-form")
