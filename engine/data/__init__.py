"""Datasets: the guide's layout, the uint8 split loader, demo faces, `prepare`, and the data root."""

from engine.data.demo import generate_demo_dataset
from engine.data.layout import HR_DIR, SPLITS, VLR_DIR, parse_size, split_dir, subject_of
from engine.data.pairs import PairedSplit, load_split, to_float
from engine.data.prepare import prepare_dataset
from engine.data.resolve import demo_cache_root, ensure_demo_dataset, resolve_data_root

__all__ = ["HR_DIR", "SPLITS", "VLR_DIR", "parse_size", "split_dir", "subject_of", "PairedSplit", "load_split",
           "to_float", "generate_demo_dataset", "prepare_dataset", "demo_cache_root", "ensure_demo_dataset",
           "resolve_data_root"]
