"""Model training with torch/torchvision: datasets, augmentation, training, export, evaluation.

Only this package may import torch; evaluation and metrics stay torch-free.
"""
