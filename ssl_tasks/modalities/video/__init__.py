"""The video modality: clips of frames (T, C, H, W), a space-time ViT and VideoMAE pretraining."""
