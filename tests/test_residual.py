import re
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from cnnlab.residual import (
    NetConfig,
    TrainSettings,
    build_net,
    curves_as_histories,
    digits_tensors,
    gradient_profile,
    gradient_profiles,
    train_comparison,
    train_variant,
)

APP = str(Path(__file__).resolve().parents[1] / "app.py")
DEEP = NetConfig(depth=20, channels=16, batch_norm=False, seed=0)


def test_digits_are_standardized_1x8x8_images():
    images, labels = digits_tensors()
    assert images.shape == (1797, 1, 8, 8) and labels.shape == (1797,)
    assert abs(float(images.mean())) < 1e-4 and abs(float(images.std()) - 1) < 1e-4
    assert set(labels.tolist()) == set(range(10))


def test_both_variants_share_parameters_and_initial_weights():
    plain, residual = build_net(DEEP, "plain"), build_net(DEEP, "residual")
    assert len(plain.blocks) == 20
    for (name, a), (other, b) in zip(plain.state_dict().items(), residual.state_dict().items()):
        assert name == other and torch.equal(a, b)
    x = torch.randn(2, 1, 8, 8)
    assert plain(x).shape == residual(x).shape == (2, 10)
    with pytest.raises(ValueError):
        build_net(DEEP, "dense")


def test_a_seeded_build_is_the_same_while_other_threads_build_models_and_leaves_the_global_generator_alone():
    from concurrent.futures import ThreadPoolExecutor

    from cnnlab.registry import build_model

    alone = build_net(DEEP, "plain").state_dict()
    before = torch.random.get_rng_state()
    build_net(DEEP, "plain")
    assert torch.equal(torch.random.get_rng_state(), before)
    with ThreadPoolExecutor(8) as pool:  # as the dashboard's sessions do: its pages build networks at once
        others = [pool.submit(build_model, "lenet5") for _ in range(40)]
        nets = [pool.submit(build_net, DEEP, "plain") for _ in range(40)]
        [other.result() for other in others]
        for net in nets:
            assert all(torch.equal(net.result().state_dict()[k], v) for k, v in alone.items())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plain_gradient_vanishes_toward_the_input_and_the_residual_one_does_not(seed):
    profiles = gradient_profiles(NetConfig(depth=20, batch_norm=False, seed=seed))
    plain, residual = profiles["plain"], profiles["residual"]
    assert len(plain.weights) == len(plain.activations) == 20
    assert plain.first_to_last() < 1e-6, plain.weights  # measured about 1e-18
    assert 0.2 < residual.first_to_last() < 5, residual.weights  # measured 0.5 to 0.9
    assert 0.5 < residual.first_to_last("activations") < 2  # measured 1.07 to 1.34
    assert residual.first_to_last() > 1000 * plain.first_to_last()


def test_with_batch_norm_the_plain_gradient_does_not_vanish():
    profiles = gradient_profiles(NetConfig(depth=20, batch_norm=True, seed=0))
    assert profiles["plain"].first_to_last() > 1  # it grows toward the input (measured about 140)
    assert profiles["residual"].first_to_last() < profiles["plain"].first_to_last()


def test_gradient_profile_is_deterministic_for_a_seed():
    first, again = gradient_profile(DEEP, "residual"), gradient_profile(DEEP, "residual")
    assert first == again
    assert gradient_profile(NetConfig(depth=20, seed=1), "residual").weights != first.weights


def test_training_is_deterministic_for_a_seed():
    config, settings = NetConfig(depth=3, seed=4), TrainSettings(epochs=1)
    assert train_variant(config, "residual", settings).history == train_variant(config, "residual", settings).history


@pytest.mark.parametrize("batch_norm", [False, True])
def test_residual_net_trains_lower_than_the_plain_one_at_depth_20(batch_norm):
    seen = []
    curves = train_comparison(NetConfig(depth=20, batch_norm=batch_norm, seed=0), TrainSettings(epochs=3),
                              on_step=lambda variant, event: seen.append((variant, event.epoch, event.step)))
    steps = max(step for _, _, step in seen)
    assert seen == [(v, e, s) for v in ("plain", "residual") for e in (1, 2, 3) for s in range(1, steps + 1)]
    plain, residual = curves["plain"], curves["residual"]
    assert [p.epoch for p in plain.history] == [p.epoch for p in residual.history] == [1, 2, 3]
    # measured over seeds 0-2 (16 channels, Adam 3e-3): without batch norm plain 2.303-2.305 (chance, 10%),
    # residual 1.02-1.90 (35-71%); with batch norm plain 1.92-1.98 (26-33%), residual 0.92-1.10 (92-96%)
    assert residual.final_loss < plain.final_loss - 0.3
    assert residual.final_val_acc > plain.final_val_acc + 0.2
    histories = curves_as_histories(curves)
    assert set(histories) == {"plain", "residual"} and set(histories["plain"][0]) == {"epoch", "loss", "val_acc"}


def _chart_ids(at: AppTest) -> list[str]:
    return [chart.proto.id for chart in at.get("plotly_chart")]


def test_page_shows_gradients_and_trains_both_on_demand():
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("pages/residual.py")
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Skip connections"
    assert any("res_gradients" in i for i in _chart_ids(at))
    assert not any("res_loss" in i for i in _chart_ids(at)), "nothing trains on page load"
    assert any("y = F(x) + x" in str(m.value) for m in at.markdown)
    ratios = [m.value for m in at.metric]
    at.segmented_control(key="res_quantity").set_value("activations").run()
    assert [m.value for m in at.metric] != ratios, "the ratios follow the measure shown"
    at.slider(key="res_depth").set_value(6)
    at.slider(key="res_epochs").set_value(2)
    at.run()
    at.button(key="res_train").click().run()
    assert not at.exception, at.exception
    ids = _chart_ids(at)
    assert any("res_loss" in i for i in ids) and any("res_acc" in i for i in ids)
    assert any("Final training loss: plain" in str(c.value) for c in at.caption)
    at.button(key="res_train").click().run()  # the same settings again: a second race
    assert not at.exception, at.exception
    assert any("res_loss" in i for i in _chart_ids(at)) and not at.warning
    at.toggle(key="res_bn").set_value(True).run()
    assert "from the last race (6 blocks, batch norm off, seed 0, 2 epochs)" in at.warning[0].value
