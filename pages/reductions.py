"""1x1 reductions: the lecture's calculator, factorized convolutions (VGG's 3x3 stacks, Inception-v3's 1 x k then
k x 1), what the bottlenecks of real networks save, and global average pooling."""
import pages.menu  # noqa: F401, I001  (first: a first visit straight to this page's URL goes through app.py at once)

import pandas as pd
import streamlit as st

from cnnlab.charts import gap_vs_flatten_bars, module_macs_bars, reduction_cost_bars, reduction_sweep_figure
from cnnlab.profiling import human
from cnnlab.reductions import (
    FACTORIZATION_EXAMPLE, LECTURE_COMPRESSION_EXAMPLE, LECTURE_INCEPTION_EXAMPLE, REDUCTION, ROLE_DESCRIPTIONS,
    ConvSetup, FactorizationSetup, compare_reduction, factorizations, head_comparisons, network_reductions,
    receptive_field, reduction_archs)
from cnnlab.registry import get_spec
from pages.common import current_settings
from pages.widgets import EMPTY, metric_row, panes, text_column_px, whole_table_height

CUSTOM = "Your own numbers"
PINNED_PX = 160  # the widest column kept in view while the table scrolls sideways
PRESETS = {
    "Lecture: Inception's 5x5 branch (14x14x480, 5x5 to 48, reduce to 16)": LECTURE_INCEPTION_EXAMPLE,
    "Lecture: 1x1 compression (64x64x100 to 64x64x20 with 20 1x1 filters)": LECTURE_COMPRESSION_EXAMPLE,
    CUSTOM: None,
}
FIELDS = (  # setup field, label, slider max, number-input max
    ("height", "Height H", 256, 2048),
    ("width", "Width W", 256, 2048),
    ("in_channels", "Input channels C_in", 2048, 8192),
    ("out_channels", "Output channels C_out", 2048, 8192),
    ("kernel", "Kernel k", 11, 31),
    ("reduce_to", "Reduce to C_red (1x1)", 2048, 8192),
)


def _number_key(field: str) -> str:
    return f"calc_{field}_number"


def _slider_key(field: str) -> str:
    return f"calc_{field}_slider"


def _set_field(field: str, value: int, slider_max: int) -> None:
    st.session_state[_number_key(field)] = value
    st.session_state[_slider_key(field)] = min(value, slider_max)


def _apply_preset() -> None:
    setup = PRESETS[st.session_state["calc_preset"]]
    if setup is None:
        return
    for field, _label, slider_max, _number_max in FIELDS:
        value = getattr(setup, field)
        if value is not None:
            _set_field(field, value, slider_max)
    st.session_state["calc_reduce"] = setup.reduce_to is not None


def _shows_preset(setup: ConvSetup) -> bool:
    """Whether the inputs hold `setup`'s numbers (a field it leaves open may hold any)."""
    if st.session_state.get("calc_reduce") != (setup.reduce_to is not None):
        return False
    return all(getattr(setup, field) in (None, st.session_state.get(_number_key(field))) for field, *_ in FIELDS)


def _slider_moved(field: str) -> None:
    st.session_state[_number_key(field)] = st.session_state[_slider_key(field)]


def _number_typed(field: str, slider_max: int) -> None:
    st.session_state[_slider_key(field)] = min(st.session_state[_number_key(field)], slider_max)


def _linked_input(field: str, label: str, slider_max: int, number_max: int, disabled: bool = False) -> int:
    """A slider and a number input kept in step, on one line at any screen width (columns would stack them on a
    phone); the number input can go past the slider's range."""
    line = st.container(horizontal=True, wrap=False, vertical_alignment="bottom")
    line.slider(label, 1, slider_max, key=_slider_key(field), persist_state="session", on_change=_slider_moved,
                args=(field,), disabled=disabled, width="stretch")
    line.number_input(label, 1, number_max, step=1, key=_number_key(field), persist_state="session",
                      on_change=_number_typed, args=(field, slider_max), disabled=disabled, label_visibility="hidden",
                      width=120)
    return int(st.session_state[_number_key(field)])


def calculator() -> None:
    st.header("Calculator")
    st.caption("A k x k convolution with 'same' padding and stride 1 (its output keeps the input's H x W; an even k "
               "pads one side one more row and column, as PyTorch's padding='same' does), alone or after a 1x1 "
               "convolution that first reduces C_in to C_red. Operations are multiply-accumulates per image, counted "
               "as (H x W x C_out) x (k x k x C_in); parameters include one bias per filter.")
    if _number_key("height") not in st.session_state:
        st.session_state["calc_preset"] = next(iter(PRESETS))
        _apply_preset()
    preset = PRESETS[st.session_state["calc_preset"]]
    if preset is not None and not _shows_preset(preset):
        st.session_state["calc_preset"] = CUSTOM  # so that picking the lecture's example again restores it
    st.selectbox("Start from", list(PRESETS), key="calc_preset", persist_state="session", on_change=_apply_preset)
    values = {}
    for field, label, slider_max, number_max in FIELDS:
        if field == "reduce_to":
            st.checkbox("Put a 1x1 reduction in front", key="calc_reduce", persist_state="session")
        values[field] = _linked_input(field, label, slider_max, number_max,
                                      disabled=field == "reduce_to" and not st.session_state["calc_reduce"])
    if not st.session_state["calc_reduce"]:
        values["reduce_to"] = None
    setup = ConvSetup(**values)
    result = compare_reduction(setup)

    k = f"{setup.kernel}x{setup.kernel}"
    lines = [(f"Number of operations ({'naive ' if result.reduce is not None else ''}{k})", result.naive.formula)]
    if result.reduce is not None:  # the lecture's words, told apart where the k x k is a 1x1 too
        first, second = ("1x1 reduction", "1x1 after it") if setup.kernel == 1 else ("1x1", k)
        lines += [(f"Number of operations for {first}", result.reduce.formula),
                  (f"Number of operations for {second}", result.conv.formula),
                  ("Total number of operations", result.total_formula)]
    st.markdown("  \n".join([f"Input {setup.height}x{setup.width}x{setup.in_channels}, output "
                              f"{setup.height}x{setup.width}x{setup.out_channels}."] +
                             [f"{words} = `{unbroken(formula)}`" for words, formula in lines]))

    row = metric_row()
    row.metric("Naive MACs" if result.reduce is not None else "MACs", human(result.naive.macs))
    if result.reduce is None:
        row.metric("Output", f"{setup.height}x{setup.width}x{setup.out_channels}")
        row.metric("Parameters", human(result.naive.params), help=result.naive.params_formula)
        row.metric("Channels kept", f"{setup.out_channels / setup.in_channels:.0%}",
                   help="C_out / C_in: how much a 1x1 convolution compresses the depth.")
    else:
        row.metric("MACs with reduction", human(result.total_macs),
                   delta=f"{human(result.total_macs - result.naive.macs)}", delta_color="inverse")
        if result.ratio >= 1:
            row.metric("Fewer MACs", times(result.ratio))
        else:
            row.metric("More MACs", times(1 / result.ratio),
                       help="The 1x1 keeps so many channels (C_red) that it and the k x k after it cost more than "
                            "the k x k alone: a reduction pays only when C_red is well below C_in.")
        row.metric("Parameters", f"{human(result.naive.params)} → {human(result.total_params)}",
                   help="Naive → with the reduction. " + " ; ".join(
                       c.params_formula for c in (result.naive, result.reduce, result.conv)))
    if result.reduce is not None and setup.reduce_to > setup.in_channels:
        st.warning(f"C_red = {setup.reduce_to} is more channels than the input's {setup.in_channels}: this 1x1 "
                   "widens the input instead of reducing it, so it only adds work.", icon=":material/info:")
    left, right = panes("calc-costs", 1, 1, min_width=360)
    left.plotly_chart(reduction_cost_bars(result, "macs", "Multiply-accumulates"), key="calc_macs_chart",
                      width="stretch")
    right.plotly_chart(reduction_cost_bars(result, "params", "Parameters"), key="calc_params_chart",
                       width="stretch")
    if setup.kernel == 1 and result.reduce is None:
        st.caption("A 1x1 convolution sees one position at a time: at each pixel it takes a weighted sum of the "
                   "C_in channels, once per filter. It compresses depth (here 100 channels to 20), not space, and "
                   "finds no spatial pattern: where the slide says it 'can extract spatial information', read "
                   "'combines the channels at each position'.")
    if result.reduce is not None:
        st.markdown("**Total MACs against the reduction's width**")
        st.plotly_chart(reduction_sweep_figure(setup), key="calc_sweep_chart", width="stretch")
        st.caption("Where the solid line crosses the dashed one, the reduction stops paying: it then keeps more "
                   "channels than the k x k convolution can use cheaply.")


def unbroken(text: str) -> str:
    """`text` with no-break spaces: a formula wraps before it on a phone, never inside it."""
    return text.replace(" ", "\u00a0")


def times(ratio: float) -> str:
    """'21.4x', with two decimals near 1 where one would read '1.0x' for a real difference ('1.01x')."""
    return f"{ratio:.1f}x" if ratio >= 1.1 else f"{ratio:.2f}x"


FACTOR_FIELDS = (  # setup field, label, help, maximum, step
    ("height", "H", "Height of the input (and output) maps", 2048, 1),
    ("width", "W", "Width of the input (and output) maps", 2048, 1),
    ("in_channels", "C_in", "Input channels", 8192, 1),
    ("out_channels", "C_out", "Output channels", 8192, 1),
    ("kernel", "k (odd)", "The large kernel the chains replace: k x k", 31, 2),
)
FACTOR_KERNELS = (3, 5, 7, 9, 11)


def _chain_table(result) -> pd.DataFrame:
    """The single k x k convolution, then the chain layer by layer with its receptive field so far."""
    kernels = [layer.kernel for layer in result.layers]
    rows = [("one " + result.single.label, result.single, receptive_field([result.single.kernel]))]
    rows += [(layer.label, layer, receptive_field(kernels[:i + 1])) for i, layer in enumerate(result.layers)]
    return pd.DataFrame([{
        "Convolution": name, "Kernel": "x".join(map(str, cost.kernel)), "C_in": cost.in_channels,
        "C_out": cost.out_channels, "Receptive field so far": "x".join(map(str, field)),
        "MACs": cost.macs, "MACs formula": cost.formula, "Params": cost.params, "Params formula": cost.params_formula,
    } for name, cost, field in rows])


def _c_squared_latex(result) -> str:
    """With C_in = C_out = C and no bias: the chain's and the single convolution's parameters in C^2."""
    single, chain = result.c_squared_coefficients
    terms = " + ".join(rf"{kh} \times {kw}" for kh, kw in (layer.kernel for layer in result.layers))
    k = result.setup.kernel
    return (rf"\begin{{gathered}}\underbrace{{({terms})\,C^2 = {chain}\,C^2}}_{{\text{{chain}}}} \\ \text{{vs}}\quad "
            rf"\underbrace{{{k} \times {k}\,C^2 = {single}\,C^2}}_{{\text{{one }} {k} \times {k}}}\end{{gathered}}")


def _factorization_block(result, title: str) -> None:
    chain = " + ".join("x".join(map(str, layer.kernel)) for layer in result.layers)
    st.subheader(f"{title}: one {result.single.label} against {chain}")
    st.dataframe(_chain_table(result), hide_index=True, placeholder=EMPTY, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="localized") for c in ("MACs", "Params")})
    st.markdown(f"`MACs of the chain = {result.formula}`  \n`Params of the chain = {result.params_formula}`")
    field = "x".join(map(str, result.receptive_field))
    row = metric_row()
    k = result.setup.kernel
    row.metric(f"{title}: receptive field", field,
               help=f"What the chain's last layer sees of the input, the same as one {k}x{k}: each stride-1 "
                    "kh x kw layer widens it by kh - 1 and kw - 1, so n 3x3 layers see 1 + 2n.")
    row.metric(f"{title}: MACs of the chain", human(result.macs),
               delta=f"{-result.saving:.0%} of {human(result.single.macs)}", delta_color="inverse",
               help=f"One {result.single.label}: {result.single.formula}; the chain: {result.formula}")
    row.metric(f"{title}: fewer MACs", f"{result.ratio:.2f}x")
    row.metric(f"{title}: params of the chain", human(result.params),
               delta=f"{1 / result.params_ratio - 1:.0%} of {human(result.single.params)}",
               delta_color="inverse",
               help=f"{result.params_ratio:.2f}x fewer. One {result.single.label}: "
                    f"{result.single.params_formula}; the chain: {result.params_formula}")
    st.latex(_c_squared_latex(result))
    st.caption(f"All weights with C_in = C_out = C and no bias (also the multiply-accumulates per output pixel): "
               f"the chain has {result.c_squared_coefficients[1]}/{result.c_squared_coefficients[0]} of the single "
               "convolution's.")


def _kernel_sweep_table(setup: FactorizationSetup, bias: bool) -> pd.DataFrame:
    """Both factorizations for each odd kernel from 3 to 11 at the chosen H, W, C_in and C_out."""
    rows = []
    for k in FACTOR_KERNELS:
        vgg, asymmetric = factorizations(FactorizationSetup(**{**vars(setup), "kernel": k}), bias)
        rows.append({"k": k, "k x k MACs": vgg.single.macs, "3x3 layers": len(vgg.layers),
                     "Stack receptive field": "x".join(map(str, vgg.receptive_field)), "3x3 stack MACs": vgg.macs,
                     "3x3 stack: fewer (x)": round(vgg.ratio, 2), "1xk + kx1 MACs": asymmetric.macs,
                     "1xk + kx1: fewer (x)": round(asymmetric.ratio, 2)})
    return pd.DataFrame(rows)


def factorized_convolutions() -> None:
    st.header("Factorized convolutions")
    st.caption("VGG replaced AlexNet's large filters (11x11 and 5x5) with 3x3 convolutions one after another; "
               "Inception-v3 factorized its convolutions further, into a 1 x k followed by a k x 1. Both chains "
               "see the same k x k receptive field as the one large convolution. 'Same' padding and stride 1 "
               "throughout; the chain's first layer maps C_in to C_out, the others C_out to C_out. MACs per image, "
               "(H x W x C_out) x (kh x kw x C_in) per layer.")
    columns = st.columns(len(FACTOR_FIELDS))
    values = {field: int(column.number_input(label, 1, maximum, value=getattr(FACTORIZATION_EXAMPLE, field),
                                             step=step, key=f"factor_{field}", persist_state="session",
                                             help=help_text))
              for column, (field, label, help_text, maximum, step) in zip(columns, FACTOR_FIELDS)}
    bias = st.checkbox("Count one bias per filter", value=True, key="factor_bias", persist_state="session",
                       help="As in the calculator above. Without biases, and with C_in = C_out, the parameters "
                            "are exactly the C² counts below (two 3x3 = 18C², one 5x5 = 25C²).")
    try:
        setup = FactorizationSetup(**values)
    except ValueError as error:
        st.error(str(error).capitalize() + ".", icon=":material/error:")
        return
    vgg, asymmetric = factorizations(setup, bias)
    if vgg.unchanged:
        st.info(f"VGG's stack of 3x3 convolutions: a {setup.kernel}x{setup.kernel} is already its layer, so there is "
                "nothing to factorize. Choose k = 5 or more to compare.", icon=":material/info:")
    else:
        _factorization_block(vgg, "VGG")
    st.caption("The VGG paper (section 2.3): three 3x3 layers have 27C² weights where one 7x7 has 49C², 81% more; "
               "and the stack puts a non-linearity after each layer.")
    _factorization_block(asymmetric, "Inception-v3")
    st.caption("1x3 then 3x1 costs 6/9 of a 3x3: a third saved. Inception-v3's 17x17 modules use 1x7 then 7x1.")
    st.subheader("By kernel size")
    st.dataframe(_kernel_sweep_table(setup, bias), hide_index=True, placeholder=EMPTY, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="localized")
                                for c in ("k x k MACs", "3x3 stack MACs", "1xk + kx1 MACs")})


def _conv_table(module) -> pd.DataFrame:
    """One row per convolution of `module` (its path names its branch), as built and without the reductions; a
    stride column only where some convolution strides."""
    strided = any(c.built.stride[0] != 1 for c in module.convs)
    return pd.DataFrame([{
        "Convolution": c.path, "Role": c.role, "Kernel": "x".join(map(str, c.built.kernel)),
        "C_in": c.built.in_channels, "C_out": c.built.out_channels, "MACs": c.built.macs,
        "MACs without": c.without.macs if c.without else 0, "As built": c.built.formula,
        "Without reductions": c.without.formula if c.without else "removed", "Params": c.built.params,
        "Params without": c.without.params if c.without else 0, "Output H x W": "x".join(map(str, c.built.output_hw)),
        **({"Stride": c.built.stride[0]} if strided else {}), "Fed by": ", ".join(c.fed_by),
    } for c in module.convs])


def real_modules() -> None:
    st.header("Real modules")
    st.caption("Every Inception module (or bottleneck block, or dense layer) of the chosen network, read from "
               "the built model: each convolution's channels and its own output H x W come from a forward pass "
               "on meta tensors. 'Without' feeds every convolution that followed a 1x1 reduction the module's full "
               "input instead and drops the reduction. MACs are per image; parameters are convolution weights "
               "and biases.")
    archs = reduction_archs()
    sidebar_arch = current_settings().arch
    st.session_state.setdefault("reductions_arch", sidebar_arch if sidebar_arch in archs else "googlenet")
    arch = st.selectbox("Network", archs, key="reductions_arch", persist_state="session",
                        format_func=lambda n: get_spec(n).title)
    paper = arch == "googlenet" and st.toggle(
        "The paper's 5x5 convolutions", key="reductions_paper_kernels", persist_state="session",
        help="torchvision's GoogLeNet has 3x3 where the paper, and the lecture's slide, have 5x5 in each module's "
             "third branch (torchvision issue #906). On: the modules as the paper builds them.")
    with st.spinner(f"Reading {get_spec(arch).title}'s modules"):
        network = network_reductions(arch, paper)
    totals = network.totals()
    row = metric_row()
    row.metric(f"{len(network.modules)} modules, as built", human(network.built_macs) + " MACs")
    row.metric("Without 1x1 reductions", human(network.without_macs) + " MACs")
    row.metric("Saved", f"{network.ratio:.2f}x")
    row.metric("Whole network", f"{human(network.network_macs)} → {human(totals['network_macs_without'])}",
               help="All of the network's MACs as built → with every module's reductions removed.")
    st.plotly_chart(module_macs_bars(network), key="modules_chart", width="stretch")
    summary = pd.DataFrame([{"#": i, **m.summary()} for i, m in enumerate(network.modules, 1)]).rename(columns={
        "module": "Module", "type": "Type", "input": "Input", "output": "Output", "reductions": "1x1 reductions",
        "own_branch_1x1": "1x1 branches", "pool_projections": "Pool projections", "macs": "MACs",
        "macs_without": "MACs without", "ratio": "Saved (x)", "params": "Params", "params_without": "Params without"})
    module_px = text_column_px(summary["Module"], "Module")  # DenseNet's run long: not pinned, or a phone sees no more
    st.dataframe(summary, hide_index=True, placeholder=EMPTY, width="stretch",
                 column_order=["#", "Module", "Saved (x)", "MACs", "MACs without", "Params", "Params without",
                               "Type", "Input", "Output", "1x1 reductions", "1x1 branches", "Pool projections"],
                 column_config={"#": st.column_config.NumberColumn(pinned=True),
                                "Module": st.column_config.TextColumn(width=module_px, pinned=module_px <= PINNED_PX),
                                "Type": st.column_config.TextColumn(width=text_column_px(summary["Type"])),
                                "Saved (x)": st.column_config.NumberColumn(format="%.2fx", help=(
                                    "MACs without the reductions / MACs as built")),
                                **{c: st.column_config.NumberColumn(format="localized")
                                   for c in ("MACs", "MACs without", "Params", "Params without")}})
    if arch == "googlenet":
        st.caption("The lecture's slide is inception4a's third branch (480 channels at 14x14, reduced to 16, "
                   "then 48 filters). " + (
                       "These are the paper's modules, 5x5 in that branch, as the slide counts them." if paper else
                       "torchvision's GoogLeNet uses 3x3 where the paper has 5x5 in that branch, so its numbers "
                       "here, and what its reductions save, are smaller than the paper's: switch on \"The paper's "
                       "5x5 convolutions\" above for the slide's network."))
    if any(m.ratio < 1 for m in network.modules):
        st.caption("A 'saved' below 1 means the module's 1x1 does not narrow: it keeps the width (ResNet-50's first "
                   "block, 64 channels in and 64 out) or widens it (DenseNet's first layers), so there the 1x1 costs "
                   "more than it saves.")
    module_path = st.selectbox("Branches of one module", [m.path for m in network.modules], key="reductions_module",
                               persist_state="session")
    module = next(m for m in network.modules if m.path == module_path)
    st.dataframe(_conv_table(module), hide_index=True, placeholder=EMPTY, width="stretch",
                 column_config={"Convolution": st.column_config.TextColumn(pinned=True),
                                **{c: st.column_config.NumberColumn(format="localized")
                                   for c in ("MACs", "Params", "MACs without", "Params without")}})
    with st.expander("What the roles mean", icon=":material/help:"):
        st.markdown("\n".join(f"- **{role}**: {text}" for role, text in ROLE_DESCRIPTIONS.items()))
        st.caption(f"Only a '{REDUCTION}' is removed in the 'without' variant; every other 1x1 stays.")


def global_average_pooling() -> None:
    st.header("Global average pooling")
    st.caption("GoogLeNet averages each 7x7 feature map to 1x1 before its classifier: the pooling has no "
               "parameters, and the dense layer after it sees C numbers instead of H x W x C. For each network, "
               "its first dense layer fed by global average pooling against the same layer fed by a flatten of "
               "the last feature map (VGG's 7x7x512 flatten into 4096, against GAP into the same 4096).")
    with st.spinner("Reading every network's head"):
        comparisons = head_comparisons()
    table = pd.DataFrame([{
        "Architecture": get_spec(c.arch).title, "Flatten / GAP": round(c.ratio, 1), "Head as built": c.built_head,
        "Model params": c.model_params, "Model params with the other head": c.model_params_other_head,
        "Last feature map": "x".join(map(str, c.feature_shape)), "Dense layer": c.dense_path, "Width": c.width,
        "With GAP": c.gap_formula, "With flatten": c.flatten_formula,
    } for c in comparisons])
    st.dataframe(table, hide_index=True, placeholder=EMPTY, width="stretch", height=whole_table_height(len(table)),
                 column_config={"Architecture": st.column_config.TextColumn(pinned=True),
                                **{c: st.column_config.NumberColumn(format="localized")
                                   for c in ("Model params", "Model params with the other head")}})
    st.markdown("**Parameters of the first dense layer** (log scale)")
    st.plotly_chart(gap_vs_flatten_bars(comparisons), key="gap_chart", width="stretch")


st.title("1x1 reductions")
calculator()
factorized_convolutions()
real_modules()
global_average_pooling()
