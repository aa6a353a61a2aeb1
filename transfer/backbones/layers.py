"""Keras layers that travel inside the model (so training and serving agree).

``FamilyPreprocessing`` reproduces ``keras.applications.<family>.preprocess_input``
as a graph layer:

- ``"caffe"``: RGB -> BGR, subtract the ImageNet BGR means (VGG, ResNet v1).
- ``"tf"``: scale to [-1, 1] (MobileNet, Inception, Xception, ResNet v2, NASNet).
- ``"torch"``: scale to [0, 1], normalize with ImageNet mean/std (DenseNet).
- ``"none"``: pass 0..255 floats through; the backbone rescales itself
  (EfficientNet, EfficientNetV2, ConvNeXt, MobileNetV3).

Example:
    >>> layer = FamilyPreprocessing("tf")
    >>> layer(np.full((1, 2, 2, 3), 255, "uint8"))  # -> all 1.0
"""

from __future__ import annotations

import keras
from keras import ops

MODES = ("caffe", "tf", "torch", "none")
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="transfer")
class FamilyPreprocessing(keras.layers.Layer):
    """Map raw 0..255 pixels (uint8 or float) to what a backbone family expects."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"Unknown preprocessing mode. Expected one of {MODES}. Received: mode={mode!r}")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)
            return x - ops.convert_to_tensor(_CAFFE_BGR_MEAN, dtype=x.dtype)
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=x.dtype)
            std = ops.convert_to_tensor(_TORCH_STD, dtype=x.dtype)
            return (x / 255.0 - mean) / std
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
