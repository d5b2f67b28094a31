"""Skip connections: gradient norms per block at initialization and a short training race, plain against residual."""
import pages.menu  # noqa: F401, I001  (first: a first visit straight to this page's URL goes through app.py at once)

import time

import streamlit as st

from cnnlab.charts import GRADIENT_QUANTITIES, VARIANT_COLORS, gradient_norms_figure, run_curves
from cnnlab.residual import (
    VARIANTS,
    GradientProfile,
    NetConfig,
    TrainSettings,
    curves_as_histories,
    gradient_profiles,
    train_variant,
)
from pages.widgets import panes

@st.cache_data(show_spinner=False, max_entries=64)
def profiles(depth: int, channels: int, batch_norm: bool, seed: int) -> dict[str, GradientProfile]:
    """Each variant's gradient norms at initialization (cached: one forward and backward pass)."""
    return gradient_profiles(NetConfig(depth, channels, batch_norm, seed))


def train_one(variant: str, depth: int, channels: int, batch_norm: bool, seed: int, epochs: int,
              on_step=None) -> list[dict]:
    """One variant's curve; not cached (it draws its progress as it goes), the last race is kept in the session."""
    curve = train_variant(NetConfig(depth, channels, batch_norm, seed), variant, TrainSettings(epochs=epochs),
                          on_step)
    return curves_as_histories({variant: curve})[variant]


st.title("Skip connections")
st.caption("A plain network against the same network with ResNet's identity shortcuts, on the 8x8 handwritten "
           "digits: a 3x3 stem convolution, then blocks of two 3x3 convolutions, global average pooling and a "
           "linear head. Both variants have the same parameters and, for one seed, the same initial weights.")

left, middle, right = st.columns(3)
depth = left.slider("Blocks (depth)", 1, 40, 20, key="res_depth", persist_state="session",
                    help="Each block holds two 3x3 convolutions: 20 blocks are 41 convolutions and a linear layer.")
batch_norm = middle.toggle("Batch norm", value=False, key="res_bn", persist_state="session",
                           help="Batch normalization before each ReLU (pre-activation blocks, as in ResNet v2).")
seed = right.number_input("Seed", 0, 10_000, 0, key="res_seed", persist_state="session",
                           help="Initial weights, data split and batch order.")
channels = NetConfig.channels

st.subheader("Gradient per block at initialization")
with st.spinner("One forward and backward pass on a batch of 128 digits"):
    data = profiles(depth, channels, batch_norm, int(seed))
quantity = st.segmented_control("Measure", list(GRADIENT_QUANTITIES), default="weights", required=True,
                                key="res_quantity", persist_state="session",
                                format_func=lambda q: GRADIENT_QUANTITIES[q])
st.plotly_chart(gradient_norms_figure(data, quantity), width="stretch", key="res_gradients")
cols = st.columns(len(VARIANTS))
for col, variant in zip(cols, VARIANTS):
    col.metric(f"{variant.capitalize()}: first block / last block", f"{data[variant].first_to_last(quantity):.3g}",
               help=f"{GRADIENT_QUANTITIES[quantity]}, the first block's over the last block's; 1 means the gradient "
                    "reaches the input as strong as it leaves the head.")
st.caption("The lecture's \"Solves Vanishing Gradient Problem\" is what batch norm off shows: PyTorch's default "
           "initialization shrinks the signal at every convolution and ReLU, so the plain net's gradient fades by "
           "orders of magnitude on its way back to the input, while the residual net's stays within a small factor. "
           "With batch norm on, the plain net's gradient no longer vanishes (here it even grows toward the input), "
           "as He et al. observed; what the shortcuts still fix then is the degradation problem: the plain net "
           "trains worse (Train both, below).")

st.subheader("Train both")
epochs = st.slider("Epochs", 1, 10, TrainSettings.epochs, key="res_epochs", persist_state="session",
                   help=f"Adam, learning rate {TrainSettings.lr:g} with a cosine schedule, batches of "
                        f"{TrainSettings.batch_size}; the digits' stratified 80/20 train/validation split.")
if st.button("Train both", icon=":material/play_arrow:", key="res_train"):
    progress = st.progress(0.0, text=f"Training the {VARIANTS[0]} net: epoch 1 of {epochs}")

    def show_step(variant: str, event) -> None:
        done = VARIANTS.index(variant) * epochs + event.epoch - 1 + event.step / event.steps
        progress.progress(done / (len(VARIANTS) * epochs),
                          text=f"Training the {variant} net: epoch {event.epoch} of {epochs}")

    started = time.perf_counter()
    histories = {variant: train_one(variant, depth, channels, batch_norm, int(seed), epochs, show_step)
                 for variant in VARIANTS}
    progress.empty()
    st.session_state["res_race"] = (depth, batch_norm, int(seed), epochs, histories, time.perf_counter() - started)
trained = st.session_state.get("res_race")
if trained:
    t_depth, t_bn, t_seed, t_epochs, histories, seconds = trained
    raced = f"{t_depth} blocks, batch norm {'on' if t_bn else 'off'}, seed {t_seed}, {t_epochs} epochs"
    if (t_depth, t_bn, t_seed, t_epochs) != (depth, batch_norm, int(seed), epochs):
        st.warning(f"These curves are from the last race ({raced}), not the settings above: press Train both to "
                   "race with those.", icon=":material/history:")
    else:
        st.caption(f"{raced}: both trained in {seconds:.0f} s here.")
    loss_col, acc_col = panes("race-curves", 1, 1, min_width=360)
    loss_col.plotly_chart(run_curves(histories, ("loss",), VARIANT_COLORS), width="stretch", key="res_loss")
    acc_col.plotly_chart(run_curves(histories, ("val_acc",), VARIANT_COLORS), width="stretch", key="res_acc")
    finals = {v: h[-1] for v, h in histories.items()}
    st.caption("Final training loss: " + ", ".join(f"{v} {p['loss']:.3f}" for v, p in finals.items()) +
               "; validation accuracy: " + ", ".join(f"{v} {p['val_acc']:.1%}" for v, p in finals.items()) + ".")
else:
    st.caption("Press Train both to train the two networks with the settings above (a few seconds an epoch for "
               "both at 20 blocks on an idle 2-core CPU, longer while a run trains beside it; a progress bar "
               "follows every batch).")

st.subheader("Why the shortcut helps")
st.markdown(
    "A residual block learns a correction F to its input instead of a whole new mapping:\n\n"
    "$$y = F(x) + x \\qquad\\Rightarrow\\qquad \\frac{\\partial y}{\\partial x} = \\frac{\\partial F}{\\partial x} + I$$\n\n"
    "Back-propagation multiplies these Jacobians block after block. In a plain network the product holds only "
    "the $\\partial F/\\partial x$ terms, so when each is a little smaller than 1 the gradient reaching the first "
    "blocks shrinks geometrically with depth (the vanishing gradient). The identity term $I$ keeps a path of "
    "gradient 1 from the loss to every block, whatever F does; and a block that has nothing to add can learn "
    "F = 0 and pass its input through.\n\n"
    "He, Zhang, Ren and Sun, [Deep Residual Learning for Image Recognition](https://arxiv.org/abs/1512.03385) "
    "(2015), frame it as the **degradation problem**: with batch norm their deeper plain nets did not suffer "
    "vanishing gradients, yet reached a *higher training error* than shallower ones, which is an optimization "
    "failure, not overfitting. The same networks with shortcuts got better with depth (ResNet-152 on ImageNet). "
    "The blocks here are the pre-activation form of He et al. 2016, "
    "[Identity Mappings in Deep Residual Networks](https://arxiv.org/abs/1603.05027), where y = F(x) + x exactly.")
