import streamlit as st

from pages.menu import PAGES

st.title("cnnlab")
st.markdown(
    "A lab for the classic ConvNets, from LeNet-5 to EfficientNet, and for transfer learning with them: "
    "compare what each network costs and achieves, look inside one at work on your own image, count what "
    "Inception's 1x1 reductions save, and train your own with the lecture's three strategies "
    "(from scratch, fine-tuning, or a frozen feature extractor with a classifier on top)."
)
st.caption("Everything works offline: EfficientNet-Lite0's and Lite2's ImageNet weights, sample photos and "
           "scikit-learn's handwritten digits ship with the lab.")
st.info("New here? See a pretrained network at work in **Predict** and **Look inside**, then train one of your own "
        "in **Launch a run**: the default there, Strategy III on the digits, takes under a minute on a laptop "
        "(**Estimate time** there times it on yours).",
        icon=":material/waving_hand:")
for page in PAGES[1:]:
    with st.container(border=True):
        st.page_link(page.path, label=page.title, icon=page.icon)
        st.caption(page.summary)
