"""Self-supervised objectives: DINO (trains the toy backbone) and SwAV with Sinkhorn-Knopp (PASS)."""
