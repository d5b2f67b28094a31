from tests.browser.conftest import screenshot, wait_for_app


def test_compare_page_draws_table_bubble_chart_and_layers(page, dashboard_url):
    page.goto(f"{dashboard_url}/compare")
    wait_for_app(page)
    page.get_by_role("heading", name="Compare architectures").wait_for()
    page.get_by_text("Paper vs implementation").wait_for(timeout=60_000)
    tables = page.locator("[data-testid='stDataFrame']")
    tables.nth(2).wait_for(timeout=60_000)
    charts = page.locator("[data-testid='stPlotlyChart']")
    charts.first.wait_for()
    bubbles = page.locator("[data-testid='stPlotlyChart'] .scatterlayer .point")
    bubbles.nth(13).wait_for(timeout=30_000)
    screenshot(page, "compare")


def test_home_links_every_page(page, dashboard_url):
    from pages.menu import PAGES

    page.goto(dashboard_url)
    wait_for_app(page)
    for info in PAGES[1:]:
        page.locator("[data-testid='stMain']").get_by_text(info.title, exact=True).first.wait_for()
    screenshot(page, "home")
    assert page.title() == "Home · cnnlab"
    page.locator("[data-testid='stMain']").get_by_text("Compare architectures", exact=True).first.click()
    page.wait_for_function("() => document.title === 'Compare architectures · cnnlab'", timeout=30_000)
