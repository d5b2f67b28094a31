"""cnnlab dashboard entry point: `streamlit run app.py`."""
import streamlit as st

from pages.common import PAGES, sidebar_settings

st.set_page_config(page_title="cnnlab", page_icon=":material/grid_view:", layout="wide")
pages = [st.Page(p.path, title=p.title, icon=p.icon, default=(i == 0)) for i, p in enumerate(PAGES)]
navigation = st.navigation(pages)
sidebar_settings()
navigation.run()
