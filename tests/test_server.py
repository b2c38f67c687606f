"""The HTTP API, served for real by `lookalike serve` (uvicorn in a subprocess) and used over HTTP."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

pytest.importorskip("fastapi", reason="the server tests need the 'server' extra: pip install 'lookalike[server]'")
httpx = pytest.importorskip("httpx")

from PIL import Image  # noqa: E402

from lookalike import Index, verify as local  # noqa: E402  (lookalike.local is now lookalike.verify)

from .conftest import DEMO, ODD, make_pattern_images, png_bomb  # noqa: E402
from .live_server import LiveServer, raw_request  # noqa: E402

MAX_UPLOAD = 1_000_000
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> dict:
    """An index of the demo photos plus two files that must not be served:
    a symlink to a file outside the root, and a file deleted after indexing."""
    base = tmp_path_factory.mktemp("server")
    photos = base / "photos"
    photos.mkdir()
    for p in sorted(DEMO.glob("*.jpg")):
        shutil.copy(p, photos / p.name)
    outside = base / "outside"
    outside.mkdir()
    shutil.copy(ODD / "ok_rgb.jpg", outside / "secret.jpg")
    (photos / "zz-link.jpg").symlink_to(outside / "secret.jpg")
    Image.open(DEMO / "coffee.jpg").transpose(Image.FLIP_LEFT_RIGHT).save(photos / "zz-gone.jpg")
    idx = base / "idx"
    with Index.create(idx, "cnn") as ix:
        report = ix.add(photos, jobs=1)
        assert report.added == 10, report
        ids = {os.path.basename(h.path): h.id for h in ix.search(DEMO / "cat.jpg", k=None)}
    (photos / "zz-gone.jpg").unlink()
    return {"base": base, "photos": photos, "index": idx, "ids": ids}


@pytest.fixture(scope="module")
def server(gallery):
    with LiveServer(gallery["index"], "--max-upload", MAX_UPLOAD) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def token_server(gallery):
    # the token comes from the environment here; --token is the same option
    with LiveServer(gallery["index"], env={"LOOKALIKE_TOKEN": TOKEN}) as s:
        yield s


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def upload(client, data: bytes, name: str = "q.jpg", field: str = "image", k: int = 5, **kw) -> httpx.Response:
    return client.post("/api/search", params={"k": k}, files={field: (name, data, "application/octet-stream")}, **kw)


# -- happy path -------------------------------------------------------------------------
def test_health_info_stats(client, gallery):
    h = client.get("/api/health")
    assert h.status_code == 200 and h.json()["status"] == "ok" and h.json()["files"] == 10
    info = client.get("/api/info").json()
    assert info["files"] == 10 and info["manifest"]["extractor"]["name"] == "cnn"
    assert info["roots"] == [str(gallery["photos"])]
    assert info["server"]["max_upload"] == MAX_UPLOAD and info["server"]["token_required"] is False
    stats = client.get("/api/stats").json()
    assert stats["files"] == 10 and stats["requests"] >= 2 and "search_ms_mean" in stats


def test_search_by_upload_finds_the_original_first(client, gallery):
    r = client.post("/api/search?k=4", files={"image": ("cat.jpg", (DEMO / "cat.jpg").read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["k"] == 4 and body["query"] == {
        "kind": "upload", "filename": "cat.jpg", "width": 451, "height": 300, "id": None, "path": None}
    hits = body["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert hits[0]["path"] == str(gallery["photos"] / "cat.jpg") and hits[0]["score"] > 0.999
    assert hits[0]["id"] == gallery["ids"]["cat.jpg"]
    assert all(set(h) == {"rank", "id", "path", "score", "distance", "copy_score", "inliers", "region"} for h in hits)
    assert all(h["inliers"] is None and h["region"] is None for h in hits)  # not verified
    assert body["verified"] is False and body["candidates"] is None
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_search_by_id(client, gallery):
    cat = gallery["ids"]["cat.jpg"]
    body = client.get(f"/api/search/{cat}", params={"k": 3}).json()
    assert body["query"]["kind"] == "id" and body["query"]["path"] == str(gallery["photos"] / "cat.jpg")
    assert [h["id"] for h in body["hits"]][0] == cat and len(body["hits"]) == 3
    # every hit can be searched from in turn (what a click on the page does)
    for hit in body["hits"]:
        assert client.get(f"/api/search/{hit['id']}?k=1").json()["hits"][0]["id"] == hit["id"]


# search by id goes through the index's own search, as `lookalike search` does: the ANN
# structure of a local index, the whole collection of a Milvus one
def _cli(*args) -> str:
    out = subprocess.run([sys.executable, "-m", "lookalike.cli", *map(str, args)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _cli_hits(folder, k: int, *where) -> dict[str, list[dict]]:
    """``lookalike search FOLDER ... --json``: each image's hits, by its path."""
    lines = _cli("search", folder, *where, "-k", k, "--json").splitlines()
    return {obj["query"]: obj["hits"] for obj in map(json.loads, lines)}


def _same_hits(api: list[dict], cli: list[dict]) -> None:
    assert [(h["path"], h["id"], h["score"]) for h in api] == [(h["path"], h["id"], h["score"]) for h in cli]


def test_search_by_id_uses_the_ann_structure(tmp_path):
    folder = tmp_path / "in"
    paths = make_pattern_images(folder, 40)
    shutil.copy(paths[3], folder / "img0003-copy.jpg")  # one vector row, two files
    idx = tmp_path / "idx"
    _cli("index", folder, "--index", idx, "-e", "phash", "--ann", "hnsw", "-j", "1", "-q")
    with Index.open(idx) as ix:
        assert ix.ann_kind() == "hnsw"
    k = 8
    expected = _cli_hits(folder, k, "--index", idx)
    assert len(expected) == 41
    with LiveServer(idx) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        for path, want in expected.items():
            file_id = next(h["id"] for h in want if h["path"] == path)
            body = c.get(f"/api/search/{file_id}", params={"k": k}).json()
            assert body["query"]["path"] == path and len(body["hits"]) == k
            _same_hits(body["hits"], want)


def test_search_by_id_on_milvus_searches_the_whole_collection(tmp_path, tmp_path_factory):
    from lookalike.backends import path_id, shard_filter

    from .milvus_targets import lite_problem as milvus_lite_problem

    problem = milvus_lite_problem(tmp_path_factory)
    if problem:
        pytest.skip(problem)
    folder = tmp_path / "in"
    make_pattern_images(folder, 24)
    db = tmp_path / "m.db"
    for shard in ("0/2", "1/2"):  # two indexers fill one collection, each with its own local catalog
        _cli("index", folder, "--milvus", db, "--shard", shard, "-e", "phash", "-j", "1", "-q")
    local_catalog = f"{db}.lookalike/lookalike.shard-0-of-2"
    k = 10
    expected = _cli_hits(folder, k, "--milvus", db, "--index", local_catalog)
    mine = [p for p in expected if shard_filter((0, 2))(p)]
    assert 0 < len(mine) < 24
    with LiveServer(local_catalog, "--milvus", db) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        for path in mine:
            body = c.get(f"/api/search/{path_id(path)}", params={"k": k}).json()
            assert body["query"]["path"] == path and body["hits"][0]["path"] == path
            _same_hits(body["hits"], expected[path])
            assert any(h["path"] not in mine for h in body["hits"])  # files only the collection knows


def test_k_bounds(client, gallery):
    cat = gallery["ids"]["cat.jpg"]
    assert len(client.get(f"/api/search/{cat}?k=1000").json()["hits"]) == 10
    for bad in ("0", "-1", "1001", "x", "1e3"):
        assert_error(client.get(f"/api/search/{cat}?k={bad}"), 422, "invalid_request")


def test_file_info_thumbnail_original(client, gallery):
    cat = gallery["ids"]["cat.jpg"]
    meta = client.get(f"/api/files/{cat}").json()
    assert meta["path"] == str(gallery["photos"] / "cat.jpg") and (meta["width"], meta["height"]) == (451, 300)

    orig = client.get(f"/api/files/{cat}/original")
    assert orig.status_code == 200 and orig.headers["content-type"] == "image/jpeg"
    assert orig.content == (gallery["photos"] / "cat.jpg").read_bytes()
    assert orig.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in orig.headers["content-security-policy"]

    th = client.get(f"/api/files/{cat}/thumbnail", params={"size": 100})
    assert th.status_code == 200 and th.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(th.content))
    assert img.format == "JPEG" and max(img.size) == 100
    again = client.get(f"/api/files/{cat}/thumbnail", params={"size": 100}, headers={"If-None-Match": th.headers["etag"]})
    assert again.status_code == 304
    assert_error(client.get(f"/api/files/{cat}/thumbnail?size=5000"), 422, "invalid_request")


def test_cors_is_off_and_security_headers_are_on(client):
    r = client.get("/api/health", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    pre = client.options("/api/search", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_cors_when_asked_for(gallery):
    origin = "http://app.example"
    with LiveServer(gallery["index"], "--cors-origin", origin) as s:
        ok = httpx.get(s.url + "/api/health", headers={"Origin": origin})
        assert ok.headers["access-control-allow-origin"] == origin
        pre = httpx.options(s.url + "/api/search", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == origin
        other = httpx.get(s.url + "/api/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_foreign_host_header_is_refused(server):
    # a page on another site that rebinds its DNS name to 127.0.0.1 cannot read the API
    r = httpx.get(server.url + "/api/health", headers={"Host": "attacker.example"})
    assert_error(r, 400, "invalid_host")


def test_errors_have_one_shape(client):
    assert_error(client.get("/api/nope"), 404, "not_found")
    assert_error(client.get("/api/files/424242"), 404, "not_found")
    assert_error(client.delete("/api/health"), 405, "method_not_allowed")
    assert_error(client.get("/api/duplicates?threshold=2"), 422)


def test_duplicates_page_redirects_to_the_page_view(client, token_server):
    r = client.get("/duplicates", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "./#duplicates"
    page = client.get("/duplicates", follow_redirects=True)  # the page, which opens its duplicates view
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="dup-view"' in page.text
    # the page shell needs no token (the data it then asks for does)
    r = httpx.get(token_server.url + "/duplicates", follow_redirects=True)
    assert r.status_code == 200 and 'id="dup-view"' in r.text


def test_duplicates_api(client, gallery):
    r = client.get("/api/duplicates")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["k"] == 10 and -1 <= body["threshold"] <= 1 and body["took_ms"] >= 0
    for g in body["groups"]:
        assert g["keeper"] == g["members"][0]["path"] and len(g["members"]) >= 2
        assert all(m["score"] >= body["threshold"] - 1e-6 for m in g["members"])
    assert body["level"] == "near" and body["keep"] == "largest"
    assert all(g["level"] == "near" for g in body["groups"])
    everything = client.get("/api/duplicates?threshold=-1&level=edited").json()["groups"]
    assert len(everything) == 1 and len(everything[0]["members"]) >= 8


def test_openapi_schema(client):
    schema = client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    for path in ("/api/search", "/api/search/{file_id}", "/api/files/{file_id}/thumbnail",
                 "/api/files/{file_id}/original", "/api/info", "/api/stats", "/api/health", "/api/duplicates"):
        assert path in schema["paths"], path
    upload_body = schema["paths"]["/api/search"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload_body
    for path, method in (("/api/search", "post"), ("/api/search/{file_id}", "get")):
        params = {p["name"]: p for p in schema["paths"][path][method]["parameters"]}
        assert params["verify"]["schema"]["type"] == "boolean", params["verify"]
        assert params["candidates"]["schema"]["maximum"] == 500 and params["candidates"]["schema"]["minimum"] == 1
    hit = schema["components"]["schemas"]["Hit"]["properties"]
    assert "inliers" in hit and "region" in hit
    assert "verified" in schema["components"]["schemas"]["SearchResponse"]["properties"]


# -- copy detection: verify=true ------------------------------------------------------------
def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _cat_copies() -> dict[str, tuple[bytes, tuple[int, int, int, int]]]:
    """Edited copies of cat.jpg, each with the box of the original it shows (x0, y0, x1, y1)."""
    with Image.open(DEMO / "cat.jpg") as im:
        cat = im.convert("RGB")
    w, h = cat.size
    box = (w // 10, h // 5, w * 7 // 10, h * 4 // 5)
    return {
        "rot90": (_jpeg(cat.rotate(90, expand=True)), (0, 0, w, h)),
        "crop": (_jpeg(cat.crop(box)), box),
        "rot90+crop": (_jpeg(cat.crop(box).rotate(90, expand=True)), box),
    }


def verify_upload(client, data: bytes, k: int = 5, **params) -> httpx.Response:
    return client.post("/api/search", params={"k": k, "verify": "true", **params},
                       files={"image": ("copy.jpg", data, "image/jpeg")})


@pytest.mark.parametrize("edit", ["rot90", "crop", "rot90+crop"])
def test_verify_finds_an_edited_copy_and_where_it_is(client, gallery, edit):
    data, (x0, y0, x1, y1) = _cat_copies()[edit]
    r = verify_upload(client, data, k=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verified"] is True and body["candidates"] == 50
    hits = body["hits"]
    top = hits[0]
    assert top["id"] == gallery["ids"]["cat.jpg"], [(h["path"], h["inliers"]) for h in hits]
    assert top["inliers"] >= local.MIN_INLIERS and top["rank"] == 1
    # all 10 hits are among the 50 candidates, so all were verified; the unrelated ones far less well
    assert all(isinstance(h["inliers"], int) for h in hits)
    assert all(h["inliers"] < top["inliers"] for h in hits[1:]), [(h["path"], h["inliers"]) for h in hits]
    # the outline of the query, in the original's pixels, covers the part of the cat the copy shows
    region = top["region"]
    assert len(region) == 4 and all(len(p) == 2 for p in region)
    xs, ys = [p[0] for p in region], [p[1] for p in region]
    tol = 0.05 * 451
    assert abs(min(xs) - x0) < tol and abs(max(xs) - x1) < tol, region
    assert abs(min(ys) - y0) < tol and abs(max(ys) - y1) < tol, region


def test_without_verify_hits_carry_no_inliers(client, gallery):
    data, _ = _cat_copies()["rot90+crop"]
    body = upload(client, data, k=10).json()
    assert body["verified"] is False and body["candidates"] is None
    assert all(h["inliers"] is None and h["region"] is None for h in body["hits"])
    # verify=false is the same as leaving it out
    body = client.post("/api/search", params={"k": 10, "verify": "false"}, files={"image": ("q.jpg", data)}).json()
    assert body["verified"] is False and all(h["inliers"] is None for h in body["hits"])


def test_verify_checks_only_the_candidates(client, gallery):
    data, _ = _cat_copies()["crop"]
    hits = verify_upload(client, data, k=10, candidates=3).json()["hits"]
    assert len(hits) == 10
    assert all(h["inliers"] is not None for h in hits[:3]) and all(h["inliers"] is None for h in hits[3:])
    assert hits[0]["id"] == gallery["ids"]["cat.jpg"] and hits[0]["inliers"] > 0


def test_verify_by_id(client, gallery):
    cat = gallery["ids"]["cat.jpg"]
    r = client.get(f"/api/search/{cat}", params={"k": 4, "verify": "true"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verified"] is True and body["query"]["path"] == str(gallery["photos"] / "cat.jpg")
    top = body["hits"][0]
    assert top["id"] == cat and top["inliers"] > 100  # itself: most keypoints match
    assert all(h["inliers"] < top["inliers"] for h in body["hits"][1:])
    # the outline of the whole image, in its own pixels: its corners
    for (x, y), (ex, ey) in zip(top["region"], [(0, 0), (451, 0), (451, 300), (0, 300)]):
        assert abs(x - ex) < 5 and abs(y - ey) < 5, top["region"]
    # without verify: the stored vector, no inliers
    plain = client.get(f"/api/search/{cat}", params={"k": 4}).json()
    assert plain["verified"] is False and plain["hits"][0]["id"] == cat and plain["hits"][0]["inliers"] is None


def test_verify_by_id_reads_only_files_it_may_read(client, gallery):
    # verification decodes the file itself, so the rules for serving files apply
    assert_error(client.get(f"/api/search/{gallery['ids']['zz-gone.jpg']}?verify=true"), 404, "file_missing")
    assert_error(client.get(f"/api/search/{gallery['ids']['zz-link.jpg']}?verify=true"), 403, "outside_roots")
    assert_error(client.get("/api/search/424242?verify=true"), 404, "not_found")


def test_verify_by_id_of_a_file_that_no_longer_decodes(tmp_path, photos):
    idx = tmp_path / "idx"
    with Index.create(idx, "cnn") as ix:
        ix.add(photos, jobs=1)
        cat = ix.search(photos / "cat.jpg", k=1)[0].id
    (photos / "cat.jpg").write_bytes(b"no longer a JPEG")  # changed on disk after indexing
    with LiveServer(idx) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        err = assert_error(c.get(f"/api/search/{cat}?verify=true"), 422, "not_an_image")
        assert f"file {cat} cannot be decoded any more" in err["message"]
        assert c.get(f"/api/search/{cat}").json()["hits"][0]["id"] == cat  # the stored vector still searches


def test_verify_parameters_are_checked(client, gallery):
    cat = gallery["ids"]["cat.jpg"]
    data = (DEMO / "cat.jpg").read_bytes()
    for bad in ("0", "-1", "501", "x", "2.5"):
        err = assert_error(client.get(f"/api/search/{cat}?verify=true&candidates={bad}"), 422, "invalid_request")
        assert "candidates" in err["message"]
        assert_error(verify_upload(client, data, candidates=bad), 422, "invalid_request")
    assert_error(client.get(f"/api/search/{cat}?verify=perhaps"), 422, "invalid_request")
    assert client.get(f"/api/search/{cat}?verify=true&candidates=500&k=2").status_code == 200


def test_verify_needs_an_index_with_keypoints(tmp_path, photos):
    idx = tmp_path / "idx"
    with Index.create(idx, "cnn", keypoints=None) as ix:
        ix.add(photos, jobs=1)
        cat = next(h.id for h in ix.search(photos / "cat.jpg", k=1))
    data = (DEMO / "cat.jpg").read_bytes()
    with LiveServer(idx) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        assert c.get("/api/info").json()["manifest"]["local"] is None
        for r in (verify_upload(c, data), c.get(f"/api/search/{cat}?verify=true")):
            err = assert_error(r, 409, "no_keypoints")
            assert "--keypoints sift" in err["message"]
        # a bad upload is still refused for what it is only once keypoints exist: the index is checked first
        assert_error(verify_upload(c, b"not an image"), 409, "no_keypoints")
        assert upload(c, data).json()["hits"][0]["id"] == cat  # plain search works
        assert c.get(f"/api/search/{cat}").json()["hits"][0]["id"] == cat


# -- bad uploads ---------------------------------------------------------------------------
def test_upload_not_an_image(client):
    assert_error(upload(client, (ODD / "text.jpg").read_bytes()), 422, "not_an_image")
    assert_error(verify_upload(client, (ODD / "text.jpg").read_bytes()), 422, "not_an_image")
    assert_error(upload(client, b"%PDF-1.4 not really"), 422, "not_an_image")


def test_upload_truncated(client):
    assert_error(upload(client, (ODD / "truncated.jpg").read_bytes()), 422, "truncated")


def test_upload_empty(client):
    assert_error(upload(client, b""), 422, "empty")


def test_upload_decompression_bomb(client, tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png", 50_000, 50_000).read_bytes()  # 2.5 gigapixels in 100 bytes
    assert len(bomb) < 200
    err = assert_error(upload(client, bomb, "bomb.png"), 413, "too_large")
    assert "pixels" in err["message"]


def test_upload_over_the_size_limit(client):
    big = os.urandom(MAX_UPLOAD + 1)
    assert_error(upload(client, big), 413, "upload_too_large")
    huge = os.urandom(3 * MAX_UPLOAD)  # refused from Content-Length, before the body is parsed
    assert_error(upload(client, huge), 413, "upload_too_large")


def test_upload_over_the_size_limit_chunked(client):
    boundary = "lookalike-test-boundary"

    def body():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.jpg\"\r\n"
               "Content-Type: image/jpeg\r\n\r\n").encode()
        for _ in range(40):
            yield b"\xff" * 65536  # 2.6 MB without a Content-Length
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post("/api/search", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert_error(r, 413, "upload_too_large")
    assert client.get("/api/health").status_code == 200  # and the server goes on


def test_upload_wrong_field_or_no_file(client):
    err = assert_error(upload(client, (DEMO / "cat.jpg").read_bytes(), field="file"), 422, "invalid_request")
    assert "image" in err["message"]
    assert_error(client.post("/api/search"), 422, "invalid_request")
    r = client.post("/api/search", json={"image": "cat.jpg"})
    assert 400 <= r.status_code < 500 and "error" in r.json()
    r = client.post("/api/search", data={"image": "/etc/passwd"})  # a path as text: never read
    assert_error(r, 422)


@pytest.mark.parametrize("name", sorted(p.name for p in ODD.iterdir() if p.name != "README.md"))
def test_odd_uploads_never_fail_the_server(client, name):
    r = upload(client, (ODD / name).read_bytes(), name)
    assert r.status_code in (200, 413, 422), (name, r.status_code, r.text)
    if r.status_code != 200:
        assert_error(r, r.status_code)


# -- traversal and files outside the roots -----------------------------------------------------
TRAVERSAL = [
    "/api/files/../../../../etc/passwd",
    "/api/files/..%2F..%2F..%2Fetc%2Fpasswd/original",
    "/api/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd/original",
    "/api/files/../etc/passwd/thumbnail",
    "/api/files/-1/original",
    "/api/files/0/original",
    "/api/files/1.5/original",
    "/api/files/0x1/original",
    "/api/files/99999999999999999999999999999999/original",
    "/api/files/9223372036854775808/thumbnail",
    "/api/files/9223372036854775807/original",
    "/api/files/%00/original",
    "/api/files//etc/passwd",
    "/api/files/1/original/../../../../etc/passwd",
    "/api/search/..%2f..%2fetc%2fpasswd",
    "/static/../../../../etc/passwd",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static//etc/passwd",
]


@pytest.mark.parametrize("target", TRAVERSAL)
def test_no_traversal(server, target):
    status, body = raw_request(server.port, target)
    assert status in (400, 404, 422), (target, status, body[:200])
    assert b"root:" not in body
    if status != 400 or body.startswith(b"{"):
        err = json.loads(body)["error"]
        assert set(err) == {"code", "message"}


def test_query_strings_cannot_choose_the_file(client, gallery):
    cat = gallery["ids"]["cat.jpg"]
    r = client.get(f"/api/files/{cat}/original", params={"path": "/etc/passwd", "file": "../../etc/passwd"})
    assert r.content == (gallery["photos"] / "cat.jpg").read_bytes()


def test_symlink_to_outside_the_roots_is_not_served(client, gallery):
    link = gallery["ids"]["zz-link.jpg"]
    for kind in ("original", "thumbnail"):
        assert_error(client.get(f"/api/files/{link}/{kind}"), 403, "outside_roots")
    # it is still searchable: only its bytes are withheld
    assert client.get(f"/api/search/{link}?k=1").json()["hits"][0]["id"] == link


def test_file_deleted_after_indexing(client, gallery):
    gone = gallery["ids"]["zz-gone.jpg"]
    assert_error(client.get(f"/api/files/{gone}/original"), 404, "file_missing")
    assert_error(client.get(f"/api/files/{gone}/thumbnail"), 404, "file_missing")


@pytest.mark.parametrize("how", ["symlink", "swap"])
def test_root_replaced_after_indexing_serves_nothing(tmp_path, photos, how):
    """The root folder is replaced after indexing, by a symlink to (or a rename of) another
    folder holding files of the same names: none of that folder's bytes are served."""
    idx = tmp_path / "idx"
    with Index.create(idx, "phash", keypoints="sift") as ix:
        ix.add(photos, jobs=1)
        ids = {os.path.basename(h.path): h.id for h in ix.search(DEMO / "cat.jpg", k=None)}
    other = tmp_path / "other"
    other.mkdir()
    for name in ids:  # same names, other bytes
        Image.open(ODD / "ok_rgb.jpg").rotate(len(name)).save(other / name)
    foreign = {name: (other / name).read_bytes() for name in ids}
    cat = ids["cat.jpg"]
    with LiveServer(idx) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.get(f"/api/files/{cat}/original")
        assert r.status_code == 200 and r.content == (DEMO / "cat.jpg").read_bytes()
        os.rename(photos, tmp_path / "photos-before")
        if how == "symlink":
            photos.symlink_to(other, target_is_directory=True)
        else:
            os.rename(other, photos)
        for name, file_id in ids.items():
            for kind in ("original", "thumbnail"):
                r = c.get(f"/api/files/{file_id}/{kind}")
                err = assert_error(r, 403, "outside_roots")
                assert r.content != foreign[name]
            assert "changed since it was indexed" in err["message"] and "lookalike index" in err["message"]
        assert_error(c.get(f"/api/search/{cat}?verify=true"), 403, "outside_roots")
        assert c.get(f"/api/search/{cat}?k=1").json()["hits"][0]["id"] == cat  # the stored vector still searches
        # as the message says: indexing the root again records it as it is now
        out = subprocess.run([sys.executable, "-m", "lookalike.cli", "index", str(photos), "--index", str(idx),
                              "-q", "-j", "1"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        with Index.open(idx) as ix:
            now = {os.path.basename(h.path): h.id for h in ix.search(DEMO / "cat.jpg", k=None)}
        r = c.get(f"/api/files/{now['cat.jpg']}/original")
        assert r.status_code == 200 and r.content == foreign["cat.jpg"]
    assert "Traceback" not in s.log, s.log


def test_files_of_a_root_that_stayed_put_are_served(tmp_path, photos):
    """Another root of the same index replaced by a symlink does not stop the files of this one."""
    idx = tmp_path / "idx"
    second = tmp_path / "second"
    make_pattern_images(second, 2)
    with Index.create(idx, "phash") as ix:
        ix.add(photos, jobs=1)
        ix.add(second, jobs=1)
        ids = {os.path.basename(h.path): h.id for h in ix.search(DEMO / "cat.jpg", k=None)}
    make_pattern_images(tmp_path / "decoy", 2, seed=1)  # the same names, other pictures
    os.rename(second, tmp_path / "second-before")
    second.symlink_to(tmp_path / "decoy", target_is_directory=True)
    with LiveServer(idx) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.get(f"/api/files/{ids['cat.jpg']}/original")
        assert r.status_code == 200 and r.content == (DEMO / "cat.jpg").read_bytes()
        assert c.get(f"/api/files/{ids['cat.jpg']}/thumbnail").status_code == 200
        r = c.get(f"/api/files/{ids['img0000.jpg']}/original")
        assert_error(r, 403, "outside_roots")
        assert r.content != (tmp_path / "decoy" / "img0000.jpg").read_bytes()


# -- token -----------------------------------------------------------------------------------
def test_token_required_when_set(token_server, gallery):
    url = token_server.url
    cat = gallery["ids"]["cat.jpg"]
    for path in ("/api/health", "/api/info", "/api/stats", f"/api/search/{cat}", f"/api/files/{cat}/original",
                 f"/api/files/{cat}/thumbnail", "/openapi.json", "/api/duplicates", "/api/nope"):
        r = httpx.get(url + path)
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
        assert_error(httpx.get(url + path, headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
        assert_error(httpx.get(url + path, headers={"Authorization": TOKEN}), 401, "unauthorized")
        assert_error(httpx.get(url + path, params={"token": TOKEN}), 401, "unauthorized")  # header only
    r = httpx.post(url + "/api/search", files={"image": ("cat.jpg", (DEMO / "cat.jpg").read_bytes())})
    assert_error(r, 401, "unauthorized")

    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(url + "/api/health", headers=auth).json()["status"] == "ok"
    assert httpx.get(url + "/api/info", headers=auth).json()["server"]["token_required"] is True
    r = httpx.post(url + "/api/search", headers=auth, files={"image": ("cat.jpg", (DEMO / "cat.jpg").read_bytes())})
    assert r.json()["hits"][0]["id"] == cat
    assert httpx.get(url + f"/api/files/{cat}/original", headers=auth).status_code == 200
    assert "bearer" in httpx.get(url + "/openapi.json", headers=auth).json()["components"]["securitySchemes"]
    # the page shell (no data of the index) loads without it, so it can ask for the token
    for path in ("/", "/static/app.js", "/static/style.css"):
        assert httpx.get(url + path).status_code == 200


def test_no_token_needed_when_unset(client, gallery):
    assert client.get(f"/api/search/{gallery['ids']['cat.jpg']}").status_code == 200


# -- concurrency ---------------------------------------------------------------------------------
def test_concurrent_searches_while_the_index_grows(tmp_path, photos):
    """Searches in parallel while another process adds files: no errors, and the new files show up."""
    idx = tmp_path / "idx"
    with Index.create(idx, "cnn") as ix:
        ix.add(photos, jobs=1)
    more = tmp_path / "more"
    make_pattern_images(more, 60, size=96)
    cat = (DEMO / "cat.jpg").read_bytes()
    with LiveServer(idx) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        first = c.get("/api/health").json()["files"]
        writer = subprocess.Popen([sys.executable, "-m", "lookalike.cli", "index", str(more), "--index", str(idx),
                                   "-q", "-j", "1", "--batch-size", "8"], stderr=subprocess.PIPE, text=True)
        statuses, seen, lock = [], set(), threading.Lock()

        def worker(i: int) -> None:
            with httpx.Client(base_url=s.url, timeout=60) as w:
                for j in range(12):
                    if j % 2:
                        r = w.post("/api/search?k=100", files={"image": ("cat.jpg", cat)})
                    else:
                        r = w.get("/api/search/1?k=100")
                    with lock:
                        statuses.append(r.status_code)
                        if r.status_code == 200:
                            hits = r.json()["hits"]
                            assert len({h["id"] for h in hits}) == len(hits)  # one consistent snapshot
                            seen.add(len(hits))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert writer.wait(120) == 0, writer.stderr.read()
        assert statuses and set(statuses) == {200}, statuses
        assert c.get("/api/health").json()["files"] == first + 60
        assert len(c.get("/api/search/1?k=100").json()["hits"]) == first + 60
    assert "Traceback" not in s.log, s.log


def test_answers_are_not_held_back_by_nagle(client):
    """Each answer leaves at once (TCP_NODELAY): without it, keep-alive requests take ~40 ms each."""
    import statistics
    import time

    times = []
    for _ in range(30):
        start = time.perf_counter()
        assert client.get("/api/health").status_code == 200
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.02, times


# -- CLI ----------------------------------------------------------------------------------------
def test_serve_without_the_server_extra_says_what_to_install(tmp_path, gallery):
    shadow = tmp_path / "shadow"
    (shadow / "fastapi").mkdir(parents=True)
    (shadow / "fastapi" / "__init__.py").write_text("raise ImportError(\"No module named 'fastapi'\")\n")
    env = {**os.environ, "PYTHONPATH": str(shadow)}
    out = subprocess.run([sys.executable, "-m", "lookalike.cli", "serve", "--index", str(gallery["index"])],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1
    assert "pip install 'lookalike[server]'" in out.stderr and "fastapi" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_refuses_a_folder_that_is_not_an_index(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lookalike.cli", "serve", "--index", str(tmp_path), "--port", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "not a lookalike index" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("how", ["option", "env"])
@pytest.mark.parametrize("token", ["", "   "])
def test_serve_refuses_an_empty_token(tmp_path, how, token):
    """An empty token must not quietly turn authentication off."""
    idx = tmp_path / "idx"
    make_pattern_images(tmp_path / "in", 2)
    with Index.create(idx, "phash") as ix:
        ix.add(tmp_path / "in", jobs=1)
    env = {k: v for k, v in os.environ.items() if k != "LOOKALIKE_TOKEN"}
    cmd = [sys.executable, "-m", "lookalike.cli", "serve", "--index", str(idx), "--port", "0"]
    if how == "option":
        cmd += ["--token", token]
    else:
        env["LOOKALIKE_TOKEN"] = token
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("lookalike serve started with an empty token")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "token is empty" in out.stderr, out.stderr
    assert "serving" not in out.stdout


def test_parse_size():
    from lookalike.server.app import parse_size

    assert parse_size("20MB") == 20 * 1024 * 1024
    assert parse_size("512k") == 512 * 1024 and parse_size("1GiB") == 1024**3 and parse_size("1000") == 1000
    for bad in ("", "12x", "-5", "0"):
        with pytest.raises(ValueError):
            parse_size(bad)


# -- schemathesis: generated requests against the OpenAPI schema find no server error ---------------
# schemathesis' pytest plugin (from_fixture) does not work with pytest 9, so its Python API is used:
# one hypothesis run per operation, at most MAX_EXAMPLES generated requests each.
MAX_EXAMPLES = 40
OPERATIONS = [
    ("GET", "/api/health"), ("GET", "/api/info"), ("GET", "/api/stats"), ("POST", "/api/search"),
    ("GET", "/api/search/{file_id}"), ("GET", "/api/files/{file_id}"),
    ("GET", "/api/files/{file_id}/thumbnail"), ("GET", "/api/files/{file_id}/original"),
    ("POST", "/api/undo"),  # this index has no undo logs: every call is refused
]
# operations with parameters also get invalid ones (negative mode)
FUZZ = [(m, p, "positive") for m, p in OPERATIONS] + [
    (m, p, "negative") for m, p in OPERATIONS if "{" in p or m == "POST" or p.endswith("thumbnail")]
# /api/duplicates is checked by test_duplicates_api; not fuzzed (a whole-index grouping per request).
# POST /api/duplicates/trash moves files: fuzzed in test_review.py on an index of its own.
NOT_FUZZED = {("GET", "/api/duplicates"), ("POST", "/api/duplicates/trash")}


@pytest.fixture(scope="module")
def api_schema(server):
    schemathesis = pytest.importorskip("schemathesis")
    return schemathesis.openapi.from_url(server.url + "/openapi.json")


def test_every_operation_is_fuzzed(api_schema):
    found = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert found == set(OPERATIONS) | NOT_FUZZED


@pytest.mark.parametrize("method,path,mode", FUZZ)
def test_schemathesis_finds_no_server_error(api_schema, method, path, mode):
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import positive_data_acceptance

    operation = api_schema[path][method]

    @given(case=operation.as_strategy(GenerationMode(mode)))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
              derandomize=True, database=None)
    def run(case):
        # every check (no 5xx, documented status codes, content types and response schemas,
        # invalid data refused), except that any schema-valid upload would be an image:
        # random bytes rightly get a 422
        case.call_and_validate(excluded_checks=[positive_data_acceptance], timeout=30)

    run()
