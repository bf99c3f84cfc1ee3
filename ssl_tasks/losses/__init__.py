"""Pure loss modules over tensors: no data loading, logging or launching."""

from ssl_tasks.losses.barlow_twins import BarlowTwinsLoss
from ssl_tasks.losses.batch_info_nce import BatchInfoNCELoss
from ssl_tasks.losses.dino import DINOLoss
from ssl_tasks.losses.latent_prediction import LatentPredictionLoss
from ssl_tasks.losses.masked_reconstruction import MaskedReconstructionLoss
from ssl_tasks.losses.negative_cosine import NegativeCosineLoss
from ssl_tasks.losses.nt_xent import NTXentLoss
from ssl_tasks.losses.queue_info_nce import FeatureQueue, QueueInfoNCELoss
from ssl_tasks.losses.vicreg import VICRegLoss

__all__ = [
    "BarlowTwinsLoss", "BatchInfoNCELoss", "DINOLoss", "FeatureQueue", "LatentPredictionLoss",
    "MaskedReconstructionLoss", "NTXentLoss", "NegativeCosineLoss", "QueueInfoNCELoss", "VICRegLoss",
]
