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


def test_copy_detection_shows_inliers_and_the_outline(page, server, gallery):
    page.goto(server.url + "/")
    page.wait_for_function("() => document.getElementById('index-info').textContent.includes('8 images')")
    assert page.is_enabled("#verify") and not page.is_checked("#verify")
    page.check("#verify")
    page.set_input_files("#file", str(gallery["queries"] / "rocket-edit.jpg"))  # mirrored and cropped
    page.wait_for_function("() => document.getElementById('status').textContent.includes('copy detection')")
    found = wait_for_results(page, "/rocket.jpg")
    inliers = int(page.get_attribute(".hit[data-rank='1']", "data-inliers"))
    assert inliers > 0 and f"{inliers} inliers" in found[0]["text"]
    assert page.eval_on_selector(".hit[data-rank='1']", "e => e.classList.contains('verified')")
    # every other card says how it verified: fewer inliers, or no geometric match at all
    for hit in found[1:]:
        assert "no geometric match" in hit["text"] or "inliers" in hit["text"], hit
    # the query's outline is drawn over the first thumbnail
    page.wait_for_selector(".hit[data-rank='1'] svg.region polygon")
    points = [tuple(map(float, p.split(","))) for p in
              page.get_attribute(".hit[data-rank='1'] svg.region polygon", "points").split()]
    _, _, w, h = map(float, page.get_attribute(".hit[data-rank='1'] svg.region", "viewBox").split())
    with Image.open(DEMO / "rocket.jpg") as im:
        assert (w, h) == im.size  # the region is drawn in the original's pixels
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    assert len(points) == 4  # the query showed the rocket less an eighth on each side
    assert abs(min(xs) - w / 8) < 0.05 * w and abs(max(xs) - w * 7 / 8) < 0.05 * w, points
    assert abs(min(ys) - h / 8) < 0.05 * h and abs(max(ys) - h * 7 / 8) < 0.05 * h, points
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-verify.png"), full_page=True)
    # unticked: the same query searched again, without inlier counts
    page.uncheck("#verify")
    page.wait_for_function("() => { const t = document.getElementById('status').textContent;"
                           " return t.includes(' hits in ') && !t.includes('copy detection'); }")
    found = wait_for_results(page, "/rocket.jpg")
    assert all("inliers" not in h["text"] and "geometric" not in h["text"] for h in found)
    assert page.query_selector_all("svg.region") == []
    assert page.errors == []


def test_copy_detection_is_off_for_an_index_without_keypoints(page, tmp_path, gallery):
    idx = tmp_path / "idx"
    with Index.create(idx, "cnn", keypoints=None) as ix:
        ix.add(gallery["photos"], jobs=1)
    with LiveServer(idx) as s:
        page.goto(s.url + "/")
        page.wait_for_function("() => document.getElementById('index-info').textContent.includes('8 images')")
        assert page.is_disabled("#verify")
        assert "--keypoints sift" in page.get_attribute("label.verify", "title")
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


# -- the duplicates view ------------------------------------------------------------------
PLANTED = ("cat", "rocket")  # each gets a copy resized to 60% and re-saved at JPEG quality 70
DUPS_LOADED = "() => { const imgs = [...document.querySelectorAll('.dup-member img')];" \
              " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }"


@pytest.fixture(scope="module")
def dup_gallery(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("web-dups")
    photos = base / "photos"
    photos.mkdir()
    for p in sorted(DEMO.glob("*.jpg")):
        shutil.copy(p, photos / p.name)
    for name in PLANTED:
        with Image.open(DEMO / f"{name}.jpg") as im:
            small = im.resize((round(im.width * 0.6), round(im.height * 0.6)), Image.LANCZOS)
            small.save(photos / f"{name}-small.jpg", quality=70)
    idx = base / "idx"
    with Index.create(idx, "cnn") as ix:
        ix.add(photos, jobs=1)
    return {"photos": photos, "index": idx}


@pytest.fixture(scope="module")
def dup_server(dup_gallery):
    with LiveServer(dup_gallery["index"]) as s:
        yield s


@pytest.fixture(scope="module")
def dup_token_server(dup_gallery):
    with LiveServer(dup_gallery["index"], "--token", TOKEN) as s:
        yield s


def dup_groups(page) -> list[dict]:
    page.wait_for_function(DUPS_LOADED)
    return page.eval_on_selector_all(
        ".dup-group", "gs => gs.map(g => ({keeper: g.dataset.keeper, members: [...g.querySelectorAll('.dup-member')]"
        ".map(m => ({id: +m.dataset.id, path: m.dataset.path, score: +m.dataset.score, role: m.dataset.role,"
        " keeperClass: m.classList.contains('keeper'), text: m.innerText}))}))")


def test_duplicates_view_shows_the_planted_groups(page, dup_server, dup_gallery):
    photos = dup_gallery["photos"]
    page.goto(dup_server.url + "/")
    page.wait_for_function("() => document.getElementById('index-info').textContent.includes('10 images')")
    assert page.is_hidden("#dup-view")
    page.click("#tab-duplicates")
    page.wait_for_function("() => document.querySelectorAll('.dup-group').length === 2")
    groups = dup_groups(page)
    assert page.url.endswith("#duplicates")
    assert page.is_hidden("#search-view") and page.is_visible("#dup-view")
    assert "2 groups" in page.inner_text("#dup-status") and "server default" in page.inner_text("#dup-status")
    assert [g["keeper"] for g in groups] == [str(photos / f"{n}.jpg") for n in PLANTED]
    for name, g in zip(PLANTED, groups):
        keeper, copy = g["members"]
        assert keeper["path"] == g["keeper"] and keeper["role"] == "keeper" and keeper["keeperClass"]
        assert copy["path"] == str(photos / f"{name}-small.jpg") and copy["role"] == "duplicate"
        assert not copy["keeperClass"] and 0.8 < copy["score"] < 1
        assert "KEEP" in keeper["text"].upper() and f"{copy['score']:.3f}" in copy["text"]
        for m in (keeper, copy):
            with Image.open(m["path"]) as im:
                assert f"{im.width}\u00d7{im.height}" in m["text"]
            assert f"{round(os.path.getsize(m['path']) / 1024)} KB" in m["text"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-duplicates.png"), full_page=True)

    # a stricter threshold keeps only the closer pair, and goes into the (bookmarkable) URL
    page.fill("#dup-threshold", "0.95")
    page.click("#dup-find")
    page.wait_for_function("() => document.getElementById('dup-status').textContent.includes('threshold 0.950')")
    assert [g["keeper"] for g in dup_groups(page)] == [str(photos / "cat.jpg")]
    assert page.url.endswith("#duplicates&threshold=0.95")

    # clicking a thumbnail searches from it, in the search view
    small = page.get_attribute(".dup-member[data-role='duplicate']", "data-id")
    page.click(".dup-member[data-role='duplicate']")
    found = wait_for_results(page, "/cat-small.jpg")
    assert found[0]["id"] == int(small) and page.url.endswith(f"#id={small}")
    assert page.is_visible("#search-view") and page.is_hidden("#dup-view")
    assert found[1]["path"] == str(photos / "cat.jpg")
    # back: the duplicates view again, as it was
    page.go_back()
    page.wait_for_selector("#dup-view", state="visible")
    assert page.input_value("#dup-threshold") == "0.95" and len(dup_groups(page)) == 1
    # the Search tab returns to the search as it was
    page.click("#tab-search")
    page.wait_for_selector("#search-view", state="visible")
    assert page.url.endswith(f"#id={small}") and hits(page)[0]["id"] == int(small)
    # the bookmark opens straight into the view (reload: a fresh page, not a same-page hash change)
    page.goto(dup_server.url + "/#duplicates&threshold=0.95")
    page.reload()
    page.wait_for_function("() => document.querySelectorAll('.dup-group').length === 1")
    assert page.input_value("#dup-threshold") == "0.95" and page.is_hidden("#search-view")
    page.click("#tab-search")
    page.wait_for_selector("#search-view", state="visible")
    assert "#" not in page.url and page.is_hidden("#dup-view")
    assert page.errors == []


def test_duplicates_page_with_a_token(page, dup_token_server, dup_gallery):
    page.goto(dup_token_server.url + "/duplicates")  # redirected to the page's duplicates view
    page.wait_for_selector("#token-form", state="visible")
    assert page.url.endswith("/#duplicates") and page.is_visible("#dup-view")
    assert "[unauthorized]" in page.inner_text("#dup-status")
    page.fill("#token-input", TOKEN)
    page.click("#token-form button")
    page.wait_for_function("() => document.querySelectorAll('.dup-group').length === 2")
    groups = dup_groups(page)  # the thumbnails too: fetched with the header
    assert all(g["members"][0]["role"] == "keeper" for g in groups)
    assert page.is_hidden("#token-form")


def test_review_moves_picked_copies_to_the_trash_and_undoes(page, tmp_path):
    """Tick a copy, move it to the trash from the page, see the index follow, undo: the file is back."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted(DEMO.glob("*.jpg")):
        shutil.copy(p, photos / p.name)
    for name in PLANTED:
        with Image.open(DEMO / f"{name}.jpg") as im:
            im.convert("RGB").save(photos / f"{name}-q40.jpg", quality=40)
    with Index.create(tmp_path / "idx", "cnn") as ix:
        ix.add(photos, jobs=1)
    with LiveServer(tmp_path / "idx", "--token", TOKEN) as s:
        page.goto(s.url + f"/#duplicates&token={TOKEN}")
        page.wait_for_function("() => document.querySelectorAll('.dup-group').length === 2")
        assert page.is_disabled("#dup-trash") and "0 selected" in page.inner_text("#dup-picked")
        copy = photos / f"{PLANTED[0]}-q40.jpg"
        box = f".dup-cell:has(.dup-member[data-path='{copy}']) .pick-box"
        page.check(box)
        assert "1 selected" in page.inner_text("#dup-picked") and page.is_enabled("#dup-trash")
        page.click("#dup-trash")
        page.wait_for_function("() => document.getElementById('dup-done').textContent.includes('Moved 1 file')")
        page.wait_for_function("() => document.querySelectorAll('.dup-group').length === 1")
        assert not copy.exists() and list((tmp_path / "idx" / "trash").rglob(copy.name))
        assert page.is_visible("#dup-undo")
        page.click("#dup-undo")
        page.wait_for_function("() => document.getElementById('dup-done').textContent.includes('Put back 1 file')")
        page.wait_for_function("() => document.querySelectorAll('.dup-group').length === 2")
        assert copy.exists() and page.is_hidden("#dup-undo")
        # the level is a choice on the page, and goes into the URL
        page.select_option("#dup-level", "exact")
        page.wait_for_function("() => document.getElementById('dup-status').textContent.includes('level exact')")
        assert page.url.endswith("#duplicates&level=exact")
        assert page.eval_on_selector_all(".dup-group", "gs => gs.length") == 0
    assert page.errors == []
