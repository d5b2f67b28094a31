import pytest

from cnnlab.reductions import network_reductions
from tests.browser.conftest import screenshot, wait_for_app

pytestmark = pytest.mark.browser


def test_reductions_page_draws_the_googlenet_module_chart(page, dashboard_url):
    page.goto(f"{dashboard_url}/reductions")
    wait_for_app(page)
    page.get_by_role("heading", name="1x1 reductions").first.wait_for()
    page.get_by_text("Total number of operations = 1.5M + 3.8M = 5.3M").wait_for(timeout=60_000)
    chart = page.locator(".st-key-modules_chart")
    chart.wait_for(timeout=60_000)
    chart.scroll_into_view_if_needed()
    chart.locator(".barlayer .point").first.wait_for(timeout=30_000)
    labels = chart.locator("text").all_text_contents()
    modules = [m.path for m in network_reductions("googlenet").modules]
    assert all(name in labels for name in modules), labels
    chart.locator(".barlayer .point").nth(2 * len(modules) - 1).wait_for(state="attached", timeout=30_000)
    screenshot(page, "reductions")
