"""The dashboard's pages, in menu order. Imports nothing heavy, so app.py can draw the menu at once."""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager


def _leave_legacy_pages_mode() -> None:
    """Keep Streamlit's legacy `pages/` auto-discovery off.

    Streamlit switches it on at start-up because a `pages/` folder exists, and only `st.navigation` in
    app.py switches it off; if the first visit after start-up is to a page's URL, app.py would not run
    and a second, unordered menu would appear. app.py and every page (through pages.common) import this
    module first, so switching it off here and running the script again sends that first visit through app.py,
    before anything slow is imported: the legacy menu of every file in pages/ shows for a moment only.
    """
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()



@dataclass(frozen=True)
class PageInfo:
    path: str
    title: str
    icon: str
    summary: str


PAGES = (
    PageInfo("pages/home.py", "Home", ":material/home:", "What this lab is for."),
    PageInfo("pages/compare.py", "Compare architectures", ":material/leaderboard:",
             "Parameters, operations, depth, published ImageNet accuracy and measured speed of every "
             "architecture, with the lecture's claims checked and each network's layer table."),
    PageInfo("pages/reductions.py", "1x1 reductions", ":material/compress:",
             "What Inception's 1x1 bottlenecks save: the lecture's calculator, every module of GoogLeNet and its "
             "successors as built and without its reductions, and global average pooling against flatten."),
    PageInfo("pages/residual.py", "Skip connections", ":material/alt_route:",
             "Why ResNet's shortcuts let deep networks train: gradient norms per block at initialization and a short "
             "training race, a plain network against the same network with y = F(x) + x."),
    PageInfo("pages/predict.py", "Predict", ":material/image_search:",
             "A pretrained network's top-5 ImageNet classes for a sample photo or your own image, with any "
             "architecture's weights: shipped, downloaded, or your own checkpoint."),
    PageInfo("pages/inside.py", "Look inside", ":material/layers:",
             "Every layer of a network at work on your image: feature maps layer by layer, the first layer's "
             "filters, a class activation map, and several networks side by side."),
    PageInfo("pages/launch.py", "Launch a run", ":material/rocket_launch:",
             "Train on the digits, MNIST, CIFAR-10 or your own images with Strategy I (scratch), II (fine-tune) or "
             "III (frozen features + a classifier), with a freezing planner that counts what trains; or probe "
             "every stage of a backbone."),
    PageInfo("pages/runs.py", "Runs", ":material/monitoring:",
             "The queue and history of runs: live progress and curves, logs, cancel and resume, the confusion "
             "matrix, checkpoint download and export."),
    PageInfo("pages/run_compare.py", "Compare runs", ":material/compare_arrows:",
             "Several runs side by side: curves overlaid, accuracy against training time or total compute."),
)

# Last, once every name above exists: it may stop this import with a rerun, and a session importing this module
# at the same moment must still find PAGES.
_leave_legacy_pages_mode()
