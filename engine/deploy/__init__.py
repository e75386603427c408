"""Ship a tuned pipeline: ONNX export (PyTorch), then enrolment and identification with ONNX Runtime alone.

``export`` (torch) writes a model folder: ``probe.onnx`` (VLR face -> embedding: DSR and the fine-tuned
recogniser in one graph), ``gallery.onnx`` (HR face -> embedding) and the card ``model.json``; ``enroll`` and
``identify`` read it with ONNX Runtime and never import torch (``card``, ``faces``, ``onnx_model``,
``gallery`` are torch-free; a test holds them to it).
"""
