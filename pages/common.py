"""What every page shares: the sidebar settings, and cached, read-only resources.

Cached resources (models) are shared by every session: callers must never mutate them.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

import pages.menu  # noqa: F401  (its import leaves Streamlit's legacy pages mode)
from cnnlab.registry import DEFAULT_ARCH, arch_names, get_spec
from cnnlab.training import available_devices


@dataclass(frozen=True)
class Settings:
    arch: str
    device: str


def sidebar_settings() -> Settings:
    """Draw the shared sidebar controls and return their values. Their state persists for the session: a button
    that opens another page (st.switch_page) would otherwise reset them."""
    names = arch_names()
    st.session_state.setdefault("arch", DEFAULT_ARCH)
    st.session_state.setdefault("device", "auto")
    with st.sidebar:
        st.selectbox("Default architecture", names, key="arch", format_func=lambda n: get_spec(n).title,
                     on_change=_count_sidebar_choice, persist_state="session",
                     help="The network every page shows; a page can pick another for itself until this changes.")
        devices = list(available_devices())
        if st.session_state["device"] not in devices:
            st.session_state["device"] = "auto"
        st.radio("Device", devices, key="device", horizontal=True, persist_state="session",
                 help="Where training runs and latency measurements run; 'auto' uses a CUDA GPU when there is one "
                      "(cuda is offered where PyTorch sees one). Single-image pages (Predict, Look inside) run on "
                      "the CPU, which is fast enough for one image.")
    return Settings(st.session_state["arch"], st.session_state["device"])


SIDEBAR_CHOICES = "sidebar_arch_choices"


def _count_sidebar_choice() -> None:
    st.session_state[SIDEBAR_CHOICES] = st.session_state.get(SIDEBAR_CHOICES, 0) + 1


def current_settings() -> Settings:
    """The sidebar settings as the entry file left them this run."""
    return Settings(st.session_state.get("arch", DEFAULT_ARCH), st.session_state.get("device", "auto"))
