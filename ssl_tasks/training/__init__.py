"""Training: a plain PyTorch loop (loop.py) and its Ray Train runner (ray_runner.py)."""
