"""Semantic segmentation: a class for every pixel, a U-Net (or FCN) decoder on any backbone.

- ``task``: the ``Task`` the engine drives; ``model``: the decoder;
- ``loss``, ``metrics``: cross-entropy/focal/Dice, IoU and pixel accuracy;
- ``masks``: logits -> class masks at the original resolution;
- ``evaluation``: a pixel confusion matrix; ``reader``: ``ExportedSegmenter``.
"""
