"""SSL objectives, one file each, registered by name in ``OBJECTIVES``.

The imports below fill the registry explicitly.
"""

from ssl_tasks.objectives import barlow_twins, beit, byol, colorization, dino, ijepa, jigsaw, mae, moco_v2, moco_v3, relative_position, rotation, simclr, simsiam, vicreg  # noqa: F401  (registration)
from ssl_tasks.objectives import causal_lm, mlm, simcse, span_corruption  # noqa: F401  (text; registration)
from ssl_tasks.modalities import text as _text  # noqa: F401  (text encoders)
from ssl_tasks.objectives.base import OBJECTIVES, DataSpec, Objective, StepResult, TextDataSpec, TextObjective

__all__ = ["OBJECTIVES", "DataSpec", "Objective", "StepResult", "TextDataSpec", "TextObjective"]
