"""Dashboard pages through the real app on a SQLite file: runs list, run page, static files,
404s, and the login flow when an admin token is configured."""

from __future__ import annotations

import gzip
import json
import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import plotly
import pytest
from fastapi.testclient import TestClient

from collapsewatch_server.api.deps import SESSION_COOKIE
from collapsewatch_server.api.pages import LOGIN_FAILED
from collapsewatch_server.app import create_app
from collapsewatch_server.config import Settings
from collapsewatch_server.indicators import CATALOGUE
from collapsewatch_server.services import runs
from collapsewatch_web import assets, views
from tests.helpers import make_batch

ADMIN = "cw_admin_secret_for_tests"


def page_client(tmp_path: Path, admin_token: str | None = None) -> TestClient:
    settings = Settings(db_url=f"sqlite:///{tmp_path}/cw.db", admin_token=admin_token)
    return TestClient(create_app(settings))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with page_client(tmp_path) as c:
        yield c


def ingest(client: TestClient, batch: dict[str, Any], token: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = client.post("/api/v1/ingest", json=batch, headers=headers)
    assert r.status_code == 202, r.text


def run_data(html: str) -> dict[str, Any]:
    match = re.search(r'id="cw-run-data">(.*?)</script>', html, re.S)
    assert match, "run page without its embedded data"
    return json.loads(match.group(1))


def test_runs_page_lists_runs_with_links(client: TestClient) -> None:
    batch = make_batch(project="vision", name="resnet-a")
    ingest(client, batch)
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "resnet-a" in r.text
    assert f'href="/runs/{batch["run"]["run_id"]}"' in r.text
    assert 'class="badge status-running"' in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]


def test_runs_page_filters_by_project(client: TestClient) -> None:
    ingest(client, make_batch(project="a", name="in-a"))
    ingest(client, make_batch(project="b", name="in-b"))
    r = client.get("/", params={"project": "a"})
    assert r.status_code == 200
    assert "in-a" in r.text
    assert "in-b" not in r.text
    assert client.get("/", params={"project": "nope"}).status_code == 404


def test_runs_page_searches_names_and_shows_health_per_family(client: TestClient) -> None:
    ingest(client, make_batch(project="a", name="resnet-sick", probes=("fc1", "fc2", "fc3")))
    ingest(client, make_batch(project="a", name="vit-fine", probes=("fc1",)))
    r = client.get("/", params={"q": "RESNET"})
    assert "resnet-sick" in r.text
    assert "vit-fine" not in r.text
    assert 'title="Dead units: critical, 1 firing"' in r.text, "fc3 has 3 of 4 units dead"
    assert 'value="RESNET"' in r.text
    assert "No run matches" in client.get("/", params={"q": "nothing"}).text
    assert "<option>a</option>" in client.get("/").text


def test_compare_page_offers_the_runs_indicators_and_layers(client: TestClient) -> None:
    a = make_batch(name="lr-0.1", probes=("fc1", "fc2"))
    b = make_batch(name="lr-0.01", probes=("fc1", "head"))
    other = make_batch(name="elsewhere")
    for batch in (a, b, other):
        ingest(client, batch)
    ids = f"{a['run']['run_id']},{b['run']['run_id']}"
    r = client.get("/compare", params={"runs": ids, "probe": "head"})
    assert r.status_code == 200
    assert "lr-0.1" in r.text and "lr-0.01" in r.text
    data = json.loads(re.search(r'id="cw-compare-data">(.*?)</script>', r.text, re.S).group(1))
    assert data["runs"] == ids.split(",")
    assert data["indicator"] == "dead_fraction", "the first indicator of the catalogue"
    assert data["probe"] == "head"
    assert data["options"]["dead_fraction"] == ["fc1", "fc2", "head"]
    assert f'<option value="{other["run"]["run_id"]}">elsewhere (proj)</option>' in r.text
    assert client.get("/compare", params={"runs": "nope"}).status_code == 400
    assert client.get("/compare", params={"runs": str(uuid.uuid4())}).status_code == 404
    assert "Choose runs to compare" in client.get("/compare").text


def test_alerts_page_lists_firing_and_past_alerts_linking_to_the_run_at_its_step(
    client: TestClient,
) -> None:
    sick = make_batch(project="vision", name="sick", probes=("fc1", "fc2", "fc3"))
    ingest(client, sick)
    ingest(client, make_batch(project="other", name="elsewhere", probes=("fc1", "fc2", "fc3")))
    run_id = sick["run"]["run_id"]
    r = client.get("/alerts", params={"project": "vision"})
    assert r.status_code == 200
    firing = r.text.split('id="firing-table"')[1].split("</table>")[0]
    assert "sick" in firing and "elsewhere" not in firing
    events = r.text.split('id="events-table"')[1].split("</table>")[0]
    assert f'href="/runs/{run_id}?step=2&amp;indicator=dead_fraction"' in events
    assert "dead_fraction on fc3 is 0.75, above 0.5 for 3 points" in events
    # the project's rules with the editor; its runs to back-test on
    assert 'id="rule-form"' in r.text
    assert "default: dead_fraction" in r.text
    assert "above 0.5 for 3 points" in r.text
    assert f'<option value="{run_id}">sick' in r.text
    resolved = client.get("/alerts", params={"project": "vision", "state": "resolved"}).text
    assert "No alert event matches." in resolved
    assert "Nothing is firing" in resolved
    everything = client.get("/alerts", params={"severity": "bogus", "run_id": "x"}).text
    assert "elsewhere" in everything, "a filter that is no value filters nothing"
    assert "Choose a project above" in everything
    assert client.get("/alerts", params={"project": "nope"}).status_code == 404


def test_settings_page_lists_tokens_and_webhooks_without_secrets(client: TestClient) -> None:
    ingest(client, make_batch(project="vision"))
    token = client.post("/api/v1/projects/vision/tokens", json={"name": "cluster-a"}).json()
    hook = client.post(
        "/api/v1/projects/vision/webhooks",
        json={"name": "ml-alerts", "url": "http://127.0.0.1:9/hook", "format": "slack"},
    ).json()
    r = client.get("/projects/vision/settings")
    assert r.status_code == 200
    assert "cluster-a" in r.text and f"{token['prefix']}…" in r.text
    assert token["token"] not in r.text, "a token is shown once, when created"
    assert "ml-alerts" in r.text and "http://127.0.0.1:9/hook" in r.text
    assert hook["secret"] not in r.text
    assert hook["secret_hint"] in r.text
    assert client.get("/projects/nope/settings").status_code == 404


def test_run_page_has_a_card_per_indicator_and_its_newest_values(client: TestClient) -> None:
    batch = make_batch(name="relu", steps=range(5), probes=("fc1", "fc2"))
    run_id = batch["run"]["run_id"]
    ingest(client, batch)
    r = client.get(f"/runs/{run_id}")
    assert r.status_code == 200
    indicators = {s["indicator"] for s in client.get(f"/api/v1/runs/{run_id}/series").json()}
    assert "dead_fraction" in indicators and "loss" in indicators
    for name in indicators:
        assert f'<div class="chart lines" id="chart-{name}"' in r.text, f"no chart for {name}"
    data = run_data(r.text)
    assert data["run_id"] == run_id
    assert data["cursor"] > 0
    assert set(data["indicators"]) == indicators
    # families in reading order (dead units before training), catalogue order within one
    order = re.findall(r'data-indicator="([a-z_0-9]+)"', r.text)
    names = [n for n in CATALOGUE if n in indicators]
    assert order == sorted(names, key=lambda n: views.family_order(CATALOGUE[n].family))
    assert order[0] == "dead_fraction"
    assert order[-2:] == ["loss", "loss_max"]
    # make_batch kills 1 of 4 units in fc1 and 2 of 4 in fc2: newest values, worst first
    card = r.text.split('id="chart-dead_fraction-card"')[1].split("</article>")[0]
    assert re.findall(r'data-probe="(fc\d)"', card) == ["fc2", "fc1"]
    assert "0.5" in card and "0.25" in card


def test_run_page_at_a_step_focuses_the_indicator_that_alerted(client: TestClient) -> None:
    batch = make_batch(steps=range(6), probes=("fc1", "fc2", "fc3"))  # fc3: 3 of 4 dead
    ingest(client, batch)
    run_id = batch["run"]["run_id"]
    data = run_data(client.get(f"/runs/{run_id}", params={"step": 2}).text)
    assert (data["step"], data["focus"]) == (2, "dead_fraction")
    assert run_data(client.get(f"/runs/{run_id}", params={"step": "x"}).text)["step"] is None
    chosen = run_data(client.get(f"/runs/{run_id}?step=4&indicator=loss").text)
    assert chosen["focus"] == "loss"


def test_run_page_cursor_is_where_the_stream_should_resume(client: TestClient) -> None:
    batch = make_batch(steps=range(2))
    ingest(client, batch)
    run_id = batch["run"]["run_id"]
    cursor = run_data(client.get(f"/runs/{run_id}").text)["cursor"]
    ctx = client.app.state.context  # type: ignore[attr-defined]
    assert runs.points_since(ctx, uuid.UUID(run_id), cursor)[0] == [], "cursor behind stored points"


def test_unknown_or_malformed_run_is_a_404_page(client: TestClient) -> None:
    for path in (f"/runs/{uuid.uuid4()}", "/runs/not-a-uuid"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("text/html")
        assert "Not found" in r.text


def test_plotly_js_is_the_installed_plotly_bundle(client: TestClient) -> None:
    installed = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    for accept, encoding in (("gzip, deflate, br", "gzip"), ("identity", None)):
        r = client.get("/static/plotly.min.js", headers={"Accept-Encoding": accept})
        assert r.status_code == 200
        assert "javascript" in r.headers["content-type"]
        assert r.headers.get("content-encoding") == encoding, accept
        assert r.content == installed, accept  # httpx undoes the gzip
        # a new plotly is a new URL (?v=): this one is never asked for again
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert "Accept-Encoding" in r.headers["vary"]
    gzipped = client.get("/static/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert int(gzipped.headers["content-length"]) < len(installed) / 3, "sent compressed"


def test_static_files_are_served_and_nothing_else(client: TestClient) -> None:
    js = client.get("/static/run.js")
    assert js.status_code == 200
    assert "EventSource" in js.text
    assert "window.cw" in client.get("/static/app.js").text
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/nope.js").status_code == 404
    assert client.get("/static/..%2Fapp.py").status_code == 404
    assert client.get("/static/%2E%2E/templates/base.html").status_code == 404


def test_pages_reference_no_cdn(client: TestClient) -> None:
    batch = make_batch()
    ingest(client, batch)
    html = client.get(f"/runs/{batch['run']['run_id']}").text
    assert "cdn" not in html.lower()
    assert re.search(r'<script src="/static/plotly\.min\.js\?v=[^"]+"', html)


def test_login_not_needed_without_admin_token(client: TestClient) -> None:
    r = client.get("/login", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/"


def test_with_admin_token_pages_redirect_to_login(tmp_path: Path) -> None:
    with page_client(tmp_path, ADMIN) as c:
        batch = make_batch()
        ingest(c, batch, ADMIN)
        run_path = f"/runs/{batch['run']['run_id']}"
        for path in ("/", run_path):
            r = c.get(path, follow_redirects=False)
            assert r.status_code == 303, path
            assert r.headers["location"].startswith("/login?next=")
        login = c.get(run_path)  # followed: the login form, remembering where to go back
        assert login.status_code == 200
        assert 'name="token"' in login.text
        assert f'name="next" value="{run_path}"' in login.text
        # static files stay public: the login page needs its stylesheet
        assert c.get("/static/style.css").status_code == 200


def test_wrong_token_shows_an_error_and_sets_no_cookie(tmp_path: Path) -> None:
    with page_client(tmp_path, ADMIN) as c:
        r = c.post("/login", data={"token": "wrong", "next": "/"}, follow_redirects=False)
        assert r.status_code == 401
        assert LOGIN_FAILED in r.text
        assert SESSION_COOKIE not in c.cookies
        assert c.get("/", follow_redirects=False).status_code == 303


def test_login_sets_a_strict_httponly_cookie_that_opens_the_pages(tmp_path: Path) -> None:
    with page_client(tmp_path, ADMIN) as c:
        batch = make_batch(name="secret-run")
        ingest(c, batch, ADMIN)
        run_path = f"/runs/{batch['run']['run_id']}"
        r = c.post("/login", data={"token": ADMIN, "next": run_path}, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"] == run_path
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        assert "HttpOnly" in cookie
        assert "samesite=strict" in cookie.lower()
        page = c.get(run_path, follow_redirects=False)
        assert page.status_code == 200
        assert 'id="chart-dead_fraction"' in page.text
        assert "secret-run" in c.get("/").text
        # the same cookie opens the live stream's API
        assert c.get(f"/api/v1/runs/{batch['run']['run_id']}").status_code == 200
        c.post("/logout")
        assert c.get("/", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example"])
def test_login_never_redirects_off_site(tmp_path: Path, target: str) -> None:
    with page_client(tmp_path, ADMIN) as c:
        r = c.post("/login", data={"token": ADMIN, "next": target}, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"] == "/"


def test_plotly_js_is_compressed_once_when_requests_race_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assets._gzipped.cache_clear()
    compressions: list[int] = []
    real = gzip.compress

    def counted(data: bytes, compresslevel: int = 9) -> bytes:
        compressions.append(len(data))
        time.sleep(0.2)  # the start-up thread is still at it when the others ask
        return real(data, compresslevel=compresslevel)

    monkeypatch.setattr(assets.gzip, "compress", counted)
    with ThreadPoolExecutor(4) as pool:
        bodies = list(pool.map(lambda _: assets.plotly_js_gzip(), range(4)))
    assert len(compressions) == 1
    assert len({id(b) for b in bodies}) == 1
    assets._gzipped.cache_clear()
