"""Training: ISR on unlabeled video, supervised fine-tuning, the SCL objective, and their losses.

>>> from isr_reid import load_model
>>> from isr_reid.train import train_isr
>>> model = load_model("isr_resnet18", pretrained=False, input_size=(128, 64))   # doctest: +SKIP
>>> result = train_isr(model, "videos/", max_steps=50, output_dir="run/")        # doctest: +SKIP
"""

from ._common import NonFiniteLossError
from .finetune import FinetuneResult, IdentitySampler, evaluate_model, finetune
from .isr import TrainResult, train_isr
from .losses import batch_hard_triplet_loss, cross_entropy_label_smooth, reliability_contrastive_loss
from .matching import MinedPairs, match_pairs, mine_pairs, pair_reliability
from .scl import SCLObjective, SCLResult, train_scl

__all__ = [
    "FinetuneResult",
    "IdentitySampler",
    "MinedPairs",
    "NonFiniteLossError",
    "SCLObjective",
    "SCLResult",
    "TrainResult",
    "batch_hard_triplet_loss",
    "cross_entropy_label_smooth",
    "evaluate_model",
    "finetune",
    "match_pairs",
    "mine_pairs",
    "pair_reliability",
    "reliability_contrastive_loss",
    "train_isr",
    "train_scl",
]
