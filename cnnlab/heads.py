"""Strategy III's scikit-learn classifiers as PyTorch layers, so that a backbone with one on top is a whole model.

Logistic regression folds into an `nn.Linear` (`featurecache.logreg_as_linear`). An RBF SVM and k nearest
neighbours keep training examples instead of weights; here they become layers holding those examples as
buffers, computing what scikit-learn computes:

- `KernelSVMHead`: scikit-learn's `SVC` is one-vs-one. For each pair of classes (i, j) its decision value is
  sum over support vectors s of coef[s, pair] * exp(-gamma * |x - s|^2) + intercept[pair], positive for i. The
  head returns scikit-learn's one-vs-rest scores: each class's votes plus its summed decision values squashed
  below 1/3, whose argmax is the SVM's prediction. Their softmax ranks the classes; it is not a calibrated
  probability.
- `NearestNeighboursHead`: the k training examples nearest to x (Euclidean, on standardized features) vote; the
  head returns the log of the vote fractions, so that its softmax is scikit-learn's `predict_proba`.

Both standardize their input as the pipeline's `StandardScaler` did. A checkpoint stores their buffers like any
weights; `empty_head` shapes a head to load them into.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

KERNEL_HEADS = ("svm", "knn")
SVM_SCORES_NOTE = ("Its head is an SVM: the probabilities are the softmax of its one-vs-rest vote scores, which rank "
                   "the classes but are not calibrated.")


KEEPS_EXAMPLES = {"svm": "an RBF SVM keeps support vectors, training examples, instead of weights",
                  "knn": "k-NN keeps every training example instead of weights"}


def keeps_examples(strategy: str, classifier: str | None) -> str | None:
    """Why a run trains no parameters though it learns (Strategy III with an SVM or k-NN), else None."""
    return KEEPS_EXAMPLES.get(classifier) if strategy == "extract" else None


def scores_note(config: dict) -> str | None:
    """What a run's probabilities are, where they are not a calibrated softmax (an SVM head's); else None."""
    return SVM_SCORES_NOTE if config.get("strategy") == "extract" and config.get("classifier") == "svm" else None


def _squared_distances(x: torch.Tensor, examples: torch.Tensor) -> torch.Tensor:
    """|x_b - e_n|^2 for every row pair, through one matrix product."""
    return ((x * x).sum(1, keepdim=True) - 2 * x @ examples.T + (examples * examples).sum(1)).clamp_min(0)


def _pair_matrices(num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot rows of the first and the second class of each one-vs-one pair, in scikit-learn's pair order."""
    pairs = [(i, j) for i in range(num_classes) for j in range(i + 1, num_classes)]
    first, second = torch.zeros(len(pairs), num_classes), torch.zeros(len(pairs), num_classes)
    for p, (i, j) in enumerate(pairs):
        first[p, i], second[p, j] = 1.0, 1.0
    return first, second


def _classes_from_pairs(pair_count: int) -> int:
    return int(round((1 + (1 + 8 * pair_count) ** 0.5) / 2))


class _ExamplesHead(nn.Module):
    """A head that standardizes its input as the pipeline's StandardScaler did and keeps its tensors as float
    buffers (saved with the model's weights)."""

    def __init__(self, **buffers: torch.Tensor):
        super().__init__()
        for name, value in buffers.items():
            self.register_buffer(name, value.float())

    @property
    def in_features(self) -> int:
        return self.mean.shape[0]

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.scale


class KernelSVMHead(_ExamplesHead):
    """A fitted StandardScaler + RBF `SVC` as a layer (see the module docstring)."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, support: torch.Tensor, coef: torch.Tensor,
                 intercept: torch.Tensor, gamma: torch.Tensor):
        super().__init__(mean=mean, scale=scale, support=support, coef=coef, intercept=intercept, gamma=gamma)
        first, second = _pair_matrices(_classes_from_pairs(len(intercept)))
        self.register_buffer("first", first, persistent=False)
        self.register_buffer("second", second, persistent=False)

    @property
    def out_features(self) -> int:
        return self.first.shape[1]

    @classmethod
    def from_pipeline(cls, pipeline, num_classes: int) -> "KernelSVMHead":
        """The head of a fitted `make_pipeline(StandardScaler(), SVC(kernel='rbf'))` over `num_classes` classes."""
        scaler, svc = pipeline[0], pipeline[-1]
        classes = [int(c) for c in svc.classes_]
        starts = np.concatenate([[0], np.cumsum(svc.n_support_)])
        fitted_pairs = [(a, b) for a in range(len(classes)) for b in range(a + 1, len(classes))]
        all_pairs = {(i, j): p for p, (i, j) in enumerate(
            (i, j) for i in range(num_classes) for j in range(i + 1, num_classes))}
        coef = np.zeros((len(svc.support_vectors_), len(all_pairs)))
        intercept = np.zeros(len(all_pairs))
        sign = -1.0 if len(classes) == 2 else 1.0  # scikit-learn flips a binary SVC's sign: positive means the second
        for fitted, (a, b) in enumerate(fitted_pairs):
            p = all_pairs[(classes[a], classes[b])]
            coef[starts[a]:starts[a + 1], p] = sign * svc.dual_coef_[b - 1, starts[a]:starts[a + 1]]
            coef[starts[b]:starts[b + 1], p] = sign * svc.dual_coef_[a, starts[b]:starts[b + 1]]
            intercept[p] = sign * svc.intercept_[fitted]
        return cls(*(torch.from_numpy(np.asarray(v, dtype=np.float64)) for v in (
            scaler.mean_, scaler.scale_, svc.support_vectors_, coef, intercept, svc._gamma)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        decision = torch.exp(-self.gamma * _squared_distances(self.standardize(x), self.support)) @ self.coef \
            + self.intercept
        wins = (decision > 0).float()
        votes = wins @ self.first + (1 - wins) @ self.second
        confidence = decision @ (self.first - self.second)
        return votes + confidence / (3 * (confidence.abs() + 1))


class NearestNeighboursHead(_ExamplesHead):
    """A fitted StandardScaler + `KNeighborsClassifier` as a layer (see the module docstring). Its votes have no
    gradient, so no class activation map can be taken through it."""

    differentiable = False

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, examples: torch.Tensor, votes: torch.Tensor,
                 k: torch.Tensor):
        super().__init__(mean=mean, scale=scale, examples=examples, votes=votes)
        self.register_buffer("k", k.long())  # saved with the weights; `neighbours` is its plain int for forward
        self.neighbours = int(k)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.neighbours = int(self.k)  # read here, not in forward: an exporter's trace then sees a constant

    @property
    def out_features(self) -> int:
        return self.votes.shape[1]

    @classmethod
    def from_pipeline(cls, pipeline, num_classes: int, features: np.ndarray, labels: np.ndarray):
        """The head of a fitted `make_pipeline(StandardScaler(), KNeighborsClassifier())`, given the training
        `features` (raw, as the pipeline was fitted on) and their class indices `labels`."""
        scaler, knn = pipeline[0], pipeline[-1]
        examples = torch.from_numpy(scaler.transform(features))
        votes = nn.functional.one_hot(torch.from_numpy(np.asarray(labels, dtype=np.int64)), num_classes)
        return cls(torch.from_numpy(scaler.mean_), torch.from_numpy(scaler.scale_), examples, votes,
                   torch.tensor(knn.n_neighbors))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.neighbours
        nearest = _squared_distances(self.standardize(x), self.examples).topk(k, dim=1, largest=False).indices
        fractions = self.votes[nearest].sum(1) / k
        return fractions.clamp_min(1e-6).log()


def classifier_as_head(pipeline, kind: str, num_classes: int, features: np.ndarray, labels: np.ndarray) -> nn.Module:
    """Strategy III's fitted scikit-learn `pipeline` of `kind` ('logreg', 'svm' or 'knn') as a PyTorch head."""
    from cnnlab.featurecache import logreg_as_linear

    if kind == "logreg":
        return logreg_as_linear(pipeline, num_classes)
    if kind == "svm":
        return KernelSVMHead.from_pipeline(pipeline, num_classes)
    if kind == "knn":
        return NearestNeighboursHead.from_pipeline(pipeline, num_classes, features, labels)
    raise ValueError(f"no head for classifier {kind!r}")


def empty_head(kind: str, state: dict[str, torch.Tensor]) -> nn.Module:
    """A head of `kind` ('svm' or 'knn') shaped to take the saved tensors `state` (its own keys, no prefix)."""
    shaped = {name: torch.zeros_like(tensor) for name, tensor in state.items()}
    if kind == "svm":
        return KernelSVMHead(*(shaped[n] for n in ("mean", "scale", "support", "coef", "intercept", "gamma")))
    if kind == "knn":
        return NearestNeighboursHead(*(shaped[n] for n in ("mean", "scale", "examples", "votes", "k")))
    raise ValueError(f"no kernel head {kind!r}")
