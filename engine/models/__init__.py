"""Networks: EdgeFace (timm), the ArcFace margin head and the DSR super-resolution network."""
