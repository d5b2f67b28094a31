import pages.menu  # noqa: F401, I001  (first: a first visit straight to this page's URL goes through app.py at once)

import streamlit as st

from cnnlab.data import first_names
from cnnlab.predict import enlargement_note, label_set, predict_loaded
from cnnlab.registry import get_spec
from cnnlab.weights import NONE, WeightsError
from pages.widgets import (arch_picker, image_picker, loaded_model, metric_row, open_with_same_choices, panes,
                           predictions_chart, random_weights_advice, show_image, weights_error, weights_picker)

TOP = 5


st.title("Predict")
st.caption("What a network sees in a photo: its most probable classes. EfficientNet-Lite0's and Lite2's "
           "ImageNet weights ship with cnnlab, so this works offline; your finished runs are listed under Weights.")

headline = st.container()  # the answer above the panes: on a phone they stack, the photo before the chart
left, right = panes("predict", 2, 3)
with left:
    arch = arch_picker("predict_arch")
    weights = weights_picker(arch, "predict_weights")
    picked = image_picker("predict_image", weights, arch)
    if picked is not None:
        show_image(picked)
        if weights is not None:
            open_with_same_choices("pages/inside.py", "predict", "inside", arch, weights, "Look inside",
                                   ":material/layers:")

with right:
    spec = get_spec(arch)
    model = None
    if weights is not None:
        try:
            with st.spinner(f"Loading {spec.title}..."):
                model = loaded_model(arch, weights)
        except WeightsError as error:
            weights_error(error)
    if picked is None:  # keeps this pane, and the layout, while the upload's error shows beside it
        st.info("No prediction: the uploaded file is not an image cnnlab can read.",
                icon=":material/image_not_supported:")
    if model is not None and picked is not None:
        labels = label_set(model)
        predictions = predict_loaded(model, picked.image, TOP)
        top = predictions[0]
        if model.weights == NONE:  # no headline for noise: the chart alone, under the warning
            st.warning(f"Random weights: these predictions are noise. {random_weights_advice(arch)}",
                       icon=":material/casino:")
        else:
            row = metric_row(headline)
            row.metric("Top class", top.label, width="content")
            row.metric("Probability", f"{100 * top.probability:.1f}%", width="content")
        predictions_chart(predictions)
        if note := enlargement_note(picked.image, model):
            st.info(note, icon=":material/zoom_in:")
        st.caption(f"Classes: {labels.title}. {labels.note + ' ' if labels.note else ''}Preprocessing of "
                   f"{spec.title}: {spec.preprocessing_at(model.image_size).describe()}.")
        for note in model.notes:
            st.info(note)
        if model.class_names:
            st.caption(f"A classifier trained on these {len(model.class_names)} classes "
                       f"({first_names(model.class_names)}) gives every image "
                       "one of them, however unlike its training images: it has no answer for 'none of these'.")
