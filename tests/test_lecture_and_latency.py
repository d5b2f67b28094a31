import json

import numpy as np
import pytest
import torch

from cnnlab.data import load_dataset, stratified_split
from cnnlab.featurecache import make_classifier
from cnnlab.latency import (LOGREG_ITERATIONS, MADE_UP_LATENT, LatencyCache, classifier_seconds, estimate_run,
                            made_up_features, measure_latency, probe_estimate)
from cnnlab.paths import data_dir
from cnnlab.training import make_config, resolve_device, run
from cnnlab.lecture import check_claims
from cnnlab.profiling import profile_arch


def test_lecture_claims_are_checked_against_measurements():
    checks = {(c.claim.arch, c.claim.quantity): c for c in check_claims()}
    assert checks[("googlenet", "depth")].measured == 22 and checks[("googlenet", "depth")].agrees
    assert checks[("googlenet", "inception_modules")].measured == 9, "the slide's '9 such inception modules'"
    assert checks[("vgg19", "depth")].measured == 19 and checks[("vgg19", "depth")].agrees, "'up to 19 weight layers'"
    assert checks[("googlenet", "depth_with_pooling")].measured == 27, "the slide's '27, including the pooling layers'"
    assert checks[("vgg16", "params")].agrees
    assert checks[("lenet5", "params")].measured == 61_706
    googlenet_params = checks[("googlenet", "params")]
    assert googlenet_params.measured == 6_624_904 and not googlenet_params.agrees
    assert checks[("alexnet", "first_conv_filters")].measured == 64
    assert checks[("alexnet", "conv_layers")].agrees and not checks[("alexnet", "pool_layers")].agrees
    assert checks[("alexnet", "pool_layers")].measured == 3 and checks[("alexnet", "dropout_layers")].measured == 2
    assert checks[("googlenet", "top5_error")].measured == pytest.approx(10.47)
    alexnet_top1, alexnet_top5 = checks[("alexnet", "top1_error")], checks[("alexnet", "top5_error")]
    assert (alexnet_top1.measured, alexnet_top5.measured) == (pytest.approx(43.48), pytest.approx(20.93))
    assert alexnet_top1.agrees is None and "LSVRC-2010" in alexnet_top1.claim.note  # another test set, said so
    alexnet_input = checks[("alexnet", "input_size")]
    assert (alexnet_input.measured, alexnet_input.agrees) == (224, False) and "(227 - 11) / 4 + 1 = 55" in \
        alexnet_input.claim.note
    assert (checks[("lenet5", "params")].claim.within, alexnet_input.claim.within) == ("10%", "exact")
    gap_params, gap_side = checks[("googlenet", "gap_params")], checks[("googlenet", "gap_input_side")]
    assert (gap_params.measured, gap_params.agrees, gap_side.measured, gap_side.agrees) == (0, True, 7, True)
    fc = next(row for row in profile_arch("googlenet").rows if row.name == "fc")
    assert f"{fc.params:,} weights" in gap_params.claim.note, "the note's classifier is the network's"
    images = checks[("alexnet", "training_images")]
    assert images.agrees is False and "1.2 million" in images.claim.note
    assert all(c.claim.note or c.agrees for c in checks.values()), "every disagreement is explained"


def test_latency_measures_and_caches(isolated_data_dir):
    cache = LatencyCache()
    result = cache.measure("lenet5", batch=4, device="cpu", warmup=1, repeats=3)
    assert result.median_ms > 0 and result.batch == 4 and result.device == "cpu"
    assert result.images_per_s == pytest.approx(4000 / result.median_ms)
    assert cache.for_device("cpu")[("lenet5", 4)] == result
    stored = json.loads((isolated_data_dir / "latency.json").read_text())
    assert len(stored) == 1


def test_measurements_saved_at_once_are_all_kept(isolated_data_dir):
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    heard = []
    measured = measure_latency("lenet5", batch=1, device="cpu", warmup=1, repeats=2, progress=heard.append)
    assert heard[:3] == pytest.approx([1 / 3, 2 / 3, 1.0]), "after each pass, warm-up included"
    results = [replace(measured, batch=batch) for batch in range(1, 25)]
    with ThreadPoolExecutor(8) as pool:  # two dashboard sessions clicking Measure together, many times over
        list(pool.map(LatencyCache().save, results))
    assert sorted(r.batch for r in LatencyCache().load().values()) == list(range(1, 25))


def test_a_run_estimate_times_the_configured_network_and_scales_to_the_data(monkeypatch):
    from sklearn.datasets import load_digits

    from cnnlab.data import stratified_split

    digits = load_dataset("digits")

    def estimate(strategy, **options):
        config = make_config(strategy, "tf_efficientnet_lite0", "digits", image_size=64, batch_size=16, **options)
        return estimate_run(config, digits, steps=7, budget_s=0)  # a median of 7: one slow step moves it not

    scratch, finetune = estimate("scratch", epochs=3), estimate("finetune", epochs=3, freeze="body")
    extract = estimate("extract")
    train, val = map(len, stratified_split(load_digits().target))  # the split the run itself makes
    assert scratch.train_ms_per_image > scratch.forward_ms_per_image > 0  # a step adds the backward pass
    assert finetune.train_ms_per_image < scratch.train_ms_per_image  # a frozen body has no weight gradients
    assert 0 < scratch.data_ms_per_image < scratch.train_ms_per_image  # the digits are in memory: cheap to prepare
    assert 0 < scratch.eval_data_ms_per_image < scratch.forward_ms_per_image
    train_image = scratch.train_ms_per_image + scratch.data_ms_per_image  # no workers on the CPU: the two add up
    val_image = scratch.forward_ms_per_image + scratch.eval_data_ms_per_image
    assert scratch.seconds == pytest.approx(3 * (train * train_image + val * val_image) / 1000)
    assert extract.train_ms_per_image == 0 and scratch.classifier_s == 0 < extract.classifier_s
    assert extract.seconds == pytest.approx(1797 * (extract.forward_ms_per_image + extract.eval_data_ms_per_image)
                                            / 1000 + extract.classifier_s)  # the forward pass, then the fit
    assert extract.seconds < scratch.seconds
    fits = []  # each fit's features, with a made-up time per fit that no other work on the machine can move
    monkeypatch.setattr("cnnlab.latency.classifier_seconds",
                        lambda kind, train, val, features, classes, seed=0: fits.append(features) or features / 1000)
    probe = estimate("probe")  # the same forward pass, then a logistic regression at each of Lite0's 5 stages
    assert probe.forward_ms_per_image > 0 and probe.train_ms_per_image == 0
    assert probe.seconds == pytest.approx(1797 * (probe.forward_ms_per_image + probe.eval_data_ms_per_image)
                                          / 1000 + probe.classifier_s)
    stage_features = [16, 24, 40, 112, 1280]  # Lite0's stage outputs, averaged over their positions
    assert fits == stage_features and probe.classifier_s == pytest.approx(sum(stage_features) / 1000)
    probe_config = make_config("probe", "tf_efficientnet_lite0", "digits", image_size=64, batch_size=16)
    from_extract = probe_estimate(extract, probe_config, digits)  # Launch's: the forward pass timed once
    assert from_extract.forward_ms_per_image == extract.forward_ms_per_image
    assert from_extract.classifier_s == pytest.approx(probe.classifier_s)
    assert from_extract.seconds - from_extract.classifier_s == pytest.approx(extract.seconds - extract.classifier_s)
    assert scratch.device == f"cpu, {torch.get_num_threads()} threads" and scratch.describe().startswith("about ")
    assert scratch.batch == 16  # the run's own batch: Lite0 at 64x64 is cheap enough
    full_size = estimate_run(make_config("extract", "tf_efficientnet_lite0", "digits"), digits, budget_s=0)
    assert full_size.batch == 10  # at 224x224, 10 images of about 0.4 GMACs each, not the run's 64


def test_made_up_features_are_as_hard_to_classify_as_real_ones():
    rng = np.random.default_rng(0)
    centres, directions = rng.normal(size=(10, MADE_UP_LATENT)), rng.normal(size=(MADE_UP_LATENT, 1280)) / 32 ** 0.5
    train, val = (made_up_features(n, centres, directions, rng) for n in (1438, 359))
    svm = make_classifier("svm").fit(*train)
    assert 0.85 < svm.score(*val) < 1.0  # hard enough to leave mistakes, as the digits' features do (about 0.9)
    assert 0.5 < svm[-1].n_support_.sum() / 1438 < 0.9  # a like share of support vectors (real: 944 of 1,438)
    logreg = make_classifier("logreg").fit(*train)
    assert logreg[-1].n_iter_[0] < 100  # converges in a few dozen steps, as on real features (22 on the digits')


def test_a_logistic_regression_fit_is_counted_at_the_iterations_it_takes_on_real_features():
    config = make_config("extract", "tf_efficientnet_lite0", "digits", image_size=64, device="cpu")
    run(config)
    [cached] = (data_dir() / "features").glob("*.npz")
    with np.load(cached) as stored:
        features = stored["features"]
    digits = load_dataset("digits")
    train, _ = stratified_split(digits.targets, config.val_fraction, config.seed)
    logreg = make_classifier("logreg").fit(features[train], digits.targets[train])
    assert 0.6 * LOGREG_ITERATIONS < logreg[-1].n_iter_[0] < 1.4 * LOGREG_ITERATIONS


def test_an_svm_fit_is_estimated_to_grow_faster_than_its_data():
    small, large = (classifier_seconds("svm", n, n // 4, 256, 10, sample=500) for n in (500, 2000))
    assert large > 4 * small  # expected 4^1.75 = 11 times, timing noise aside; a linear growth would give 4


def test_latency_cache_survives_a_corrupt_file(isolated_data_dir):
    isolated_data_dir.mkdir(parents=True, exist_ok=True)
    (isolated_data_dir / "latency.json").write_text("{not json")
    assert LatencyCache().load() == {}


def test_cuda_request_without_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        measure_latency("lenet5", device="cuda")
    assert resolve_device("auto") == "cpu"


def test_step_timing_takes_more_steps_within_its_budget_and_stops_at_five_times_the_minimum():
    import time

    from cnnlab.latency import _step_times

    calls = []
    def step():
        calls.append(1)
        time.sleep(0.01)

    assert len(_step_times(step, torch.device("cpu"), 1, 2)) == 2 and len(calls) == 3  # one untimed
    assert 4 <= len(_step_times(step, torch.device("cpu"), 0, 2, budget_s=0.05)) <= 6
    assert len(_step_times(step, torch.device("cpu"), 0, 2, budget_s=10)) == 10


def test_data_preparation_is_timed_on_the_runs_own_images():
    from cnnlab.latency import data_preparation_ms

    digits = load_dataset("digits")
    augmented, plain, workers = data_preparation_ms(make_config("scratch", "lenet5", "digits"), digits)
    assert augmented > 0 and plain > 0 and workers == 0  # in memory, on the CPU: prepared between the steps
    assert data_preparation_ms(make_config("scratch", "lenet5", "digits", workers=3), digits)[2] == 3
