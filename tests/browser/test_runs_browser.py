"""Runs from the browser: launch a run and watch its curves grow, queue a Strategy III run behind it, cancel
the first, close the tab, come back, watch the second finish, predict with its model, compare."""
import re

from playwright.sync_api import expect

from tests.browser.conftest import screenshot, wait_for_app

RUN_URL = re.compile(r".*/runs\?run=(\w+)$")


def status_badge(page, status: str):
    """The run's status badge at the top of its live view (not the hidden cells of the runs table)."""
    return page.locator("[data-testid='stMarkdownContainer']").filter(has_text=re.compile(rf"^{status}\b")).first


def pick(page, label: str, option: str | re.Pattern) -> None:
    page.locator("[data-testid='stMain'] [data-testid='stSelectbox']").filter(has_text=label).first.click()
    page.get_by_role("option", name=option).click()
    wait_for_app(page)


def launch(page) -> str:
    page.get_by_role("button", name="Launch", exact=True).click()
    page.wait_for_url(RUN_URL, timeout=60_000)
    wait_for_app(page)
    return RUN_URL.match(page.url).group(1)


def test_launch_watch_cancel_close_reopen_and_compare(browser, dashboard_url):
    errors = []
    first = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = first.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))

    # Strategy I on the digits, long enough to watch: the live view shows progress and growing curves
    page.goto(f"{dashboard_url}/launch")
    wait_for_app(page)
    page.get_by_role("heading", name="Launch a run").wait_for()
    page.get_by_text("I: Train from scratch").click()
    wait_for_app(page)
    pick(page, "Architecture", "LeNet-5")
    expect(page.locator("[data-testid='stMetric']").filter(has_text="Trainable parameters")
           .locator("[data-testid='stMetricValue']")).to_have_text("61.7K", timeout=30_000)
    epochs = page.locator("input[aria-label='Epochs']:not([disabled])")  # not Strategy III's, still fading out
    epochs.fill("300")
    epochs.press("Enter")
    wait_for_app(page)
    scratch = launch(page)
    expect(status_badge(page, "running")).to_be_visible(timeout=90_000)
    page.locator("[data-testid='stProgress']").first.wait_for(timeout=60_000)
    page.locator("[data-testid='stPlotlyChart'] .scatterlayer .trace").first.wait_for(timeout=60_000)  # live curves
    screenshot(page, "runs_live")

    # Strategy III with EfficientNet-Lite0's shipped weights waits in the queue behind it
    page.goto(f"{dashboard_url}/launch")
    wait_for_app(page)
    page.get_by_text("III: Feature extractor").click()
    wait_for_app(page)
    pick(page, "Architecture", "EfficientNet-Lite0")
    expect(page.locator("[data-testid='stMetric']").filter(has_text="Trainable parameters")
           .locator("[data-testid='stMetricValue']")).to_have_text("12.8K", timeout=60_000)
    screenshot(page, "launch")
    extract = launch(page)
    assert extract != scratch
    expect(status_badge(page, "queued")).to_be_visible(timeout=30_000)

    # back to the first run through the run picker, and cancel it while it runs
    pick(page, "Run", re.compile(rf"^{scratch} · I: scratch · LeNet-5"))
    expect(status_badge(page, "running")).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Cancel").click()
    expect(status_badge(page, "cancelled")).to_be_visible(timeout=60_000)
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    first.close()  # the user closes the tab; the worker goes on with the queue

    second = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = second.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{dashboard_url}/runs?run={extract}")
    wait_for_app(page)
    title = re.compile(rf"^{extract} · III: extract \+ logistic regression, 128 px · EfficientNet-Lite0 on digits")
    expect(page.get_by_text(title).first).to_be_visible()
    expect(status_badge(page, "running")).to_be_visible(timeout=60_000)  # still going after the tab was closed
    accuracy = page.locator("[data-testid='stMetric']").filter(has_text="Validation accuracy")
    expect(accuracy).to_be_visible(timeout=300_000)  # drawn when the live view sees the run finish
    expect(status_badge(page, "succeeded")).to_be_visible()
    assert float(accuracy.locator("[data-testid='stMetricValue']").inner_text().rstrip("%")) >= 90
    page.locator("[data-testid='stPlotlyChart'] .heatmaplayer").first.wait_for(timeout=30_000)  # confusion matrix
    wait_for_app(page)
    screenshot(page, "runs")

    # the digits it gets wrong, the surest mistakes first, as many as its confusion matrix counts
    page.get_by_text("Show the validation images it gets wrong").click()
    wait_for_app(page)
    caption = page.get_by_text(re.compile(r"^\d+ wrong among all 359 validation images")).first
    expect(caption).to_be_visible(timeout=60_000)
    wrong = int(caption.inner_text().split()[0])
    shown = page.locator("[data-testid='stImage']").filter(has_text=" → ")
    expect(shown).to_have_count(min(wrong, 24), timeout=30_000)
    screenshot(page, "runs_mistakes")

    # the trained model at work: Predict opens with it and names the digits it learned, keeping the sidebar's choice
    sidebar_cpu = page.locator("[data-testid='stSidebar']").get_by_role("radio", name="cpu")
    sidebar_cpu.check(force=True)  # the input itself is hidden behind Streamlit's drawn circle
    wait_for_app(page)
    page.get_by_role("button", name="Predict with it").click()
    page.wait_for_url(re.compile(r".*/predict$"), timeout=30_000)
    wait_for_app(page)
    expect(sidebar_cpu).to_be_checked()
    samples = page.get_by_role("combobox", name="...or use a sample photo")
    expect(samples).to_have_value(re.compile(r"^From its validation set: '0', image \d+$"))  # a held-out digit
    expect(page.locator("[data-testid='stMetric']").filter(has_text="Top class").locator(
        "[data-testid='stMetricValue']")).to_have_text(re.compile(r"^\d$"), timeout=60_000)
    expect(page.get_by_text("Classes: the 10 classes it was trained on")).to_be_visible()
    screenshot(page, "predict_run")

    # Look inside with the run's model, trained at 128 px: the layer list shows that size's shapes at once
    page.goto(f"{dashboard_url}/inside")
    wait_for_app(page)
    layer_list = page.get_by_role("combobox", name=re.compile(r"^Layer \(index"))
    expect(layer_list).to_have_value(re.compile(r"conv_stem \(Conv2dSame\) 32x112x112 · "), timeout=120_000)  # 224 px
    pick(page, "Weights", re.compile(rf"^Your run · .* · {extract}$"))
    expect(layer_list).to_have_value(re.compile(r"conv_stem \(Conv2dSame\) 32x64x64 · "), timeout=120_000)
    screenshot(page, "inside_run")

    page.goto(f"{dashboard_url}/run_compare")
    wait_for_app(page)
    page.get_by_role("heading", name="Compare runs").wait_for()
    page.locator("[data-testid='stPlotlyChart'] .scatterlayer .point").first.wait_for(timeout=30_000)
    screenshot(page, "run_compare")

    # one Back from Runs returns to the page before it (the page's link to its run added no history entry of its own)
    page.locator("[data-testid='stSidebarNav']").get_by_text("Runs", exact=True).click()
    page.wait_for_url(re.compile(r".*/runs$"), timeout=30_000)
    wait_for_app(page)
    page.go_back()
    page.wait_for_url(re.compile(r".*/run_compare$"), timeout=30_000)
    second.close()

    # on a phone a picked run's long name wraps in its chip instead of being cut
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = phone.new_page()
    page.goto(f"{dashboard_url}/run_compare")
    wait_for_app(page)
    chip = page.locator("[data-testid='stMultiSelectTagsContainer'] [data-tag] > span").filter(has_text=extract)
    expect(chip).to_have_text(re.compile(r"EfficientNet-Lite0 on digits$"), timeout=30_000)
    wrapped_whole = "e => e.scrollWidth <= e.clientWidth && e.getBoundingClientRect().height > 30"
    page.wait_for_function(wrapped_whole, arg=chip.element_handle(), timeout=15_000)  # once the app's style is in
    tags = page.locator("[data-testid='stMultiSelectTagsContainer']")
    assert tags.evaluate("e => e.scrollHeight <= e.clientHeight"), "every chip shows without scrolling the box"
    page.locator("[data-testid='stPlotlyChart'] .scatterlayer .point").first.wait_for(timeout=30_000)
    wait_for_app(page)
    screenshot(page, "run_compare_phone")

    # ... and in the open list of the Runs page's picker
    page.goto(f"{dashboard_url}/runs?run={extract}")
    wait_for_app(page)
    page.get_by_role("combobox", name="Run", exact=True).click()
    option = page.get_by_role("option").filter(has_text=extract).locator("div").first
    expect(option).to_have_text(re.compile(r"EfficientNet-Lite0 on digits$"), timeout=15_000)
    assert option.evaluate(wrapped_whole), "the run's whole name, on two lines"
    screenshot(page, "runs_picker_phone")
    phone.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
