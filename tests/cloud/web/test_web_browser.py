"""The dashboard in a real browser (Debian's headless Chromium, Playwright) over a real server:
the Releases page draws each release's compression report, and /api/docs is Swagger UI served
by the dashboard itself. Screenshots go to $LITEFLEET_SCREENSHOTS for review."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cloud.cli import main
from cloud.compress import CompressOptions, compress
from device_profiles import load_profile
from tests.browser import shot
from tests.cloud.conftest import DIGITS, DIGITS_FT, REPO, CloudEnv
from tests.cloud.web.conftest import Dashboard, browser_login

TRAIN = REPO / "examples" / "data" / "digits-train.npz"
FAST = CompressOptions(
    latency_warmup=1, latency_runs=5, calibration_samples=64, max_eval_samples=100
)
# how many pixels of the chosen model's red ring (#c23a32) a canvas has
RED_PIXELS = """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0; for (let i = 0; i < d.length; i += 4)
      if (d[i] > 170 && d[i + 1] < 90 && d[i + 2] < 90 && d[i + 3] > 200) n++;
    return n; }"""


def release(env: CloudEnv, model: Path, version: int, *extra: str) -> None:
    argv = ["release", str(model), "--name", "digits", "--version", str(version)]
    argv += ["--profile", "x86-gateway", "--config", str(env.config), *extra]
    assert main(argv) == 0


def test_the_releases_page_shows_each_release_s_compression_report(
    dashboard: Dashboard, cloud_env: CloudEnv, browser: Any, tmp_path: Path
) -> None:
    out = tmp_path / "compressed"
    report = compress(
        DIGITS, load_profile("rpi5"), TRAIN, None, ["dynamic_int8", "int8"], out, options=FAST
    )
    assert report.chosen == "int8"
    release(cloud_env, out / "chosen.tflite", 1, "--from-report", str(out / "report.json"))
    release(cloud_env, DIGITS_FT, 2)  # from a file: no report

    with dashboard.client(dashboard.tokens["viewer"]) as api:
        (group,) = api.get("/api/v1/releases").json()
    by_version = {v["version"]: v for v in group["versions"]}
    assert by_version[2]["report"] is None
    kept = by_version[1]["report"]
    assert [c["method"] for c in kept["candidates"]] == ["original", "dynamic_int8", "int8"]
    assert kept["chosen"] == "int8" and kept["reason"] == report.reason[:1000]

    page = browser_login(browser, dashboard, "olga", "/releases")
    with_report = page.locator('tr.report-row[data-report="digits@1/x86-gateway"]')
    rows = with_report.locator("table.candidates tr[data-method]")
    assert rows.count() == 3
    chosen = with_report.locator("table.candidates tr.chosen")
    assert chosen.count() == 1 and chosen.get_attribute("data-method") == "int8"
    assert "chosen" in chosen.inner_text()
    int8 = report.candidate("int8")
    assert f"{int8.quality * 100:.2f} %" in chosen.inner_text()  # accuracy, as the report has it
    assert "pt" in chosen.inner_text()  # against the original
    assert report.reason[:40] in with_report.inner_text()

    chart = with_report.locator(".report-chart")
    page.wait_for_function(
        "() => document.querySelector('tr[data-report=\"digits@1/x86-gateway\"] .report-chart')"
        ".dataset.drawn === '2'"
    )
    canvases = chart.locator("canvas")
    assert canvases.count() == 2  # size against accuracy, size against latency
    for k in range(2):  # each panel really drew the chosen model's ring
        assert canvases.nth(k).evaluate(RED_PIXELS) > 20
    legend = chart.inner_text()
    assert "int8 (chosen)" in legend and "dynamic_int8" in legend and "original" in legend

    without = page.locator('tr.report-row[data-report="digits@2/x86-gateway"]')
    assert "no compression report (released from a file)" in without.inner_text()
    assert without.locator(".report-chart, table.candidates").count() == 0
    shot(page, "releases-report")


def test_api_docs_is_swagger_ui_from_this_site_only(dashboard: Dashboard, browser: Any) -> None:
    requests: list[str] = []
    page = browser_login(browser, dashboard, "victor", "/api/docs", requests)
    page.wait_for_selector(".swagger-ui .opblock")
    paths = page.eval_on_selector_all(
        ".opblock .opblock-summary-path", "els => els.map(e => e.dataset.path)"
    )
    assert "/api/v1/devices/{device_id}/telemetry" in paths
    assert "/api/v1/deployments" in paths and "/api/v1/releases" in paths
    assert all(p.startswith("/api/v1/") for p in paths) and len(paths) >= 12
    assert page.title() == "LiteFleet API"
    assert page.locator("button.authorize").count() == 1  # a token for "Try it out"
    shot(page, "api-docs")

    local = f"{dashboard.url}/"
    # the positive control: the page did load Swagger UI and the document from this server
    assert f"{local}static/swagger/swagger-ui-bundle.js" in requests
    assert f"{local}static/swagger/swagger-ui.css" in requests
    assert f"{local}api/openapi.json" in requests
    elsewhere = [
        u
        for u in requests
        if urlsplit(u).scheme not in ("data", "blob") and not u.startswith(local)
    ]
    assert elsewhere == [], json.dumps(elsewhere)
    assert all(urlsplit(u).hostname == "127.0.0.1" for u in requests if u.startswith("http"))
