import pytest
import torch
from torch import nn

from cnnlab.archs import BN_INCEPTION_MODULES
from cnnlab.registry import arch_names, build_model, example_input, fit_head, get_spec, registry

NAMES = arch_names()
REQUIRED = ["lenet5", "lecture_cnn", "alexnet", "vgg16", "vgg19", "googlenet", "bn_inception", "inception_v3",
            "inception_v4", "inception_resnet_v2", "resnet18", "resnet50", "densenet121", "mobilenet_v2",
            "efficientnet_b0", "tf_efficientnet_lite0"]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_holds_every_required_architecture():
    assert set(REQUIRED) <= set(NAMES)


def test_unknown_name_lists_the_choices():
    with pytest.raises(KeyError, match="resnet50"):
        get_spec("resnet51")


@pytest.mark.parametrize("name", NAMES)
def test_builds_and_forward_shape(name):
    spec = get_spec(name)
    torch.manual_seed(0)
    model = build_model(name)
    x = torch.randn(2, *spec.input_size)
    with torch.inference_mode():
        out = model(x)
    assert out.shape == (2, spec.num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_matches_reference(name):
    with torch.device("meta"):
        model = build_model(name)
    assert count_params(model) == get_spec(name).reference_params


@pytest.mark.parametrize("name", [n for n in NAMES if get_spec(n).source == "timm"])
def test_timm_reference_is_timms_own_model(name):
    import timm

    with torch.device("meta"):
        model = timm.create_model(get_spec(name).builder, pretrained=False)
    assert count_params(model) == get_spec(name).reference_params
    assert timm.get_pretrained_cfg(get_spec(name).timm_pretrained.split(".")[0]) is not None


@pytest.mark.parametrize("name", NAMES)
def test_classifier_and_stages_exist_and_stages_shrink(name):
    spec = get_spec(name)
    with torch.device("meta"):
        model = build_model(name)
    modules = dict(model.named_modules())
    assert isinstance(modules[spec.classifier], nn.Linear)
    assert modules[spec.classifier].out_features == spec.num_classes
    shapes = {}
    handles = [modules[s].register_forward_hook(lambda m, i, o, s=s: shapes.__setitem__(s, o.shape))
               for s in spec.stages]
    try:
        model(torch.empty(1, *spec.input_size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    assert list(shapes) == list(spec.stages), "stages must run in the listed order"
    sizes = [s[-1] * s[-2] if len(s) == 4 else 1 for s in shapes.values()]
    assert sizes == sorted(sizes, reverse=True)


def test_lecture_cnn_is_the_keras_model():
    # Keras counts: conv (3*3*Cin+1)*Cout, dense (in+1)*out, flatten 9*9*128 after four 2x2 pools of 150.
    convs = [(3, 32), (32, 64), (64, 128), (128, 128)]
    dense = [(9 * 9 * 128, 512), (512, 128), (128, 1)]
    expected = sum((9 * cin + 1) * cout for cin, cout in convs) + sum((i + 1) * o for i, o in dense)
    assert expected == 5_615_553
    with torch.device("meta"):
        assert count_params(build_model("lecture_cnn")) == expected


def test_lenet5_layer_sizes():
    expected = (25 * 1 + 1) * 6 + (25 * 6 + 1) * 16 + (25 * 16 + 1) * 120 + (120 + 1) * 84 + (84 + 1) * 10
    assert count_params(build_model("lenet5")) == expected


def test_bn_inception_follows_the_papers_table():
    model = build_model("bn_inception")
    seen = {}
    handles = [getattr(model, c.name).register_forward_hook(lambda m, i, o, c=c: seen.__setitem__(c.name, o.shape))
               for c in BN_INCEPTION_MODULES]
    with torch.inference_mode():
        model(torch.randn(1, 3, 224, 224))
    for h in handles:
        h.remove()
    paper_outputs = {"inception_3a": (256, 28), "inception_3b": (320, 28), "inception_3c": (576, 14),
                     "inception_4a": (576, 14), "inception_4e": (1024, 7), "inception_5b": (1024, 7)}
    for name, (channels, size) in paper_outputs.items():
        assert seen[name][1:] == (channels, size, size)
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (5, 5) for m in model.modules()) == 0
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == sum(
        isinstance(m, nn.Conv2d) for m in model.modules())


def test_specs_are_frozen_and_cite_sources():
    for spec in registry().values():
        with pytest.raises(AttributeError):
            spec.name = "x"
        assert spec.paper.url and spec.paper.title
        if spec.accuracy:
            assert spec.accuracy.source and spec.accuracy.url


@pytest.mark.parametrize("size, message", [(16, "too small"), (5000, "limit")])
def test_check_input_size(size, message):
    with pytest.raises(ValueError, match=message):
        get_spec("alexnet").check_input_size(size)
    with pytest.raises(ValueError, match="only 32x32"):
        get_spec("lenet5").check_input_size(64)


def test_bn_inception_matches_figure_5_of_the_paper():
    """Count BN-Inception's parameters by hand from the rows of Figure 5 (Ioffe & Szegedy 2015): every
    convolution without bias followed by batch norm (2 parameters per channel), 5x5 replaced by two 3x3."""
    def conv(k, cin, cout):
        return k * k * cin * cout + 2 * cout

    # name: (#1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool proj) as printed; 0 = none
    rows = {"3a": (64, 64, 64, 64, 96, 32), "3b": (64, 64, 96, 64, 96, 64), "3c": (0, 128, 160, 64, 96, 0),
            "4a": (224, 64, 96, 96, 128, 128), "4b": (192, 96, 128, 96, 128, 128), "4c": (160, 128, 160, 128, 160, 96),
            "4d": (96, 128, 192, 160, 192, 96), "4e": (0, 128, 192, 192, 256, 0), "5a": (352, 192, 320, 160, 224, 128),
            "5b": (352, 192, 320, 192, 224, 128)}
    total, channels = conv(7, 3, 64) + conv(1, 64, 64) + conv(3, 64, 192), 192
    for name, (n1, r3, n3, rd, nd, proj) in rows.items():
        total += (conv(1, channels, n1) if n1 else 0) + conv(1, channels, r3) + conv(3, r3, n3)
        total += conv(1, channels, rd) + conv(3, rd, nd) + conv(3, nd, nd) + (conv(1, channels, proj) if proj else 0)
        channels = n1 + n3 + nd + (proj if proj else channels)  # 3c and 4e pass the pooled input through
    assert channels == 1024  # the paper's output depth before the classifier
    total += 1024 * 1000 + 1000
    with torch.device("meta"):
        model = build_model("bn_inception")
    assert count_params(model) == total == get_spec("bn_inception").reference_params


@pytest.mark.parametrize("name", [n for n in NAMES if get_spec(n).reduction_modules])
def test_reduction_modules_are_module_classes_of_the_built_network(name):
    with torch.device("meta"):
        model = build_model(name)
    assert set(get_spec(name).reduction_modules) <= {type(m).__name__ for m in model.modules()}


@pytest.mark.parametrize("name", [n for n in NAMES if get_spec(n).lecture_head_width])
def test_the_lecture_head_ends_where_the_classifier_was(name):
    spec = get_spec(name)
    with torch.device("meta"):
        model = fit_head(build_model(name, 3), spec, "lecture", 3)
        out = model(example_input(spec, device="meta"))
    head = model.get_submodule(spec.classifier.rpartition(".")[0])
    assert [type(m).__name__ for m in head] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert head[0].out_features == spec.lecture_head_width and model.get_submodule(spec.classifier) is head[-1]
    assert out.shape == (1, 3)


@pytest.mark.parametrize("name", [n for n in NAMES if get_spec(n).lecture_freeze])
def test_a_lecture_freeze_plan_is_one_the_launch_page_offers(name):
    from cnnlab.planner import freeze_choices

    assert get_spec(name).lecture_freeze in freeze_choices(name) and get_spec(name).lecture_freeze_note


def test_logits_of_reads_every_output_shape_the_networks_return():
    from torchvision.models.inception import InceptionOutputs

    from cnnlab.registry import logits_of

    main, aux = torch.randn(2, 10), torch.randn(2, 10)
    assert logits_of(main) is main
    assert logits_of(InceptionOutputs(main, aux)) is main  # Inception-v3 while training: its aux head beside
    assert logits_of((main, aux)) is main and logits_of([main]) is main


def test_the_training_loss_adds_inceptions_auxiliary_heads_at_0_4():
    from torch.nn import functional as F
    from torchvision.models import inception_v3

    from cnnlab.training import classification_loss

    torch.manual_seed(0)
    model = inception_v3(weights=None, aux_logits=True, init_weights=False, num_classes=5).train()
    labels = torch.tensor([1, 3])
    output = model(torch.randn(2, 3, 299, 299))
    expected = F.cross_entropy(output.logits, labels) + 0.4 * F.cross_entropy(output.aux_logits, labels)
    torch.testing.assert_close(classification_loss(output, labels), expected)
    torch.testing.assert_close(classification_loss(output.logits, labels), F.cross_entropy(output.logits, labels))


def test_stages_take_in_what_runs_before_them_and_are_named_by_their_outermost_modules():
    from cnnlab.registry import assign_stages

    run_order = ["conv_stem", "bn1", "blocks.0.0.conv", "blocks.1.0.conv", "blocks.1.1.conv", "blocks.2.0.conv",
                 "blocks.3.0.conv", "bn2", "global_pool", "classifier"]
    index, spans = assign_stages(run_order, ("blocks.0", "blocks.1", "blocks.3", "bn2"))
    assert index == [0, 0, 0, 1, 1, 2, 2, 3, 4, 4]
    assert spans == ["conv_stem … blocks.0", "blocks.1", "blocks.2 … blocks.3", "bn2"]
    definition_order = ["", "conv_stem", "blocks", "blocks.0", "blocks.0.0", "blocks.1", "blocks.1.0", "bn2"]
    index, spans = assign_stages(definition_order, ("blocks.0", "blocks.1", "bn2"))
    assert index == [0, 0, 0, 0, 0, 1, 1, 2] and spans == ["conv_stem … blocks.0", "blocks.1", "bn2"]


@pytest.mark.parametrize("name", NAMES)
def test_each_stage_has_one_name_in_the_freeze_menu_the_plan_and_the_probe(name):
    from cnnlab.charts import probe_figure
    from cnnlab.planner import describe_freeze, freeze_plan
    from cnnlab.registry import stage_labels

    labels = stage_labels(name)
    assert len(labels) == len(get_spec(name).stages) and labels[0].startswith("stage 1 (")
    plan = freeze_plan(name, "finetune", "stage:1", 10)
    in_plan = [part.name for part in plan.parts if part.name.startswith("stage ")]  # stages with parameters
    assert in_plan and in_plan == [label for label in labels if label in in_plan]
    assert all(describe_freeze(name, f"stage:{k}").startswith(f"freeze every layer through {label}")
               for k, label in enumerate(labels, start=1))
    rows = [{"stage": k, "layer": stage, "dim": 8, "train_acc": 0.9, "val_acc": 0.8}
            for k, stage in enumerate(get_spec(name).stages, start=1)]
    assert list(probe_figure(rows, name).data[0].x) == list(labels)


def test_a_stage_span_leaves_out_what_inference_never_runs():
    from cnnlab.registry import stage_labels

    assert stage_labels("inception_v3")[4] == "stage 5 (Mixed_7a … Mixed_7c)", "AuxLogits runs only in training"
    assert stage_labels("tf_efficientnet_lite0")[3] == "stage 4 (blocks.3 … blocks.4)"


def test_the_freeze_menu_offers_no_stage_that_freezes_exactly_what_body_freezes():
    from cnnlab.planner import freeze_choices, freeze_plan

    lite0 = freeze_choices("tf_efficientnet_lite0")
    assert "stage:5" not in lite0 and lite0[-2:] == ["stage:4", "body"], "through bn2 is the whole backbone"
    assert "stage:5" in freeze_choices("vgg16"), "VGG's first two dense layers still train after stage 5"
    plans = {f: freeze_plan("vgg16", "finetune", f, 10).params_trainable for f in ("stage:5", "body")}
    assert plans["stage:5"] > plans["body"]
