"""Evaluation protocols on frozen features (k-NN, linear probe) and semi-supervised fine-tuning."""

from ssl_tasks.evaluation.features import extract_features, raw_features
from ssl_tasks.evaluation.finetune import balanced_subset, finetune_top1, raw_semi_top1
from ssl_tasks.evaluation.knn import knn_predict, knn_top1
from ssl_tasks.evaluation.linear_probe import linear_probe_top1
from ssl_tasks.evaluation.protocols import PROTOCOLS, EvalConfig, ProtocolSpec, evaluate_encoder

__all__ = [
    "PROTOCOLS",
    "EvalConfig",
    "ProtocolSpec",
    "balanced_subset",
    "evaluate_encoder",
    "extract_features",
    "finetune_top1",
    "knn_predict",
    "knn_top1",
    "linear_probe_top1",
    "raw_features",
    "raw_semi_top1",
]
