"""Runs from the browser: launch a Strategy III run on the digits, close the tab, come back, watch it finish."""
import re

from playwright.sync_api import expect

from tests.browser.conftest import screenshot, wait_for_app



def test_launch_a_feature_extraction_run_and_watch_it_finish(browser, dashboard_url):
    first = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = first.new_page()
    page.goto(f"{dashboard_url}/launch")
    wait_for_app(page)
    page.get_by_role("heading", name="Launch a run").wait_for()
    expect(page.get_by_text("III: Feature extractor")).to_be_visible()
    trainable = page.locator("[data-testid='stMetric']").filter(has_text="Trainable parameters")
    expect(trainable.locator("[data-testid='stMetricValue']")).to_have_text("12.8K", timeout=60_000)
    page.locator("[data-testid='stDataFrame']").first.wait_for()
    wait_for_app(page)
    screenshot(page, "launch")
    page.get_by_role("button", name="Launch", exact=True).click()
    page.wait_for_url(re.compile(r".*/runs\?run=\w+"), timeout=60_000)
    run_id = page.url.rsplit("=", 1)[1]
    page.get_by_role("heading", name="Runs").wait_for()
    expect(page.get_by_text(re.compile(r"^(queued|running|succeeded)$")).first).to_be_visible(timeout=60_000)

    # a second run, LeNet-5 from scratch, waits in the queue behind the first: cancel it
    page.goto(f"{dashboard_url}/launch")
    wait_for_app(page)
    page.get_by_text("I: Train from scratch").click()
    wait_for_app(page)
    page.locator("[data-testid='stMain'] [data-testid='stSelectbox']").filter(has_text="Architecture").first.click()
    page.get_by_role("option", name="LeNet-5").click()
    wait_for_app(page)
    expect(page.locator("[data-testid='stMetric']").filter(has_text="Trainable parameters")
           .locator("[data-testid='stMetricValue']")).to_have_text("61.7K", timeout=30_000)
    page.get_by_role("button", name="Launch", exact=True).click()
    page.wait_for_url(re.compile(rf".*/runs\?run=(?!{run_id})\w+"), timeout=60_000)
    wait_for_app(page)
    expect(page.get_by_text(re.compile(r"scratch lenet5 on digits")).first).to_be_visible()
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("[data-testid='stMarkdownContainer']").filter(has_text=re.compile(r"^cancelled")).first
           ).to_be_visible(timeout=60_000)
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    first.close()  # the user closes the tab; the worker goes on

    second = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = second.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{dashboard_url}/runs?run={run_id}")
    wait_for_app(page)
    expect(page.get_by_text(re.compile(rf"^{run_id} extract tf_efficientnet_lite0 on digits")).first).to_be_visible()
    accuracy = page.locator("[data-testid='stMetric']").filter(has_text="Validation accuracy")
    expect(accuracy).to_be_visible(timeout=300_000)  # drawn when the live view sees the run finish
    expect(page.locator("[data-testid='stMarkdownContainer']").filter(has_text=re.compile(r"^succeeded")).first
           ).to_be_visible()
    assert float(accuracy.locator("[data-testid='stMetricValue']").inner_text()) >= 0.9
    page.locator("[data-testid='stPlotlyChart'] .heatmaplayer").first.wait_for(timeout=30_000)  # confusion matrix
    wait_for_app(page)
    screenshot(page, "runs")

    page.goto(f"{dashboard_url}/run_compare")
    wait_for_app(page)
    page.get_by_role("heading", name="Compare runs").wait_for()
    page.locator("[data-testid='stPlotlyChart'] .scatterlayer .point").first.wait_for(timeout=30_000)
    screenshot(page, "run_compare")
    second.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
