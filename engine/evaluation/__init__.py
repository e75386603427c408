"""Evaluation: recognition metrics, the gallery/probe protocol, and the evaluate job."""
