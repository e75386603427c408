"""Training loops: DSR super-resolution and EdgeFace fine-tuning."""
