"""SSL objectives, one file each, registered by name in ``OBJECTIVES``.

The imports below fill the registries explicitly (objectives, and the text encoders they run with).
"""

from ssl_tasks.modalities import text as _text  # noqa: F401  (registers the text encoders)
from ssl_tasks.modalities.graph import encoders as _graph_encoders  # noqa: F401  (registers gcn, gat)
from ssl_tasks.modalities.speech import encoders as _speech_encoders  # noqa: F401  (registers wav2vec2)
from ssl_tasks.modalities.video import encoders as _video_encoders  # noqa: F401  (registers video_vit)
from ssl_tasks.objectives import (  # noqa: F401  (registration)
    barlow_twins, beit, byol, causal_lm, clip, colorization, dgi, dino, graphcl, graphmae, hubert, ijepa, jigsaw, mae,
    mlm, moco_v2, moco_v3, relative_position, rotation, siglip, simclr, simcse, simsiam, span_corruption, vicreg,
    videomae, wav2vec2,
)
from ssl_tasks.objectives.base import (
    OBJECTIVES, DataSpec, Objective, PairDataSpec, StepResult, TextDataSpec, TextObjective,
)

__all__ = ["OBJECTIVES", "DataSpec", "Objective", "PairDataSpec", "StepResult", "TextDataSpec", "TextObjective"]
