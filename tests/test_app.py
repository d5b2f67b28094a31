from dataclasses import replace
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cnnlab.latency import LatencyCache
from cnnlab.registry import DEFAULT_ARCH, arch_names, get_spec
from pages.menu import PAGES
from pages.widgets import EMPTY

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def open_page(path: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception
    at.switch_page(path)
    at.run()
    return at


@pytest.mark.parametrize("path", [p.path for p in PAGES])
def test_every_page_renders_without_exception(path):
    at = open_page(path)
    assert not at.exception, at.exception
    assert at.title, "every page has a title"
    assert all(table.proto.placeholder == EMPTY for table in at.dataframe), "a missing value shows as a dash"


@pytest.mark.parametrize("script", [APP] + [p.path for p in PAGES])
def test_no_script_holds_a_bare_value_that_streamlit_magic_would_print(script):
    """A string or name on a line of its own in a page script is written on the page by Streamlit's magic (only
    docstrings are spared): a note to the reader must be a comment there."""
    import ast

    tree = ast.parse((Path(APP).parent / script).read_text())
    docstrings = {id(node.body[0]) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body}
    bare = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Expr) and id(node) not in docstrings
            and isinstance(node.value, (ast.Constant, ast.JoinedStr, ast.Name))]
    assert bare == [], f"{script}: lines {bare}"


def test_home_links_every_page():
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    drawn = [e for e in at.main if type(e).__name__ != "SpecialBlock"]  # the entry file's style and spinner blocks
    assert type(drawn[0]).__name__ == "Title", "app.py writes nothing above a page (a bare string would: magic)"
    markdown = " ".join(str(m.value) for m in at.markdown)
    assert "transfer learning" in markdown
    assert len(at.get("page_link")) == len(PAGES) - 1


def test_compare_page_tables_and_layer_table_follow_the_selection():
    at = open_page("pages/compare.py")
    assert len(at.dataframe) == 3
    summary = at.dataframe[0].value
    assert list(summary["Architecture"]) == [get_spec(name).title for name in arch_names()]
    assert any("LeNet-5's published result is a 0.95% error on MNIST test" in c.value for c in at.caption)
    at.selectbox(key="compare_arch").set_value("vgg16").run()
    assert not at.exception
    layers = at.dataframe[2].value
    assert layers["params"].sum() == 138_357_544
    assert any("Configuration D" in str(m.value) for m in at.markdown)


def test_compare_page_measures_latency_on_demand(isolated_data_dir):
    at = open_page("pages/compare.py")
    columns = at.dataframe[0].value.columns
    assert "ms per batch of 1" not in columns and not any(c.startswith("Yours") for c in columns), "no empty columns before"
    claims = at.dataframe[1].value.set_index("Claim")
    assert list(claims.columns[:3]) == ["Verdict", "Lecture says", "cnnlab's network"], "the verdict, then the numbers"
    assert claims.loc["LeNet-5, params", "Within"] == "10%"  # 61,706 against the slide's 60,000
    verdicts = claims["Verdict"]
    assert (verdicts["AlexNet, first conv filters"], verdicts["LeNet-5, params"]) == ("differs", "agrees")
    assert verdicts["AlexNet, top-1 error (%)"] == "not comparable", "another test set: neither agrees nor differs"
    assert verdicts["GoogLeNet, top-5 error (%)"] == "not comparable", "a 7-model ensemble against one network"
    assert "Lecture CNN (Keras Sequential), params" not in claims.index, "the slide prints no count"
    at.multiselect[0].set_value(["lenet5"]).run()
    at.button[0].click().run()
    assert not at.exception
    table = at.dataframe[0].value.set_index("Architecture")
    assert table.loc["LeNet-5", "ms per batch of 1"] > 0
    assert (isolated_data_dir / "latency.json").exists()
    kept = LatencyCache().for_device("auto")[("lenet5", 1)]
    LatencyCache().save(replace(kept, median_ms=128.0, min_ms=0.3))  # a busy machine set the median
    at.run()
    [noisy] = [w.value for w in at.warning if "varied a lot" in w.value]
    assert "LeNet-5 at batch 1 (median 128.0 ms, fastest 0.3 ms)" in noisy


def test_a_page_keeps_its_own_architecture_after_a_visit_elsewhere():
    at = open_page("pages/predict.py")
    at.selectbox(key="predict_arch").set_value("vgg16").run()
    at.switch_page("pages/home.py")
    at.run()
    at.switch_page("pages/predict.py")
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="predict_arch").value == "vgg16"
    at.switch_page("pages/inside.py")
    at.run()
    assert at.selectbox(key="inside_arch").value == DEFAULT_ARCH, "the other pages start at the sidebar's"


def test_the_calculator_and_the_skip_connections_keep_their_settings_after_a_visit_elsewhere():
    at = open_page("pages/reductions.py")
    at.number_input(key="calc_in_channels_number").set_value(256).run()
    at.selectbox(key="reductions_arch").set_value("resnet50").run()
    at.number_input(key="factor_kernel").set_value(7).run()
    at.switch_page("pages/residual.py")
    at.run()
    at.number_input(key="res_seed").set_value(3).run()
    at.switch_page("pages/home.py")
    at.run()
    at.switch_page("pages/reductions.py")
    at.run()
    assert not at.exception, at.exception
    assert at.number_input(key="calc_in_channels_number").value == 256
    assert at.slider(key="calc_in_channels_slider").value == 256
    assert any(m.value == "60.2M" for m in at.metric), "the calculator's numbers, not the slide's 112.9M"
    assert at.selectbox(key="reductions_arch").value == "resnet50" and at.number_input(key="factor_kernel").value == 7
    at.switch_page("pages/residual.py")
    at.run()
    assert at.number_input(key="res_seed").value == 3


def test_a_new_sidebar_architecture_changes_the_pages_a_choice_of_their_own_holds_until_then():
    from pages.common import SIDEBAR_CHOICES

    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.selectbox(key="arch").set_value("vgg16").run()  # in the sidebar: counted as a choice made there
    assert at.session_state[SIDEBAR_CHOICES] == 1
    at = open_page("pages/predict.py")  # AppTest runs a page without app.py's sidebar: its state is set here
    at.selectbox(key="predict_arch").set_value("alexnet").run()
    at.session_state["arch"], at.session_state[SIDEBAR_CHOICES] = "resnet18", 1  # then resnet18 in the sidebar
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="predict_arch").value == "resnet18", "the page follows what the sidebar just chose"
    at.selectbox(key="predict_arch").set_value("alexnet").run()
    at.session_state["arch"] = "resnet18"
    at.run()
    assert at.selectbox(key="predict_arch").value == "alexnet", "a choice on the page holds until the next one there"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks a machine without a GPU")
def test_the_sidebar_offers_cuda_only_where_there_is_a_gpu():
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert at.radio(key="device").options == ["auto", "cpu"]


def test_the_entry_file_also_runs_bare():
    """`python app.py` (and multiprocessing's spawn, which re-runs the main file of a process that ran the app)
    must not fail outside `streamlit run`."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, APP], capture_output=True, text=True, timeout=120,
                            cwd=Path(APP).parent)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_menu_is_drawn_before_pytorch_loads():
    """Streamlit starts in its legacy mode (a menu of every file in pages/) and leaves it when pages.menu is
    imported; app.py and every page import it first, and it loads nothing slow, so that menu only flickers."""
    import ast
    import subprocess
    import sys

    probe = "import pages.menu, sys; print('torch' in sys.modules, 'cnnlab' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            cwd=Path(APP).parent)
    assert result.stdout.split() == ["False", "False"], result.stderr[-2000:]
    slow = {"cnnlab", "torch", "torchvision", "timm", "numpy", "pandas", "plotly", "PIL", "sklearn"}
    for path in [APP] + [str(Path(APP).parent / p.path) for p in PAGES]:
        modules = [alias.name if isinstance(node, ast.Import) else node.module
                   for node in ast.parse(Path(path).read_text()).body
                   if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names]
        before_menu = modules[:modules.index("pages.menu")]
        assert not [m for m in before_menu if m.split(".")[0] in slow or m.startswith("pages.")], path
