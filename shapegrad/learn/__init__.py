"""Learning to draw: encoder models, synthetic and image datasets, the guide and feedback losses,
training, data-parallel placement, metrics, and the trained encoder applied to new images."""

from shapegrad.learn.config import TrainConfig

__all__ = ["TrainConfig"]
