import pages.menu  # noqa: F401, I001  (first: a first visit straight to this page's URL goes through app.py at once)

import pandas as pd
import streamlit as st

from cnnlab import jobs
from cnnlab.charts import accuracy_vs_cost, run_curves, stable_colors
from cnnlab.naming import dataset_label
from cnnlab.registry import arch_title
from cnnlab.training import config_in_use, differing_settings
from cnnlab.runstore import ACTIVE, RunStore
from pages.widgets import DELETED_WHERE, EMPTY, PERCENT, in_percent, panes, text_column_px

FEATURE_SOURCES = {"hit": "from the cache", "partial": "partly cached", "miss": "computed"}

REFRESH = "3s"


def draw_comparison(chosen: list[str]) -> None:
    """The chosen runs' table, accuracy against cost and curves, read afresh from the store: every few seconds
    while some of them are still going."""
    store = RunStore()
    runs = {r.id: r for r in store.runs()}
    if any(i not in runs for i in chosen):
        st.rerun()  # deleted meanwhile: the whole page, so that its chip goes too and the page says why
    st.subheader("Results")  # (and room for the table's toolbar, which would cover the box of runs above)
    unfinished = [i for i in chosen if runs[i].status in ACTIVE]
    if unfinished:
        st.caption(f":material/sync: {len(unfinished)} of these runs {'is' if len(unfinished) == 1 else 'are'} "
                   "still going: this page follows them.")

    rows, histories = [], {}
    colors_by_run = stable_colors(list(reversed(runs)))  # oldest first: a run keeps its colour
    colors = {}
    mixed = len({runs[i].config.get("dataset") for i in chosen}) > 1
    if mixed:
        datasets = sorted({dataset_label(runs[i].config.get("dataset", "")) for i in chosen})
        st.warning(f"These runs learned different data ({', '.join(datasets)}): their accuracies are each on their "
                   "own validation images, so set them side by side with care; pick runs on one dataset for a fair "
                   "comparison.", icon=":material/warning:")
    for run_id in chosen:
        run = runs[run_id]
        result, used = run.result or {}, config_in_use(run.config)
        method = jobs.method_of(run)  # with the input size when not the network's own
        label = f"{run_id} · {method} · {arch_title(run.config.get('arch'))}"
        if mixed:  # runs on other data: say which, or the comparison misleads
            label += f" · {dataset_label(run.config.get('dataset', ''))}"
        histories[label] = result.get("epochs") or store.metrics(run_id, "epoch")
        colors[label] = colors_by_run[run_id]
        rows.append({"label": label, "run": run_id, "status": run.status,
                     "method": jobs.method_of(run, size=False),  # the table has an input size column
                     "strategy": run.config.get("strategy"),
                     "arch": arch_title(run.config.get("arch")), "dataset": dataset_label(run.config.get("dataset", "")),
                     "epochs": used.get("epochs"), "image_size": used.get("image_size"), "lr": used.get("lr"),
                     "freeze": used.get("freeze"),
                     "val_acc": jobs.run_accuracy(run, store), "train_time_s": result.get("train_time_s"),
                     "params_trainable": result.get("params_trainable"), "params_frozen": result.get("params_frozen"),
                     "total_gmacs": result["total_macs"] / 1e9 if result.get("total_macs") else None,
                     "feature_cache": result.get("feature_cache"),
                     "features": FEATURE_SOURCES.get(result.get("feature_cache"))})

    table = pd.DataFrame(rows)
    table["val_acc"] = in_percent(table["val_acc"])
    partial = (table["status"] != "succeeded").any()  # stopped or still going: say so beside the accuracy
    st.dataframe(table, hide_index=True, placeholder=EMPTY, width="stretch",
                 column_order=["run", "val_acc", *(["status"] if partial else []), "method", "arch", "dataset",
                               "epochs", "image_size", "lr", *(["freeze"] if table["freeze"].notna().any() else []),
                               "train_time_s", *(["features"] if table["features"].notna().any() else []),
                               "total_gmacs", "params_trainable", "params_frozen", *([] if partial else ["status"])],
                 column_config={"run": st.column_config.TextColumn("Run", pinned=True), "status": "Status",
                                **{column: st.column_config.TextColumn(title,
                                                                       width=text_column_px(table[column], title))
                                   for column, title in (("method", "Strategy"), ("arch", "Architecture"),
                                                         ("dataset", "Dataset"))},  # whole: a run is told by them
                                "features": st.column_config.TextColumn(
                                    "Features", help="Strategy III: computed by the run, or read from the cache an "
                                                     "earlier run filled (then its training time is far shorter)"),
                                "val_acc": st.column_config.NumberColumn("Val accuracy", format=PERCENT),
                                "epochs": st.column_config.NumberColumn(
                                    "Epochs", help="Blank: a classifier fitted in one go (Strategy III)"),
                                "image_size": st.column_config.NumberColumn("Input (px)"),
                                "lr": st.column_config.NumberColumn(
                                    "Learning rate", format="%g", help="Blank: a classifier fitted in one go"),
                                "freeze": st.column_config.TextColumn("Freeze", help="Strategy II's freeze plan"),
                                "train_time_s": st.column_config.NumberColumn("Training time (s)", format="%.1f"),
                                "params_trainable": st.column_config.NumberColumn("Trainable params", format="localized"),
                                "params_frozen": st.column_config.NumberColumn("Frozen params", format="localized"),
                                "total_gmacs": st.column_config.NumberColumn(
                                    "Training GMACs", format="%.1f",
                                    help="What the run computed in all, from its freeze plan: per training image, "
                                         "forward + input gradients + weight gradients, times images and epochs, plus "
                                         "the validation passes (Strategy III: one forward pass over every image)")})

    if differences := differing_settings([runs[i].config for i in chosen]):
        st.caption(f":material/info: These runs differ in {differences}, not only in strategy or network: part of "
                   "any gap in accuracy comes from that.")
    finished = [r for r in rows if r["val_acc"] is not None and r["train_time_s"] is not None]
    if finished:
        st.subheader("Accuracy against compute")
        costs = {"train_time_s": ("Training time (s)", False), "total_gmacs": ("Training compute (GMACs, log scale)", True)}
        cost = st.segmented_control("Compute as", list(costs), default="train_time_s", required=True,
                                    key="compare_cost", persist_state="session",
                                    format_func=lambda c: costs[c][0].split(" (")[0])
        shown = [r for r in finished if r[cost] is not None]
        st.plotly_chart(accuracy_vs_cost(shown, cost, *costs[cost], colors=colors), width="stretch")
    unplaced = [r["run"] for r in rows if r["val_acc"] is not None and r["train_time_s"] is None
                and r["strategy"] != "probe"]
    if finished and unplaced:
        st.caption(f"Not in the chart, as they have no training time yet (still going, or stopped by a kill before "
                   f"their end): {', '.join(unplaced)}.")
    if finished and (probes := [r["run"] for r in rows if r["strategy"] == "probe" and r["val_acc"] is not None]):
        st.caption(f"Not in the chart: {', '.join(probes)}, a probe fits a classifier at every stage, and its accuracy "
                   "is its best stage's, picked on the same validation images: a measure of the features, not one "
                   "model to set beside the others.")
    if any(histories.values()):
        st.subheader("Curves")
        loss_column, acc_column = panes("compare-curves", 1, 1, min_width=360)
        loss_column.plotly_chart(run_curves(histories, ("loss", "val_loss"), colors), width="stretch")
        acc_column.plotly_chart(run_curves(histories, ("acc", "val_acc"), colors), width="stretch")
    without = "; ".join(f"{row['run']} {jobs.why_no_curve(runs[row['run']])}" for row in rows
                        if not histories[row["label"]])
    if any(histories.values()) and without:
        st.caption(f"Not in the curves: {without}.")
    elif without:
        st.caption(f"No curves to overlay: {without}. Runs of Strategy I or II, or III with the linear layer trained "
                   "in PyTorch, draw a curve per epoch.")


st.title("Compare runs")
st.caption("Overlay the curves of several runs and put their accuracy beside what they cost. A strategy shootout "
           "(from the Launch page) runs I, II and III on the same data and backbone.")

store = RunStore()
jobs.recover_interrupted(store)
runs = {r.id: r for r in store.runs()}
if not runs:
    st.info("No runs yet.")
    st.page_link("pages/launch.py", label="Launch a run", icon=":material/rocket_launch:")
    st.stop()

if deleted := [i for i in st.session_state.get("compare_selected", []) if i not in runs]:
    st.session_state["compare_selected"] = [i for i in st.session_state["compare_selected"] if i in runs]
    st.warning(f"{'Run ' if len(deleted) == 1 else 'Runs '}{', '.join(deleted)} "
               f"{'was' if len(deleted) == 1 else 'were'} deleted ({DELETED_WHERE}), "
               f"so the comparison leaves {'it' if len(deleted) == 1 else 'them'} out.", icon=":material/delete:")
shootout = [i for i in st.session_state.pop("compare_runs", []) if i in runs]
if shootout:
    st.session_state["compare_selected"] = shootout
finished = [i for i, r in runs.items() if r.status == "succeeded" and r.config.get("strategy") != "probe"]
newest_data = runs[finished[0]].config.get("dataset") if finished else None
st.session_state.setdefault("compare_selected",  # the newest finished runs on the data of the newest one
                            [i for i in finished if runs[i].config.get("dataset") == newest_data][:4])
chosen = st.multiselect("Runs", list(runs), key="compare_selected", format_func=lambda i: jobs.run_label(runs[i]))
if not chosen:
    st.info("Pick the runs to compare above: their curves, and their accuracy against what they cost.")
    st.stop()


going = any(runs[i].status in ACTIVE for i in chosen)
st.fragment(run_every=REFRESH if going else None)(draw_comparison)(chosen)
