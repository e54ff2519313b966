"""The dashboard in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by
Playwright, against a real `litefleet serve`, mosquitto and a real `litefleet-agent run`.

An operator logs in, finds the agent's device on the fleet page with its live fps (arriving
without a reload), opens its page with the charts, deploys a release to the device's group from
the Releases page and watches that rollout reach committed (the device's download complete in
bytes), deploys to a group whose device
never answers and pauses that rollout; a viewer sees the same pages and is refused the pause.
A screenshot of each page goes to $LITEFLEET_SCREENSHOTS (default
/tmp/litefleet-screenshots), outside the repository, for review.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.browser import login, shot
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
DIGITS_FT = REPO / "examples" / "models" / "digits-ft.tflite"
pytestmark = pytest.mark.slow


def litefleet(config: Path | None, *args: str) -> str:
    more = ["--config", str(config)] if config is not None else []
    done = subprocess.run(
        [sys.executable, "-m", "cloud.cli", *args, *more],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def test_an_operator_and_a_viewer_in_a_browser(  # type: ignore[no-untyped-def]
    tmp_path: Path, mosquitto, agent_process, browser
) -> None:
    cloud = tmp_path / "cloud"
    cloud.mkdir()
    http_port, web_port = free_port(), free_port()
    config = cloud / "cloud.toml"
    config.write_text(f"""
[mqtt]
host = "{mosquitto.host}"
port = {mosquitto.port}

[store]
db = "cloud.db"
artifacts = "file://artifacts"
public_url = "http://127.0.0.1:{http_port}/artifacts"

[signing]
key = "keys/release.key"

[http]
port = {http_port}

[web]
listen = "127.0.0.1:{web_port}"

[rollout]
tick_s = 1
""")
    litefleet(None, "keys", "generate", "--dir", str(cloud / "keys"))
    public = (cloud / "keys" / "release.pub").read_text().strip()
    olga = litefleet(config, "users", "add", "olga", "--role", "operator").split()[-1]
    victor = litefleet(config, "users", "add", "victor", "--role", "viewer").split()[-1]
    litefleet(
        config,
        "release",
        str(DIGITS_FT),
        "--name",
        "digits",
        "--version",
        "1",
        "--profile",
        "x86-gateway",
    )
    litefleet(config, "groups", "add", "lab", "cam-web")
    litefleet(config, "groups", "add", "ghosts", "ghost-1")  # never reports
    serve_log = (cloud / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "cloud.cli", "serve", "--config", str(config)],
        stdout=serve_log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    base = f"http://127.0.0.1:{web_port}"
    try:
        page = _until_listening(browser, base, serve, cloud / "serve.log")
        shot(page, "01-login")
        page.close()

        # the fleet page, opened before the device has said anything: it appears, live
        page = login(browser, base, "olga", olga)
        page.evaluate("window.stillTheSamePage = true")
        agent = agent_process(
            mosquitto, [public], device_id="cam-web", telemetry_s=2, source="synthetic:image?fps=10"
        )
        row = 'tr[data-device="cam-web"]'
        page.wait_for_function(
            f"""() => {{ const c = document.querySelector('{row} td.fps');
                       return c && parseFloat(c.textContent) > 0; }}""",
            timeout=90_000,
        )
        assert page.evaluate("window.stillTheSamePage") is True  # htmx, not a reload
        fps = float(page.inner_text(f"{row} td.fps"))
        assert 1.0 < fps < 30.0, fps  # the synthetic source runs at 10 fps
        assert page.inner_text("#count-online") == "1"
        page.fill("#q", "ghost")  # search: the real device is filtered out
        page.wait_for_selector(row, state="detached")
        page.fill("#q", "cam")
        page.wait_for_selector(row)
        shot(page, "02-fleet")

        page.click(f"{row} a")
        page.wait_for_url(re.compile(r"/devices/cam-web$"))
        page.wait_for_function(
            "() => Number(document.getElementById('charts').dataset.points) > 0", timeout=60_000
        )
        assert page.locator("#chart-fps canvas").count() == 1
        assert page.locator("#chart-outbox_depth canvas").count() == 1
        assert float(page.inner_text("#dev-fps")) > 0
        shot(page, "03-device")
        page.on("dialog", lambda d: d.accept())  # every confirmation, from here on
        page.click("#cmd-report-now")
        page.wait_for_selector("#note")
        assert page.inner_text("#note") == "sent report-now to cam-web"

        # deploy from the Releases page to the device's group: the rollout reaches committed
        page.goto(base + "/releases")
        shot(page, "04-releases")
        deploy = page.locator('tr[data-release="digits@1/x86-gateway"] form')
        deploy.locator("select[name=group]").select_option("lab")
        deploy.locator("button").click()
        page.wait_for_url(re.compile(r"/rollouts/[^/?]+\?note="))
        first = page.url.split("/rollouts/")[1].split("?")[0]
        page.wait_for_function(
            "() => document.getElementById('rollout-state').textContent === 'completed'",
            timeout=120_000,
        )
        assert page.inner_text("#waves tr:nth-child(2) td:nth-child(4)") == "1"  # committed
        # the device's download, from its update reports: all of the artifact's bytes
        download = page.inner_text('#rollout-devices tr[data-device="cam-web"] td.download')
        assert re.fullmatch(r"(\S+ \S+) of \1 100\.0%", download), download
        assert page.locator("#pause").count() == 0  # nothing left to pause
        shot(page, "05-rollout-committed")

        # a second rollout to a device that never answers: paused from its page
        page.goto(base + "/releases")
        deploy = page.locator('tr[data-release="digits@1/x86-gateway"] form')
        deploy.locator("select[name=group]").select_option("ghosts")
        deploy.locator("button").click()
        page.wait_for_url(re.compile(r"/rollouts/[^/?]+\?note="))
        second = page.url.split("/rollouts/")[1].split("?")[0]
        assert second != first
        page.wait_for_function(
            "() => document.getElementById('waves').textContent.includes('◀')", timeout=30_000
        )  # wave 1 went out
        page.click("#pause")
        page.wait_for_selector("#note")
        assert page.inner_text("#rollout-state") == "paused"
        assert "paused" in page.inner_text("#note")
        shot(page, "06-rollout-paused")
        page.goto(base + "/rollouts")
        assert "completed" in page.inner_text(f'tr[data-rollout="{first}"]')
        assert "paused" in page.inner_text(f'tr[data-rollout="{second}"]')
        shot(page, "07-rollouts")

        page.goto(base + "/audit")
        audit = page.inner_text("#audit")
        assert re.search(rf"olga\s+rollout\.pause\s+{re.escape(second)}", audit), audit
        assert re.search(r"olga\s+deploy\s+" + re.escape(first) + "/cam-web", audit), audit
        assert re.search(r"olga\s+command\s+cam-web", audit), audit
        shot(page, "08-audit")
        page.goto(base + "/api/docs")  # Swagger UI, from the package
        page.wait_for_selector('[data-path="/api/v1/devices/{device_id}/telemetry"]')
        shot(page, "09-api")

        # the viewer: sees the rollout, has no pause button, and a forged request is refused
        viewer = login(browser, base, "victor", victor, f"/rollouts/{second}")
        assert viewer.locator("#pause, #resume, #abort").count() == 0
        assert "Viewers cannot pause" in viewer.inner_text("main")
        status = viewer.evaluate(f"""async () => {{
            const csrf = JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token'];
            const r = await fetch('/rollouts/{second}/resume', {{method: 'POST',
                headers: {{'Content-Type': 'application/x-www-form-urlencoded'}},
                body: 'csrf=' + encodeURIComponent(csrf)}});
            return r.status; }}""")
        assert status == 403
        viewer.reload()
        assert viewer.inner_text("#rollout-state") == "paused"  # the refusal changed nothing
        shot(viewer, "10-viewer-rollout")
        viewer.goto(base + "/devices/cam-web")
        assert viewer.locator("#cmd-report-now").count() == 0
        assert agent.alive()
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            assert serve.wait(30) == 0
        finally:
            serve_log.close()


def _until_listening(browser: Any, base: str, serve: subprocess.Popen[bytes], log: Path) -> Any:
    page = browser.new_page()
    for _ in range(300):
        assert serve.poll() is None, log.read_text()
        try:
            page.goto(base + "/login", timeout=2000)
            return page
        except Exception:  # not listening yet
            page.wait_for_timeout(100)
    raise AssertionError(f"the dashboard never answered: {log.read_text()[-2000:]}")
