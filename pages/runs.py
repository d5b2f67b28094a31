import pages.menu  # noqa: F401, I001  (first: a first visit straight to this page's URL goes through app.py at once)

from pathlib import Path

import pandas as pd
import streamlit as st

from cnnlab import jobs
from cnnlab.charts import confusion_figure, per_class_bars, probe_figure, run_curves, step_loss_figure
from cnnlab.checkpoints import (EXPORT_FORMATS, NO_MODEL, CheckpointError, archive_bytes, checkpoint_epoch,
                               export_checkpoint)
from cnnlab.data import first_names
from cnnlab.naming import CLASSIFIER_NAMES
from cnnlab.heads import keeps_examples
from cnnlab.images import fit_within
from cnnlab.mistakes import MistakeReport, MistakesError, validation_mistakes
from cnnlab.registry import arch_title, stage_labels
from cnnlab.runstore import ACTIVE, RESUMABLE, RunStore
from cnnlab.training import config_in_use, guessing_note, probe_reading, validation_ahead_note
from pages.common import current_settings
from pages.widgets import EMPTY, PERCENT, in_percent, metric_row, panes, preset_arch, text_column_px

REFRESH = "2s"
SMALL_VALIDATION = 50  # fewer validation images than this: the accuracy comes with a warning
STATUS_COLORS = {"queued": "gray", "running": "blue", "cancelling": "orange", "succeeded": "green", "failed": "red",
                 "cancelled": "orange", "interrupted": "violet"}


@st.cache_data(show_spinner=False, max_entries=16)
def find_mistakes(checkpoint: str, device: str) -> MistakeReport:
    return validation_mistakes(Path(checkpoint), device=device)


MISTAKE_PX = 104  # three a row on a phone's 358 px, with the gaps between them


def mistakes_section(run_id: str, checkpoint: str) -> None:
    """The validation images the run's model gets wrong, surest first, on request (it runs the model again)."""
    st.subheader("Mistakes")
    if not st.toggle("Show the validation images it gets wrong", key=f"runs_mistakes_{run_id}",
                     help="Runs the saved model over the run's validation images again (on the sidebar's device) "
                          "and shows those it classifies wrongly, the most confident mistakes first."):
        return
    try:
        with st.spinner("Running the model over the validation images..."):
            report = find_mistakes(checkpoint, current_settings().device)
    except MistakesError as error:
        st.warning(str(error))
        return
    looked = (f"{report.examined:,} of the {report.validation_size:,}" if report.examined < report.validation_size
              else f"all {report.validation_size:,}")
    if not report.wrong:
        st.success(f"No mistakes: it classifies {looked} validation images right.", icon=":material/check:")
        return
    shown = ("all of them, surest first" if len(report.mistakes) == report.wrong
             else f"the {len(report.mistakes)} it was surest of")
    st.caption(f"{report.wrong:,} wrong among {looked} validation images ({report.accuracy:.1%} right). Shown: "
               f"{shown}, as true → predicted (the model's probability)." +
               (f" {report.scores_note}" if report.scores_note else ""))
    grid = st.container(horizontal=True, gap="small")
    for mistake in report.mistakes:
        grid.image(fit_within(mistake.image, MISTAKE_PX, min_side=96), width=MISTAKE_PX,
                   caption=f"{mistake.true} → {mistake.predicted} ({mistake.confidence:.0%})")


st.title("Runs")
store = RunStore()
jobs.recover_interrupted(store)
runs = store.runs()
if any(r.status == "queued" for r in runs) and jobs.start_worker() is not None:
    st.toast("Started a background worker for the queued runs.", icon=":material/engineering:")


def worker_caption(runs) -> None:
    """What the background worker is doing now, and where runs are kept."""
    in_terminals = len(jobs.command_line_pids())
    if not jobs.worker_alive():
        worker = "none now (one starts when a run is queued)"
    elif any(r.status == "running" for r in runs):
        worker = "training"
    else:
        worker = f"waiting for runs (it leaves after {jobs.WORKER_IDLE_EXIT_S / 60:.0f} idle minutes)"
    st.caption(f"Worker: {worker}"
               + (f"; {in_terminals} run{'s' if in_terminals > 1 else ''} training from the command line "
                  "(`cnnlab train`)" if in_terminals else "")
               + f". Runs are kept in `{store.path}`; they go on when you close this tab.")


if not runs:
    worker_caption(runs)
    st.info("No runs yet.")
    st.page_link("pages/launch.py", label="Launch a run", icon=":material/rocket_launch:")
    st.stop()



def small_validation_warning(validated: int, consequence: str = "this number is rough") -> None:
    """Warn that an accuracy measured on fewer than SMALL_VALIDATION images is rough."""
    if validated < SMALL_VALIDATION:
        st.warning(f"Only {validated} validation images: each one moves the accuracy by {1 / validated:.1%}, so "
                   f"{consequence}. More images per class give steadier numbers.", icon=":material/warning:")


def draw_table() -> None:
    """The worker's state and every run with its status and accuracy; refreshed every few seconds while a run is
    queued or running."""
    current_store = RunStore()
    current_runs = current_store.runs()
    worker_caption(current_runs)
    summaries = pd.DataFrame(jobs.run_summaries(current_runs, current_store))
    summaries["arch"] = summaries["arch"].map(arch_title)
    summaries["val_acc"] = in_percent(summaries["val_acc"])
    summaries["created"] = pd.to_datetime(summaries["created"])
    text = st.column_config.TextColumn
    method_px, dataset_px = (min(cap, text_column_px(summaries[c], title)) for c, title, cap in
                             (("method", "Strategy", 420), ("dataset", "Dataset", 200)))  # whole, up to a cap
    st.dataframe(summaries, hide_index=True, placeholder=EMPTY, width="stretch",
                 column_order=["id", "status", "val_acc", "method", "arch", "dataset", "epochs", "duration_s",
                               "created"],
                 column_config={"id": text("Run", pinned=True, width=105), "status": text("Status", width=85),
                                "method": text("Strategy", width=method_px, help="Click a cell to read it whole"),
                                "arch": text("Architecture", width=120), "dataset": text("Dataset", width=dataset_px),
                                "epochs": st.column_config.NumberColumn(
                                    "Epochs", width=65, help="As asked for; blank: a classifier fitted in one go"),
                                "created": st.column_config.DatetimeColumn("Created", format="MMM D, HH:mm",
                                                                           width=110),
                                "val_acc": st.column_config.NumberColumn(
                                    "Val accuracy", format=PERCENT, width=90,
                                    help="On the held-out validation images at the run's last epoch (so far, for "
                                         "a run still going or killed); a cancelled run's of the model it kept, its "
                                         "last checkpoint (after part of an epoch, if it stopped in its first); a "
                                         "probe's at its best stage"),
                                "duration_s": st.column_config.NumberColumn(
                                    "Duration (s)", format="%.1f", width=95,
                                    help="Wall time from start to end, its process starting and PyTorch loading "
                                         "included, over every attempt of a resumed run; the run's training time "
                                         "below is as the run measured it, from reading its data to its last "
                                         "evaluation.")})


st.fragment(run_every=REFRESH if any(r.status in ACTIVE for r in runs) else None)(draw_table)()

ids = [r.id for r in runs]
labels = {r.id: jobs.run_label(r) for r in runs}
launched = st.session_state.pop("selected_run", None)  # just launched: show it
linked = st.query_params.get("run") if "runs_selected" not in st.session_state else None  # a link or a reload
running = next((r.id for r in runs if r.status == "running"), None)


def run_to_show(shown_runs) -> str | None:
    """The run a page without a choice shows: the one being trained, else the newest; None when there is none."""
    return next((r.id for r in shown_runs if r.status == "running"), shown_runs[0].id if shown_runs else None)


if (launched or linked) in ids:
    st.session_state["runs_selected"] = launched or linked
elif linked:
    st.warning(f"No run {linked} here (the link may come from another data directory); showing "
               + ("the run being trained." if running else "the newest run."), icon=":material/search_off:")
elif "runs_selected" not in st.session_state and running:  # a first visit: the run being trained
    st.session_state["runs_selected"] = running
if (gone := st.session_state.get("runs_selected")) is not None and gone not in ids:  # deleted elsewhere meanwhile
    st.session_state["runs_selected"] = run_to_show(runs)
    st.session_state["runs_gone"] = gone
    st.query_params.pop("run", None)
    st.rerun()  # a click meant for the deleted run (Export, Predict with it) must not act on the one shown now
if gone := st.session_state.pop("runs_gone", None):
    st.warning(f"Run {gone} was deleted (from another tab or `cnnlab delete`); showing another run.",
               icon=":material/delete:")


def link_to_selected_run() -> None:
    """The address names the run picked, for a reload or a link; only a pick writes it, as a new browser history
    entry (written on every visit, it added one that Back only returned to the same run from)."""
    st.query_params["run"] = st.session_state["runs_selected"]


run_id = st.selectbox("Run", ids, key="runs_selected", format_func=labels.get, on_change=link_to_selected_run)
run = store.get(run_id)


def draw_live(run_id: str, was_active: bool) -> None:
    """Status, progress, curves and log of one run; refreshed every few seconds while it is active."""
    live_store = RunStore()
    jobs.recover_interrupted(live_store)  # a worker killed meanwhile: its run shows as interrupted at once
    current = live_store.get(run_id)
    if was_active and current.status not in ACTIVE:
        st.rerun()  # finished: draw the results and stop refreshing
    if current.status == "queued":
        jobs.start_worker()
    # one container each, always in this order: a part that comes or goes (the progress once the run ends) moves
    # nothing after it, so the curves keep their place on the page
    status_area, progress_area, curves_area = st.container(), st.container(), st.container()
    status = current.shown_status
    stopping, color = status == "cancelling", STATUS_COLORS[status]
    elapsed = f", {current.duration_s:.0f} s in all" if current.duration_s else ""
    status_area.markdown(f":{color}-badge[{status}] **{jobs.run_label(current)}**{elapsed}")
    if current.status in ACTIVE:  # in this fragment: a click reruns it alone, and nothing is drawn twice
        status_area.button("Cancel", icon=":material/cancel:", key=f"runs_cancel_{run_id}", disabled=stopping,
                           on_click=jobs.cancel, args=(run_id,),
                           help="Requested; the run stops at its next step" if stopping else None)
    if stopping:
        kept = ("keeping its last checkpoint" if current.checkpoint else
                "before its first checkpoint, so Resume will start it over")
        status_area.caption(f"Cancel requested: the worker stops the run at its next step, {kept}.")
    if current.error:
        (status_area.error if current.status == "failed" else status_area.warning)(current.error)
    if current.status == "interrupted" and (epoch := live_store.last_metric(run_id, "epoch")):
        status_area.caption(f"When it stopped it had finished epoch {epoch['epoch']} of {epoch['epochs']}, at "
                            f"{epoch['val_acc']:.1%} validation accuracy (the curves below).")
    steps = live_store.metrics(run_id, "step", since=current.started_at, timed=True)
    if current.status == "running" and steps:
        progress = jobs.run_progress(steps)
        progress_area.progress(progress.fraction, text=progress.describe())
    if steps and current.status != "queued":  # a short run's few epochs tell little: every step does
        kept = checkpoint_epoch(current.checkpoint) if current.status in RESUMABLE and current.checkpoint else None
        losses = step_loss_figure(jobs.step_history(run_id, live_store), kept)  # earlier attempts' too
        if len(losses.data[0].x) > 1:
            when = {"running": " (live)", "succeeded": ""}.get(current.status, " (until it stopped)")
            progress_area.markdown(f"**Training loss, step by step{when}**")
            progress_area.plotly_chart(losses, width="stretch", key=f"steps_{run_id}")
    if current.status == "queued":
        place, queued = live_store.queue_position(run_id)
        progress_area.progress(0.0, text=f"waiting in the queue: {place} of {queued}" if queued > 1
                               else "next in the queue")
    epochs = (current.result or {}).get("epochs") or live_store.metrics(run_id, "epoch")
    if epochs:
        with curves_area:
            loss_column, acc_column = panes("run-curves", 1, 1, min_width=360)
        loss_column.plotly_chart(run_curves({run_id: epochs}, ("loss", "val_loss")), width="stretch",
                                 key=f"loss_{run_id}")
        acc_column.plotly_chart(run_curves({run_id: epochs}, ("acc", "val_acc")), width="stretch",
                                key=f"acc_{run_id}")
        if note := validation_ahead_note(epochs):
            curves_area.caption(note)
    with st.expander("Log", expanded=current.status == "running"):
        st.code("\n".join(live_store.logs(run_id, 60)) or "(nothing yet)", language=None, wrap_lines=True)


active = run.status in ACTIVE
st.fragment(run_every=REFRESH if active else None)(draw_live)(run_id, active)

actions = st.container(horizontal=True, vertical_alignment="bottom")
if run.status in RESUMABLE and actions.button("Resume", icon=":material/replay:"):
    try:
        jobs.resume(run_id, store)
    except ValueError as error:
        st.error(str(error))
    else:
        jobs.start_worker()
        st.rerun()

checkpoint = run.checkpoint if run.checkpoint and not active and Path(run.checkpoint).is_dir() else None
if checkpoint:
    actions.download_button("Download checkpoint", lambda: archive_bytes(checkpoint), file_name=f"{run_id}.zip",
                            mime="application/zip", icon=":material/download:", on_click="ignore",
                            help="The weights (safetensors), the run's config and metrics as JSON, and the optimizer "
                                 "state, zipped when you click.")
if checkpoint:  # a run stopped on the way too: the model of its last checkpoint
    if actions.button("Predict with it", icon=":material/image_search:",
                      help="Open Predict with this run's model on one of its validation images: its own classes."):
        arch = run.config["arch"]
        preset_arch("predict_arch", arch)
        st.session_state[f"predict_weights_{arch}"] = str(jobs.run_dir(run_id))
        st.session_state["predict_image_sample"] = "val-0"  # one of its validation images, not the cat
        st.switch_page("pages/predict.py")
    fmt = actions.selectbox("Export as", EXPORT_FORMATS, key="runs_export_format", width=200)
    exports = st.session_state.setdefault("runs_exports", {})  # kept until the tab closes: it outlives other clicks
    if actions.button("Export", icon=":material/output:"):
        try:
            with st.spinner(f"Exporting to {fmt} and checking its outputs..."):
                exports[(run_id, fmt)] = export_checkpoint(checkpoint, fmt)
        except CheckpointError as error:
            st.error(str(error))
    if (exported := exports.get((run_id, fmt))) and exported.path.is_file():
        (st.success if exported.matches else st.error)(f"{exported.path.name}: {exported.verdict()}.")
        st.download_button(f"Download {exported.path.name}", exported.path.read_bytes(),
                           file_name=f"{run_id}-{exported.path.name}", icon=":material/download:",
                           on_click="ignore")  # the page stays as it is: the result and this button

def delete_selected_run(run_id: str) -> None:
    """Delete the run shown and show the newest one left (or none)."""
    try:
        jobs.delete_run(run_id)
    except (KeyError, ValueError) as error:
        st.toast(error.args[0], icon=":material/error:")
        return
    if shown := run_to_show(RunStore().runs()):
        st.session_state["runs_selected"] = shown
    else:
        st.session_state.pop("runs_selected", None)
    st.query_params.pop("run", None)
    st.toast(f"Deleted run {run_id}.", icon=":material/delete:")


if not active:  # keyed by run: the next run shown gets its own popover, closed
    with actions.popover("Delete", icon=":material/delete:", key=f"runs_delete_menu_{run_id}"):
        st.markdown(f"Delete run **{run_id}** for good: its record and log, its checkpoints and its exports.")
        st.button("Delete this run", icon=":material/delete_forever:", type="primary", key=f"runs_delete_{run_id}",
                  on_click=delete_selected_run, args=(run_id,))

result = run.result
if result and "confusion_matrix" in result:
    st.subheader("Results")
    if run.status != "succeeded":
        kept = len(result.get("epochs") or ())
        st.caption("The run stopped before it finished: " + (
            f"these results are of the model it kept, its checkpoint after epoch {kept} of "
            f"{run.config.get('epochs')}." if kept else
            "these results are of its model part of the way through its first epoch, which it did not keep."))
    row = metric_row()
    row.metric("Validation accuracy", f"{result['val_acc']:.1%}")
    row.metric("Training time", f"{result['train_time_s']:.1f} s",
               help="As the run measured it, from reading its data to its last evaluation. The time in all, beside "
                    "the run's name above and in the table, also counts its process starting, PyTorch loading and "
                    "the result being recorded.")
    row.metric("Trainable parameters", f"{result['params_trainable']:,}")
    row.metric("Frozen parameters", f"{result['params_frozen']:,}")
    if keeps := keeps_examples(run.config.get("strategy"), run.config.get("classifier")):
        st.caption(f"No trainable parameters, yet it learnt from the data: {keeps}.")
    small_validation_warning(sum(map(sum, result["confusion_matrix"])))
    if note := guessing_note(result["confusion_matrix"], result["classes"]):
        st.warning(note, icon=":material/warning:")
    if result.get("feature_cache") in ("hit", "partial"):
        st.caption(f"The backbone's features came {'' if result['feature_cache'] == 'hit' else 'partly '}from the "
                   "cache an earlier run with the same backbone, weights and images filled: the training time counts "
                   "little more than the classifier.")
    matrix_column, classes_column = panes("run-classes", 1, 1, min_width=360)
    matrix_column.markdown("**Confusion matrix (validation)**")  # titles above the charts, where a phone's Plotly
    matrix_column.plotly_chart(confusion_figure(result["classes"], result["confusion_matrix"]), width="stretch")
    classes_column.markdown("**Accuracy per class**")  # toolbar does not cover them
    classes_column.plotly_chart(per_class_bars(result["per_class_acc"]), width="stretch")
    st.caption("Confusion matrix: each row is a true class, each column what the model said; the diagonal is right. "
               "Accuracy per class in percent.")
    if result.get("skipped"):
        count = len(result["skipped"])
        st.warning(f"{count} unreadable file{'s were' if count > 1 else ' was'} skipped: "
                   + first_names(result["skipped"], 20))
    if checkpoint:
        st.caption(f"Use the model: **Predict with it** above, `cnnlab predict IMAGE --weights {run_id}` in a "
                   f"terminal, `--weights {run_id}` to start another run from it, or **Export** it to ONNX or "
                   "TorchScript for use outside cnnlab.")
        mistakes_section(run_id, checkpoint)
    elif run.status == "succeeded" and not run.checkpoint:
        st.caption(f"This run {NO_MODEL}, so its mistakes and predictions cannot be shown here.")
elif result and "stages" in result:
    st.subheader("Accuracy per stage")
    st.plotly_chart(probe_figure(result["stages"], run.config["arch"]), width="stretch")
    small_validation_warning(result.get("val_size", SMALL_VALIDATION),
                             "differences of a few points between stages may be chance")
    reading = probe_reading(result["stages"], result.get("val_size"), run.config["arch"],
                            run.config.get("weights", "default"))
    st.caption(f"Strategy III with {CLASSIFIER_NAMES.get(result['classifier'], result['classifier'])} on each "
               f"stage's averaged feature maps. {reading}")
    stages = pd.DataFrame(result["stages"])
    stages["stage"] = [stage_labels(run.config["arch"])[k - 1] for k in stages["stage"]]
    stages["train_acc"], stages["val_acc"] = in_percent(stages["train_acc"]), in_percent(stages["val_acc"])
    st.dataframe(stages, hide_index=True, placeholder=EMPTY, width="stretch",
                 column_config={"stage": "Stage", "layer": "Features from", "dim": st.column_config.NumberColumn(
                     "Features", format="localized"), "train_acc": st.column_config.NumberColumn(
                     "Train accuracy", format=PERCENT), "val_acc": st.column_config.NumberColumn(
                     "Val accuracy", format=PERCENT)})

with st.expander("Configuration"):
    shown = config_in_use(run.config)
    st.json(shown)
    if len(shown) < len(run.config):
        st.caption(f"Left out, as this run never read them: {', '.join(sorted(set(run.config) - set(shown)))}. "
                   "The run's folder keeps the whole record (config.json).")
