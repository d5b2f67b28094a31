"""'Look inside' in a real browser: upload a photo through the real upload widget, see its maps, change layer."""
import re
import time

from PIL import Image
from playwright.sync_api import expect

from cnnlab.images import sample_images
from tests.browser.conftest import screenshot, wait_for_app

IMAGES_LOADED = """(captionStart) => [...document.querySelectorAll("[data-testid='stImage']")].some(figure => {
    const caption = figure.textContent || "";
    const img = figure.querySelector("img");
    return caption.startsWith(captionStart) && img && img.complete && img.naturalWidth > 0;
})"""


FILTERS_LOADED = """() => {
    const panel = [...document.querySelectorAll("[role='tabpanel']")].find(p => p.checkVisibility());
    const images = panel ? [...panel.querySelectorAll("[data-testid='stImage'] img")] : [];
    return images.length === 1 && images[0].complete && images[0].naturalWidth >= 200;
}"""


def metric(page, label: str) -> str:
    return page.locator("[data-testid='stMetric']").filter(has_text=label).locator(
        "[data-testid='stMetricValue']").first.inner_text()


def test_upload_a_photo_and_browse_its_layers(page, dashboard_url, tmp_path):
    photo = tmp_path / "my_cat.jpg"
    Image.open(sample_images()["chelsea"]).convert("RGB").save(photo, quality=92)
    page.goto(f"{dashboard_url}/inside")
    wait_for_app(page)
    page.get_by_role("heading", name="Look inside").wait_for()
    page.locator("input[type='file']").first.set_input_files(str(photo))
    page.get_by_text("my_cat.jpg (451x300)").wait_for(timeout=120_000)
    wait_for_app(page)
    page.wait_for_function(IMAGES_LOADED, arg="32 of 32 channels of conv_stem", timeout=60_000)
    page.wait_for_function(IMAGES_LOADED, arg="Channel ", timeout=60_000)
    page.get_by_text("Top prediction:").first.wait_for(timeout=60_000)

    slider = page.locator("[data-testid='stSlider'] input[type='range']").first
    slider.focus()
    started = time.perf_counter()
    page.keyboard.press("End")
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"[data-testid='stMetricValue']\")].some(m => m.innerText === '1000')",
        timeout=30_000)
    print(f"layer change to the classifier drawn in {time.perf_counter() - started:.2f} s")
    assert metric(page, "Stage") == "head"
    layer_list = page.locator("[data-testid='stSelectbox']").filter(has_text="Layer (index")
    layer_list.click()
    page.keyboard.type("blocks.1.0.conv_dw")
    page.keyboard.press("Enter")
    page.wait_for_function(IMAGES_LOADED, arg="64 of 96 channels of blocks.1.0.conv_dw", timeout=30_000)
    assert slider.get_attribute("value") == "9"
    assert metric(page, "Output") == "96x56x56"
    wait_for_app(page)
    screenshot(page, "inside")

    page.get_by_role("tab", name="Depth overview").click()
    page.wait_for_function(IMAGES_LOADED, arg="stage 5 (blocks.5 … bn2): channel", timeout=60_000)
    page.locator("[data-testid='stPlotlyChart'] .scatterlayer .trace").first.wait_for(timeout=30_000)
    screenshot(page, "inside_depth")
    page.get_by_role("tab", name="First-layer filters").click()
    filters = page.get_by_role("tabpanel", name="First-layer filters").locator("[data-testid='stImage'] img")
    filters.wait_for()
    page.wait_for_function(FILTERS_LOADED, timeout=30_000)
    assert page.get_by_text("conv_stem: 32 filters of 3x3x3, shown as RGB").is_visible()
    screenshot(page, "inside_filters")
    page.get_by_role("tab", name="Class activation map").click()
    page.wait_for_function(IMAGES_LOADED, arg="HiResCAM for 'tiger cat'", timeout=60_000)
    screenshot(page, "inside_cam")
    page.get_by_role("tab", name="Side by side").click()
    page.wait_for_function(IMAGES_LOADED, arg="stage 5 (blocks.5 … bn2): 1280x9x9", timeout=120_000)  # Lite2 (9x9) beside Lite0
    screenshot(page, "inside_side_by_side")

    # ResNet-18: offline its ImageNet weights cannot download, so the page starts at random init and says how
    # to get them; random init still shows every layer, from conv1 to fc
    page.get_by_role("tab", name="Layer browser").click()
    page.locator("[data-testid='stMain'] [data-testid='stSelectbox']").filter(has_text="Architecture").first.click()
    page.get_by_role("option", name="ResNet-18").click()
    wait_for_app(page)
    expect(page.get_by_text(re.compile("weights need a download", re.I)).first).to_be_visible(timeout=60_000)
    page.locator("[data-testid='stMain'] [data-testid='stSelectbox']").filter(has_text="Weights").first.click()
    page.get_by_role("option", name="Random init").click()
    wait_for_app(page)
    page.wait_for_function(IMAGES_LOADED, arg="64 of 64 channels of conv1", timeout=60_000)
    slider = page.locator("[data-testid='stSlider'] input[type='range']").first
    slider.focus()
    page.keyboard.press("End")
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"[data-testid='stMetricValue']\")].some(m => m.innerText === '1000')",
        timeout=30_000)
    assert metric(page, "Stage") == "head"
    slider.focus()
    page.keyboard.press("ArrowLeft")  # one layer back: the global average pool before fc
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"[data-testid='stMetricValue']\")].some(m => m.innerText === '512x1x1')",
        timeout=30_000)
    screenshot(page, "inside_resnet18")
