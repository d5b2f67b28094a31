import re

from playwright.sync_api import expect

from cnnlab.images import sample_images
from tests.browser.conftest import screenshot, wait_for_app

CAT_LABELS = ("tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat")


def top_class_value(page):
    """The 'Top class' metric's value (by its label: a rerun's fading elements may come first in the page)."""
    return page.locator("[data-testid='stMetric']").filter(has_text="Top class").locator(
        "[data-testid='stMetricValue']").first


def top_class(page) -> str:
    value = top_class_value(page)
    value.wait_for(timeout=120_000)
    return value.inner_text().strip()


def test_predict_page_classifies_samples_and_uploads_offline(page, dashboard_url):
    page.goto(f"{dashboard_url}/predict")
    wait_for_app(page)
    page.get_by_role("heading", name="Predict").wait_for()
    assert top_class(page) in CAT_LABELS
    bars = page.locator("[data-testid='stPlotlyChart'] .barlayer .point")
    expect(bars).to_have_count(5, timeout=30_000)
    screenshot(page, "predict")

    page.locator("[data-testid='stSelectbox']").filter(has_text="use a sample photo").click()
    page.get_by_role("option", name="A cup of coffee").click()
    wait_for_app(page)
    page.get_by_text("espresso", exact=True).first.wait_for(timeout=60_000)
    assert top_class(page) == "espresso"

    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(sample_images()["chelsea"]))
    page.get_by_text("chelsea.png (451x300)").wait_for(timeout=60_000)
    wait_for_app(page)
    cat = re.compile("^(" + "|".join(CAT_LABELS) + ")$")
    expect(top_class_value(page)).to_have_text(cat, timeout=60_000)
