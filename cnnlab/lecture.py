"""The numbers the lecture states, set beside the registry's implementations: what cnnlab counts on them, or the
error rates published for their weights."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.profiling import ModelProfile, profile_arch
from cnnlab.registry import build_model, example_input, get_spec


@dataclass(frozen=True)
class Claim:
    """A number stated on a lecture slide. `quantity` is 'params', 'depth', 'top1_error', 'top5_error', 'conv_layers',
    'pool_layers', 'dense_layers', 'dropout_layers', 'first_conv_filters', 'depth_with_pooling', 'input_size',
    'inception_modules', 'gap_params', 'gap_input_side' or 'training_images'.
    `tolerance` is relative: slides round their numbers. A claim not `comparable` was measured on another test set
    than any weights cnnlab loads, or of another model (an ensemble): it is shown, explained, and neither agrees nor
    differs."""

    arch: str
    quantity: str
    stated: float
    quote: str
    note: str
    tolerance: float = 0.1
    comparable: bool = True

    @property
    def what(self) -> str:
        """The quantity in words: 'top-5 error (%)', 'dropout layers'."""
        return {"top1_error": "top-1 error (%)", "top5_error": "top-5 error (%)",
                "depth_with_pooling": "depth with pooling", "input_size": "input size (pixels)",
                "gap_params": "GAP params", "gap_input_side": "GAP input side"}.get(
            self.quantity, self.quantity.replace("_", " "))

    @property
    def within(self) -> str:
        """How close a measured number must come to agree: 'exact', '10%'; 'n/a' for a claim not comparable."""
        if not self.comparable:
            return "n/a"
        return "exact" if self.tolerance == 0 else f"{self.tolerance:.0%}"


@dataclass(frozen=True)
class ClaimCheck:
    claim: Claim
    measured: float
    measured_how: str

    @property
    def agrees(self) -> bool | None:
        """Within the claim's relative tolerance (slides round their numbers); None for a claim not comparable."""
        if not self.claim.comparable:
            return None
        return abs(self.measured - self.claim.stated) <= self.claim.tolerance * abs(self.claim.stated)

    @property
    def verdict(self) -> str:
        """'agrees', 'differs' or 'not comparable'."""
        return {True: "agrees", False: "differs", None: "not comparable"}[self.agrees]


CLAIMS = (
    Claim("lenet5", "params", 60_000, "LeNet-5 ... Parameters Learned: 60,000",
          "Exact for the paper: C1 156 + S2 12 + C3 1,516 (its sparse connection table) + S4 32 + C5 48,120 + F6 "
          "10,164 = 60,000 trained weights; the RBF output's 840 are fixed by hand, not learned. This implementation "
          "has a fully connected C3, plain pooling and a linear output: 61,706."),
    Claim("alexnet", "params", 60_000_000, "AlexNet ... Parameters Learned: 60 Million",
          "torchvision's single-GPU AlexNet (64 first-layer filters) has 61.1M; 58.6M of them are in the three "
          "fully connected layers."),
    Claim("alexnet", "first_conv_filters", 96, "the next convolution layer applies 96 of 11x11 filter with stride of 4",
          "torchvision follows Krizhevsky's 2014 'one weird trick' variant with 64 filters.", tolerance=0.0),
    Claim("alexnet", "input_size", 227, "It starts with 227x227x3 images",
          "The paper says 224x224, but its first layer only works out for 227: (227 - 11) / 4 + 1 = 55, the 55x55 "
          "of its figure, where 224 gives 54.25. torchvision's AlexNet takes 224 and pads its first convolution by "
          "2 pixels: (224 + 4 - 11) / 4 + 1 = 55.25, floored to 55.", tolerance=0.0),
    Claim("alexnet", "conv_layers", 5, "It had five convolutional-pooling layer blocks", "", tolerance=0.0),
    Claim("alexnet", "pool_layers", 5, "It had five convolutional-pooling layer blocks",
          "Only the first, second and fifth convolutions are followed by max pooling; the paper: 'five "
          "convolutional layers, some of which are followed by max-pooling layers'.", tolerance=0.0),
    Claim("alexnet", "dense_layers", 3, "followed by three fully connected dense layers", "", tolerance=0.0),
    Claim("alexnet", "dropout_layers", 3, "using a Dropout layer after every FC layer",
          "Dropout is used in the first two fully connected layers only (paper, section 4.2); the output layer "
          "has none.", tolerance=0.0),
    Claim("alexnet", "training_images", 15_000_000,
          "AlexNet was trained on the Imagenet dataset with 15 million high-resolution images.",
          "15 million is all of ImageNet in 2010 (about 22,000 categories); AlexNet was trained on the ILSVRC-2010 "
          "subset, 1,000 classes: 'roughly 1.2 million training images' (the paper, section 2). torchvision's "
          "weights learned ILSVRC-2012's 1.28 million."),
    Claim("alexnet", "top1_error", 39.7, "On the test data, we achieved top-1 and top-5 error rates of 39.7% and 18.9%",
          "The slide quotes an abstract with 39.7% / 18.9%, 500,000 neurons and 'two globally connected layers'; "
          "the paper itself (abstract and Table 1) reports 37.5% / 17.0% on the LSVRC-2010 test set, with 650,000 "
          "neurons and three fully connected layers. torchvision's weights (the single-GPU 'one weird trick' "
          "variant) are measured on the ILSVRC-2012 validation set, one centre crop: another model on other images, "
          "so no number here can confirm or refute the slide's.", comparable=False),
    Claim("alexnet", "top5_error", 18.9, "On the test data, we achieved top-1 and top-5 error rates of 39.7% and 18.9%",
          "As for top-1: the paper reports 17.0% on the LSVRC-2010 test set; torchvision's weights are measured on "
          "ILSVRC-2012 validation, one crop.", comparable=False),
    Claim("vgg16", "params", 138_000_000, "VGGNet ... Parameters Learned: 138 Million",
          "Exact for VGG-16 (138,357,544); VGG-19 has 143.7M.", tolerance=0.01),
    Claim("vgg19", "depth", 19, "very deep convolutional networks (up to 19 weight layers)",
          "16 convolutions and 3 fully connected layers on one chain.", tolerance=0.0),
    Claim("googlenet", "params", 4_000_000,
          "It reduces the number of parameters from 60 million (AlexNet) to 4 million.",
          "4M is the figure of course notes such as CS231n's, not the paper's: the paper says 12 times fewer "
          "parameters than AlexNet (about 5M), and its own Table 1 adds up to about 6.8M (1M in the classifier); "
          "torchvision's has 6.6M (batch norm added, 3x3 kernels in the '5x5' branch)."),
    Claim("googlenet", "depth", 22, "It is 22 layers deep (27, including the pooling layers).",
          "Measured as the longest chain of conv and linear layers from input to output.", tolerance=0.0),
    Claim("googlenet", "depth_with_pooling", 27, "It is 22 layers deep (27, including the pooling layers).",
          "Measured as the longest chain of conv, linear and pooling layers: the 22 and GoogLeNet's five pooling "
          "layers on the main path (the max pooling inside each Inception module sits on a branch as deep as its "
          "others).", tolerance=0.0),
    Claim("googlenet", "top5_error", 6.67, "It achieved a top-5 error rate with of 6.67%",
          "6.67% is the paper's 7-model, 144-crop ensemble: no single network's number can confirm or refute it. "
          "One model, one crop: 10.07% in the paper, 10.47% for torchvision's weights.", comparable=False),
    Claim("googlenet", "gap_params", 0, "GAP layer introduces no parameters, Mean value of each feature map is kept",
          "The classifier after it gets 1,024 inputs, one mean per map: 1,025,000 weights. Flattening the 7x7x1024 "
          "maps instead would give it 50,176 inputs and 50,177,000 weights, 49 times as many.", tolerance=0.0),
    Claim("googlenet", "gap_input_side", 7, "averaging each feature map from 7x7 to 1x1", "", tolerance=0.0),
    Claim("googlenet", "inception_modules", 9, "GoogLeNet has 9 such inception modules stacked linearly.", "",
          tolerance=0.0),
)


def lecture_claim(arch: str, quantity: str) -> Claim | None:
    """What the lecture states of `arch`'s `quantity` ('first_conv_filters'), or None where it states nothing."""
    return next((claim for claim in CLAIMS if (claim.arch, claim.quantity) == (arch, quantity)), None)


def _count_layers(profile: ModelProfile, kind: type) -> int:
    return sum(1 for row in profile.rows if row.type == kind.__name__)


def _measure_global_pooling(claim: Claim, profile: ModelProfile) -> ClaimCheck:
    """The parameters of the global average pooling layer, or the side of the maps it averages."""
    at = next(i for i, row in enumerate(profile.rows) if row.type == nn.AdaptiveAvgPool2d.__name__)
    if claim.quantity == "gap_params":
        return ClaimCheck(claim, profile.rows[at].params, f"parameters of {profile.rows[at].name}")
    model, spec = build_model(claim.arch).eval(), get_spec(claim.arch)
    pooling = model.get_submodule(profile.rows[at].name)
    seen = []
    hook = pooling.register_forward_pre_hook(lambda _module, inputs: seen.append(inputs[0].shape))
    with torch.no_grad():
        model(example_input(spec).zero_())
    hook.remove()
    return ClaimCheck(claim, seen[0][-1], f"side of the maps {profile.rows[at].name} takes in, at {spec.image_size} px")


def measure(claim: Claim) -> ClaimCheck:
    """The implementation's number for one claim: counted on the model, or published for its weights."""
    profile = profile_arch(claim.arch)
    spec = get_spec(claim.arch)
    if claim.quantity == "params":
        return ClaimCheck(claim, profile.params, f"parameters of {spec.source}'s {spec.title}")
    if claim.quantity == "depth":
        return ClaimCheck(claim, profile.depth, "longest conv/linear chain")
    if claim.quantity == "depth_with_pooling":
        return ClaimCheck(claim, profile.depth_with_pooling, "longest conv/linear/pooling chain")
    if claim.quantity == "conv_layers":
        return ClaimCheck(claim, _count_layers(profile, nn.Conv2d), "Conv2d layers")
    if claim.quantity == "pool_layers":
        return ClaimCheck(claim, _count_layers(profile, nn.MaxPool2d), "MaxPool2d layers")
    if claim.quantity == "dense_layers":
        return ClaimCheck(claim, _count_layers(profile, nn.Linear), "Linear layers")
    if claim.quantity == "dropout_layers":
        return ClaimCheck(claim, _count_layers(profile, nn.Dropout), "Dropout layers")
    if claim.quantity == "inception_modules":
        modules = build_model(claim.arch).modules()
        return ClaimCheck(claim, sum(type(m).__name__ == "Inception" for m in modules), "Inception modules")
    if claim.quantity == "first_conv_filters":
        first = next(row for row in profile.rows if row.type == nn.Conv2d.__name__)
        return ClaimCheck(claim, first.output_shape[1], f"output channels of {first.name}")
    if claim.quantity in ("gap_params", "gap_input_side"):
        return _measure_global_pooling(claim, profile)
    if claim.quantity == "training_images":
        return ClaimCheck(claim, 1_200_000, "ILSVRC-2010's training set, published ('roughly 1.2 million')")
    if claim.quantity == "input_size":
        return ClaimCheck(claim, spec.image_size, f"input size of {spec.source}'s {spec.title}")
    if claim.quantity in ("top1_error", "top5_error"):
        accuracy = spec.accuracy.top1 if claim.quantity == "top1_error" else spec.accuracy.top5
        return ClaimCheck(claim, round(100 - accuracy, 2),
                          f"published for {spec.accuracy.source} ({spec.accuracy.dataset})")
    raise ValueError(f"unknown quantity {claim.quantity!r}")


def check_claims() -> list[ClaimCheck]:
    """Every lecture claim with its measured counterpart."""
    return [measure(claim) for claim in CLAIMS]
