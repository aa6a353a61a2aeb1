"""Multi-object detection: every box of every class, an anchor-free head on a feature pyramid.

- ``task``: the ``Task`` the engine drives; ``data``: padded box targets;
- ``model``, ``targets``, ``loss``, ``decode``: the network, ATSS assignment,
  its loss and serving-time decoding with NMS;
- ``evaluation``: COCO mAP with pycocotools; ``reader``: ``ExportedDetector``.
"""
