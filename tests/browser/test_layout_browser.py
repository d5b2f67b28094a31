"""Layout at the sizes people use: side-by-side panes stack in a narrow window (a laptop's half screen gets the
form, then the plan below it, each at full width, instead of two squeezed columns); on a phone, a table's toolbar
has room of its own."""
from contextlib import contextmanager

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot, wait_for_app

PHONE_HEIGHT = 844


def boxes(browser, url: str, width: int, first: str, second: str, name: str) -> tuple[dict, dict]:
    context = browser.new_context(viewport={"width": width, "height": 1000})
    page = context.new_page()
    try:
        page.goto(url)
        wait_for_app(page)
        top = page.locator("[data-testid='stMain']").get_by_text(first, exact=True).first
        other = page.locator("[data-testid='stMain']").get_by_text(second, exact=True).first
        other.wait_for(timeout=60_000)
        wait_for_app(page)  # the whole script has run: a busy machine may still be drawing the panes
        page.wait_for_function("() => [...document.images].every(img => img.complete)", timeout=60_000)
        placed = top.bounding_box(), other.bounding_box()
        screenshot(page, name)
        return placed
    finally:
        context.close()


@pytest.mark.parametrize("path, first, second", [
    ("launch", "Architecture", "What this run trains"),
    ("inside", "Architecture", "Top prediction:"),
])
def test_panes_sit_side_by_side_when_wide_and_stack_when_narrow(browser, dashboard_url, path, first, second):
    form, plan = boxes(browser, f"{dashboard_url}/{path}", 1440, first, second, f"layout_{path}_wide")
    assert plan["x"] > form["x"] + form["width"], "wide: the second pane is to the right of the first"
    form, plan = boxes(browser, f"{dashboard_url}/{path}", 900, first, second, f"layout_{path}_narrow")
    assert plan["y"] > form["y"] + 100 and abs(plan["x"] - form["x"]) < 5, "narrow: below it, same left edge"


@contextmanager
def phone_page(browser, url: str):
    """A page opened on a phone's screen (390 x 844, touch), closed after."""
    context = browser.new_context(viewport={"width": 390, "height": PHONE_HEIGHT}, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.goto(url)
        wait_for_app(page)
        yield page
    finally:
        context.close()


def test_predict_gives_its_answer_above_the_pickers_on_a_phone(browser, dashboard_url):
    """The panes stack on a phone, the photo before the chart: the top class stands above both, on screen at once."""
    with phone_page(browser, f"{dashboard_url}/predict") as page:
        answer = page.locator("[data-testid='stMetric']").filter(has_text="Top class").first
        answer.wait_for(timeout=120_000)
        picker = page.locator("[data-testid='stMain']").get_by_text("Architecture", exact=True).first
        assert answer.bounding_box()["y"] < picker.bounding_box()["y"] < PHONE_HEIGHT, "the answer first, unscrolled"
        screenshot(page, "layout_phone_predict")


def test_a_tables_toolbar_on_a_phone_does_not_cover_the_heading_above_it(browser, dashboard_url):
    """A touch screen shows a table's toolbar all the time, just above the table: the table leaves it room."""
    with phone_page(browser, f"{dashboard_url}/compare") as page:
        heading = page.get_by_role("heading", name="Lecture claims, checked")
        heading.wait_for(timeout=60_000)
        table = page.locator("[data-testid='stDataFrame']").filter(has_text="Verdict").first
        table.scroll_into_view_if_needed()
        toolbar = table.locator("[data-testid='stElementToolbar']")
        expect(toolbar).to_be_visible()
        above, tools = heading.bounding_box(), toolbar.bounding_box()
        assert tools["y"] >= above["y"] + above["height"] - 1, (above, tools)
        below = page.get_by_text("Why the numbers differ", exact=True).bounding_box()
        grid = table.bounding_box()
        assert below["y"] >= grid["y"] + grid["height"] - 1, ("the text below is not under the table's last rows",
                                                               grid, below)
        screenshot(page, "layout_phone_table_toolbar")
