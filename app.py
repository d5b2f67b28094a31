"""cnnlab dashboard entry point: `streamlit run app.py`."""
from pathlib import Path

import streamlit as st

from pages.menu import PAGES  # first: it leaves Streamlit's legacy pages mode before anything slow loads

ICON = Path(__file__).parent / "assets" / "ui" / "icon.png"  # a file, not a Material icon: those come from Google's CDN
# on a touch screen a table's toolbar always shows, 44 px above the table: room for it, not over the text above
# (a comment, not a docstring: Streamlit's magic would print a bare string in this script)
TOUCH_CSS = "@media (hover: none) {[data-testid=stElementContainer]:has([data-testid=stDataFrame]) {margin-top: 44px}}"
# on a phone a picked option's chip wraps its long label instead of cutting it, and the box grows to show them all
WRAPPED_CHIPS_CSS = ("@media (max-width: 640px) {[role=group]:has(> [data-testid=stMultiSelectTagsContainer]) "
                     "{max-height: none} [data-testid=stMultiSelectTagsContainer] [data-tag] {height: auto; "
                     "padding-block: 2px} [data-testid=stMultiSelectTagsContainer] [data-tag] > span "
                     "{white-space: normal}}")
# An open select box's options wrap instead of being cut (a run's long name on a phone); only in short lists: a long
# one (a network's layers) is virtualized, its options in wrappers at fixed heights that wrapping would overrun.
WRAPPED_OPTIONS_CSS = ("[data-testid=stSelectboxVirtualDropdown] [role=listbox] > [role=option] {height: auto; "
                       "min-height: 2.5rem} [data-testid=stSelectboxVirtualDropdown] [role=listbox] > [role=option] > "
                       "div {height: auto; min-height: 1.75rem; padding-block: 0.25rem; white-space: normal}")

st.set_page_config(page_title="cnnlab", page_icon=str(ICON), layout="wide")
pages = [st.Page(p.path, title=p.title, icon=p.icon, default=(i == 0)) for i, p in enumerate(PAGES)]
navigation = st.navigation(pages)
current = next(info for info, page in zip(PAGES, pages) if page is navigation)
st.set_page_config(page_title=f"{current.title} · cnnlab")  # the browser tab names the page
st.html(f"<style>{TOUCH_CSS} {WRAPPED_CHIPS_CSS} {WRAPPED_OPTIONS_CSS}</style>")

with st.spinner("Starting up: loading PyTorch (only on the first visit after the server starts)..."):
    from pages.common import sidebar_settings  # noqa: E402  (loads PyTorch: after the menu is drawn)

sidebar_settings()
navigation.run()
