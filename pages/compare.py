import pages.menu  # noqa: F401, I001  (first: a first visit straight to this page's URL goes through app.py at once)

import pandas as pd
import streamlit as st

from cnnlab.charts import accuracy_vs_operations, metric_bars, short_title
from cnnlab.compare import architecture_rows
from cnnlab.jobs import transfer_results
from cnnlab.latency import LatencyCache, busy_reason
from cnnlab.lecture import check_claims
from cnnlab.profiling import human, profile_arch
from cnnlab.registry import arch_names, get_spec, stage_labels
from pages.common import current_settings
from pages.widgets import EMPTY, PERCENT, arch_picker, metric_row, panes, whole_table_height

LATENCY_BATCHES = (1, 8)

st.title("Compare architectures")
st.caption("Parameters, operations (multiply-accumulates, MACs; FLOPs = 2 x MACs) and depth are measured on "
           "cnnlab's builds at each network's own input size; accuracies are the published ones, with their source.")

with st.spinner("Counting the parameters and operations of every architecture (once per server start)..."):
    rows = architecture_rows()
settings = current_settings()
latency_cache = LatencyCache()


@st.cache_data(show_spinner=False)
def layer_table(arch: str) -> pd.DataFrame:
    """One row per layer: output shape of one image (channels x height x width), parameters, MACs, formula."""
    return pd.DataFrame([{"layer": r.name, "type": r.type_label,
                          "output": " x ".join(map(str, r.output_shape[1:])) if r.output_shape else "",
                          "params": r.params, "trainable": r.trainable_params, "MACs": r.macs, "formula": r.formula}
                         for r in profile_arch(arch).rows])


@st.cache_data(show_spinner=False)
def claims_table() -> pd.DataFrame:
    return pd.DataFrame([{
        "Claim": f"{short_title(get_spec(c.claim.arch).title)}, {c.claim.what}", "Verdict": c.verdict,
        "Lecture says": c.claim.stated, "cnnlab's network": c.measured, "Within": c.claim.within,
        "Counted as": c.measured_how,
    } for c in check_claims()])


def claim_notes() -> str:
    """Each claim's slide quote and why the lab's number differs (or agrees only roughly): the disagreements first."""
    verdicts = {"differs": ":red[**differs**] ", "not comparable": ":gray[**not comparable**] ", "agrees": ""}
    checks = sorted((c for c in check_claims() if c.claim.note), key=lambda c: list(verdicts).index(c.verdict))
    return "\n".join(f"- {verdicts[c.verdict]}**{get_spec(c.claim.arch).title}, "
                     f"{c.claim.what}**: slide *\"{c.claim.quote}\"*. {c.claim.note}"
                     for c in checks)


def latency_column(batch: int) -> str:
    return f"ms per batch of {batch}"


try:
    measured = latency_cache.for_device(settings.device)
except ValueError as error:
    st.warning(str(error))
    measured = {}
yours = transfer_results()
your_datasets = sorted({y["dataset"] for y in yours.values()})
yours_column = "Yours: best val acc" + (f" on {your_datasets[0]}" if len(your_datasets) == 1 else "")
table = pd.DataFrame([{
    "Architecture": r["title"], "ImageNet top-1 %": r["top1"], "ImageNet top-5 %": r["top5"],
    yours_column: 100 * yours[r["name"]]["val_acc"] if r["name"] in yours else None,
    "Params (M)": r["params"] / 1e6, "GMACs": r["gmacs"], "Year": r["year"],
    **{latency_column(b): (measured[(r["name"], b)].median_ms if (r["name"], b) in measured else None)
       for b in LATENCY_BATCHES},
    "Depth": r["depth"],
    "Size (MiB, fp32)": r["size_mb"], "Family": r["family"], "Input": "x".join(map(str, r["input_size"])),
    "Your run": (f"{yours[r['name']]['method']} on {yours[r['name']]['dataset']} "
                 f"({yours[r['name']]['run']})" if r["name"] in yours else "—"),
    "Accuracy source": r["accuracy_source"] or "—",
} for r in rows])
unmeasured = [latency_column(b) for b in LATENCY_BATCHES if not any((r["name"], b) in measured for r in rows)]
table = table.drop(columns=unmeasured + ([] if yours else [yours_column, "Your run"]))  # no empty columns
st.dataframe(
    table.style.format({"GMACs": "{:#.3g}"}, na_rep=EMPTY),  # '#': 1.50, not sprintf's 1.5
    hide_index=True, placeholder=EMPTY, width="stretch", height=whole_table_height(len(table)),
    column_config={
        "Architecture": st.column_config.TextColumn(pinned=True),
        "Params (M)": st.column_config.NumberColumn(format="%.2f"),
        "ImageNet top-1 %": st.column_config.NumberColumn(format="%.1f"),
        "ImageNet top-5 %": st.column_config.NumberColumn(format="%.1f"),
        "Input": st.column_config.TextColumn(width=90),
        "Size (MiB, fp32)": st.column_config.NumberColumn(
            format="%.2f", help="Parameters and buffers at 4 bytes each, in MiB (2^20 bytes), as torchvision's "
                                "'file size' counts them: VGG-16's 138.4M parameters are 527.8 MiB, 553 MB."),
        **{latency_column(b): st.column_config.NumberColumn(
            format="%.1f", help=f"Measured forward time of one batch of {b} image{'s' if b > 1 else ''} on this "
                                f"machine (median){f', {b} images at once: divide by {b} for one' if b > 1 else ''}")
           for b in LATENCY_BATCHES},
        yours_column: st.column_config.NumberColumn(
            format=PERCENT, help="Your transfer results, not ImageNet's: the best finished run of this architecture "
                                 "on your own data (Runs page); the 'Your run' column names it and its dataset"),
    },
)
not_imagenet = [f"{r['title']}'s published result is a {r['error']}% error on {r['accuracy_dataset']}"
                for r in rows if r["error"] is not None]
not_imagenet += [f"{r['title']} has no published accuracy" for r in rows if r["top1"] is None and r["error"] is None]
st.caption("Click a column header to sort. Latency columns appear once measured (below), yours once a run has "
           f"finished. {'; '.join(not_imagenet)}.")

with st.expander("Measure latency on this machine", icon=":material/timer:"):
    st.write("Forward time of each network with random weights: median of 10 runs after 3 warm-up runs, "
             f"at batch sizes {' and '.join(map(str, LATENCY_BATCHES))}. Results are kept for this device and "
             "thread count.")
    chosen = st.multiselect("Architectures to time", arch_names(), default=[settings.arch],
                            key="compare_latency_archs", persist_state="session",
                            format_func=lambda n: get_spec(n).title)
    if busy := busy_reason():
        st.warning(f"{busy}: timings made now read long. Measure once it is idle; a new measurement replaces the "
                   "kept one.", icon=":material/speed:")
    if st.button("Measure", icon=":material/play_arrow:", disabled=not chosen):
        progress = st.progress(0.0)
        jobs = [(arch, batch) for arch in chosen for batch in LATENCY_BATCHES]
        try:
            for done, (arch, batch) in enumerate(jobs):
                text = f"Timing {get_spec(arch).title} at batch {batch} ({done + 1} of {len(jobs)})"
                progress.progress(done / len(jobs), text)  # building the network comes before its first pass
                result = latency_cache.measure(
                    arch, batch, settings.device,
                    progress=lambda share, done=done, text=text: progress.progress((done + share) / len(jobs), text))
            progress.progress(1.0, text=f"Done on {result.label}")
            st.rerun()
        except ValueError as error:
            st.error(str(error))
    if measured:
        st.caption("Measured on " + next(iter(measured.values())).label + ".")
    if noisy := [m for m in measured.values() if m.noisy]:
        st.warning("These timings varied a lot from pass to pass, so other work on the machine, not the network, "
                   "set them; measure them again when it is idle: " + "; ".join(
                       f"{get_spec(m.arch).title} at batch {m.batch} (median {m.median_ms:.1f} ms, fastest "
                       f"{m.min_ms:.1f} ms)" for m in noisy) + ".", icon=":material/speed:")

st.subheader("Accuracy against operations")
st.plotly_chart(accuracy_vs_operations(rows), width="stretch")
largest = max((r for r in rows if r.get("top1") is not None), key=lambda r: r["params"])
st.caption("As on the lecture's 'Comparison' slide: the bigger the bubble, the more parameters, its area in proportion "
           f"(the largest, {largest['title']}, has {human(largest['params'])}). EffNet: EfficientNet; hover a bubble "
           "for its full name and numbers.")

metric_choices = {"params": ("Parameters", True), "gmacs": ("GMACs per image", True), "depth": ("Depth", False)}
metric = st.segmented_control("Per architecture", list(metric_choices), default="params", required=True,
                              key="compare_metric", persist_state="session", format_func=lambda m: metric_choices[m][0])
st.plotly_chart(metric_bars(rows, metric, *metric_choices[metric]), width="stretch")

st.subheader("Lecture claims, checked")
claims = claims_table()
st.dataframe(claims, hide_index=True, placeholder=EMPTY, width="stretch", height=whole_table_height(len(claims)),
             column_config={"Claim": st.column_config.TextColumn(width=190, pinned=True),
                            "Verdict": st.column_config.TextColumn(
                                width=110, help="agrees: cnnlab's number comes as close to the lecture's as 'Within' "
                                                "says (slides round their numbers: 60 Million for 61.1M). Not "
                                                "comparable: the slide's number is of another model or test set"),
                            "Within": st.column_config.TextColumn(width=70),
                            "Lecture says": st.column_config.NumberColumn(format="localized", width=110),
                            "cnnlab's network": st.column_config.NumberColumn(format="localized", width=120),
                            "Counted as": st.column_config.TextColumn(help="Click a cell to read it whole")})
st.markdown("**Why the numbers differ**")
st.markdown(claim_notes())

st.subheader("Inside one architecture")
arch = arch_picker("compare_arch")
spec = get_spec(arch)
profile = profile_arch(arch)
left, right = panes("compare-arch", 2, 3)
with left:
    st.markdown(f"**{spec.title}** ({spec.family}, {spec.year})  \n"
                f"[{spec.paper.title}]({spec.paper.url}), {spec.paper.authors}")
    st.markdown(f"Implementation: **{spec.source}** `{spec.builder}`  \n"
                f"Input {'x'.join(map(str, spec.input_size))}: {spec.preprocessing.describe()}  \n"
                f"Classifier: `{spec.classifier}`; stages: {', '.join(stage_labels(arch))}")
    row = metric_row()
    row.metric("Parameters", human(profile.params))
    row.metric("MACs", human(profile.macs), help=f"FLOPs = 2 x MACs = {human(profile.flops)}")
    row.metric("Depth", profile.depth, help="Longest chain of conv and linear layers")
with right:
    if spec.notes:
        st.markdown("**Paper vs implementation**")
        st.markdown("\n".join(f"- {note}" for note in spec.notes))
st.dataframe(layer_table(arch), hide_index=True, placeholder=EMPTY, width="stretch", height=460,
             column_config={"output": st.column_config.TextColumn("output (C x H x W)"),
                            "params": st.column_config.NumberColumn(format="localized"),
                            "trainable": st.column_config.NumberColumn(format="localized"),
                            "MACs": st.column_config.NumberColumn(format="localized", width=120),
                            "formula": st.column_config.TextColumn(
                                "How the MACs are counted", width="large",
                                help="Convolutions: (H x W x Cout) x (k x k x Cin), the lecture's form, where Cin "
                                     "is the channels each filter sees: all the input's, or in a grouped "
                                     "convolution its group's (1 in MobileNet's and EfficientNet's depthwise "
                                     "3x3s, hence their x1); linear layers: Cout x Cin")})
st.caption("One row per layer in the order they run; rows sum to the totals. Formulas are for one image. A module "
           "that runs several times (torchvision ResNet's one ReLU per block) is one row, at its first run, with "
           "the output of its last. A type marked *(own)* is a module's own parameters or work, beside its "
           "children's rows (timm's BatchNormAct2d: the norm's weights, with its activation as a child).")
