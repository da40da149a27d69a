"""The dashboard in a real browser: Debian's Chromium driven by Playwright against uvicorn.

A member logs in on a.localhost, translates heat2d_jacobi.f90 with htmx, watches the progress
card turn into a verified result, downloads the generated .py, then sees a syntax error with its
line and column. Skips when /usr/bin/chromium, Playwright or gfortran is missing.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live_server import serve_site

CHROMIUM = "/usr/bin/chromium"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fortran"
PASSWORD = "pw-browser-test-123"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Every tenant host is served by the one uvicorn on loopback.
    "--host-resolver-rules=MAP *.localhost 127.0.0.1",
]

# What every browser test needs; tests/web/test_first_hour_browser.py uses the same list.
BROWSER_REQUIREMENTS = [
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="the Playwright Python package is not installed (pip install -e '.[dev]')",
    ),
    pytest.mark.skipif(
        shutil.which("gfortran") is None, reason="gfortran is not installed: nothing to verify"
    ),
]
pytestmark = BROWSER_REQUIREMENTS


@pytest.fixture
def site(transactional_db, tenant_a) -> Iterator[int]:
    """uvicorn serving the whole site (fortranspire_site.asgi) on a loopback port, in a thread."""
    with serve_site(name="uvicorn-dashboard") as port:
        yield port


@pytest.mark.timeout(240)
def test_member_translates_heat2d_in_chromium_and_sees_it_verified(
    site, tenant_a, django_user_model, tmp_path
):
    from playwright import sync_api

    from kernels.selectors import kernel_run_list
    from tenants.services import membership_set

    # Database work happens before Playwright starts: its sync API runs an event loop in this
    # thread, and Django refuses ORM calls from a thread with a running loop.
    user = django_user_model.objects.create_user("browser-alice", password=PASSWORD)
    membership_set(tenant=tenant_a, user=user, role="member")
    heat2d = (FIXTURES / "heat2d_jacobi.f90").read_text()
    broken = (FIXTURES / "syntax_error.f90").read_text()
    base = f"http://a.localhost:{site}"
    screenshot = tmp_path / "dashboard-heat2d.png"
    console_errors: list[str] = []

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 1280, "height": 900}, accept_downloads=True
            )
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.on(
                "console", lambda m: console_errors.append(m.text) if m.type == "error" else None
            )

            page.goto(f"{base}/login/")
            page.fill("input[name=username]", "browser-alice")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")
            assert page.evaluate("typeof window.htmx") == "object"

            page.fill("textarea[name=source]", heat2d)
            page.fill("input[name=sizes]", "n=37, m=29, nstep=3")
            page.click("#translate-form button[type=submit]")
            # The answer to the POST is the progress card; it polls until the result replaces it.
            page.wait_for_selector("#result .job .stepper", timeout=10_000)
            page.locator("#result .job").screenshot(path=str(tmp_path / "progress.png"))
            result = page.wait_for_selector("#result .result", timeout=120_000)
            assert result.get_attribute("data-status") == "verified", result.inner_text()
            assert page.url == f"{base}/"  # no page load: htmx swapped the card in
            card = page.inner_text("#result")
            assert "heat2d_jacobi" in card and "verified" in card
            metrics = page.inner_text("#result .kernel .metrics")
            assert "PARALLEL LOOPS\n2" in metrics.upper()
            assert "prange" in page.inner_text("#result pre.code")
            # The history table was refreshed out of band with the new run.
            assert "heat2d_jacobi" in page.inner_text("#runs-body")

            with page.expect_download() as download_info:
                page.click("#result a:has-text('Download .py')")
            download = download_info.value
            assert download.suggested_filename == "heat2d_jacobi_cpu.py"
            code_path = tmp_path / download.suggested_filename
            download.save_as(code_path)
            assert "def heat2d_jacobi" in code_path.read_text()

            page.screenshot(path=str(screenshot), full_page=True)

            page.fill("textarea[name=source]", broken)
            page.fill("input[name=sizes]", "")
            page.click("#translate-form button[type=submit]")
            error = page.wait_for_selector("#result .result[data-status=failed]", timeout=30_000)
            assert "line 10, column 12" in error.inner_text()
            page.screenshot(path=str(tmp_path / "dashboard-syntax-error.png"), full_page=True)

            # The failed run's record marks the offending source line.
            page.click("#result a:has-text('run record')")
            page.wait_for_url(f"{base}/runs/**")
            assert page.inner_text("pre.source span.bad").strip().startswith("a(i) = (a(i)")
            page.screenshot(path=str(tmp_path / "run-failed.png"), full_page=True)
            # Back to the dashboard shows the history as it is now, not a stale cached copy.
            page.go_back()
            page.click("#runs-body tr:has-text('heat2d_jacobi') a >> nth=0")
            page.wait_for_url(f"{base}/runs/**")
            assert "Download .py" in page.inner_text("main")
            page.screenshot(path=str(tmp_path / "run-verified.png"), full_page=True)
        finally:
            browser.close()

    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 30_000
    assert console_errors == []
    statuses = sorted(run.status for run in kernel_run_list(tenant=tenant_a))
    assert statuses == ["failed", "verified"]


SCALE = """\
subroutine scale(n, a, x)
  integer, intent(in) :: n
  real(8), intent(in) :: a
  real(8), intent(inout) :: x(n)
  integer :: i
  do i = 1, n
    x(i) = a * x(i)
  end do
end subroutine scale
"""


@pytest.mark.timeout(180)
def test_dashboard_works_with_javascript_disabled(site, tenant_a, django_user_model, tmp_path):
    from playwright import sync_api

    from tenants.services import membership_set

    user = django_user_model.objects.create_user("nojs-bob", password=PASSWORD)
    membership_set(tenant=tenant_a, user=user, role="member")
    broken = (FIXTURES / "syntax_error.f90").read_text()
    base = f"http://a.localhost:{site}"

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(java_script_enabled=False)
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{base}/login/")
            page.fill("input[name=username]", "nojs-bob")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")

            # A plain form POST: the server translates, then redirects to the run's page.
            page.fill("textarea[name=source]", SCALE)
            page.click("#translate-form button[type=submit]")
            page.wait_for_url(f"{base}/runs/**")
            assert "verified" in page.inner_text(".status.big")
            assert "def scale" in page.inner_text("pre.code")

            page.goto(f"{base}/")
            page.fill("textarea[name=source]", broken)
            page.click("#translate-form button[type=submit]")
            page.wait_for_load_state()
            assert "line 10, column 12" in page.inner_text("#result")
            assert "subroutine broken" in page.input_value("textarea[name=source]")
            page.screenshot(path=str(tmp_path / "nojs-syntax-error.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "nojs-syntax-error.png").stat().st_size > 10_000
