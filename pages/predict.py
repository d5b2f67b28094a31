import streamlit as st

from cnnlab.images import preprocess
from cnnlab.predict import label_set, predict
from cnnlab.registry import get_spec
from cnnlab.weights import NONE, WeightsError, weights_options
from pages.widgets import (arch_picker, image_picker, loaded_model, predictions_chart, show_image, weights_error,
                           weights_picker)

TOP = 5


st.title("Predict")
st.caption("What a network sees in a photo: its five most probable classes. EfficientNet-Lite0's ImageNet "
           "weights ship with cnnlab, so this works offline.")

left, right = st.columns([2, 3], gap="large")
with left:
    arch = arch_picker("predict_arch")
    weights = weights_picker(arch, "predict_weights")
    picked = image_picker("predict_image")
    if picked is not None:
        show_image(picked)

with right:
    spec = get_spec(arch)
    model = None
    if weights is not None:
        try:
            with st.spinner(f"Loading {spec.title} ({weights} weights)..."):
                model = loaded_model(arch, weights)
        except WeightsError as error:
            weights_error(error)
    if model is not None and picked is not None:
        labels = label_set(model)
        batch = preprocess(picked.image, spec, model.image_size).unsqueeze(0)
        predictions = predict(model.model, batch, top=TOP, names=labels.names)
        top = predictions[0]
        name_column, probability_column = st.columns([3, 1])
        name_column.metric("Top class", top.label)
        probability_column.metric("Probability", f"{100 * top.probability:.1f}%")
        predictions_chart(predictions)
        st.caption(f"Classes: {labels.title}. Preprocessing of {spec.title}: "
                   f"{spec.preprocessing_at(model.image_size).describe()}.")
        for note in model.notes:
            st.info(note)
        if model.weights == NONE:
            pretrained = "Compare with a pretrained choice." if any(o.pretrained for o in weights_options(arch)) else (
                "Train it on the Launch page and load the run's checkpoint as a weights file.")
            st.warning(f"Random weights: these predictions are noise. {pretrained}")
