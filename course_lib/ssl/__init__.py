"""Self-supervised objectives: DINO (trains the toy backbone) and SwAV with Sinkhorn-Knopp (PASS)."""
from .swav import Prototypes, SwAVQueue, distributed_sinkhorn, sinkhorn, swapped_prediction_loss, swav_codes  # noqa: F401
