"""A run's defaults by strategy, in a module that imports nothing heavy: `cnnlab --help` names them."""

DEFAULT_LR = {"scratch": 2e-3, "finetune": 1e-3, "extract": 1e-2, "probe": 1e-2}
DEFAULT_EPOCHS = {"scratch": 15, "finetune": 10, "extract": 1, "probe": 1, "linear": 30}  # random init needs longer
