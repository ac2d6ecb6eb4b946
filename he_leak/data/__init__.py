"""Data: the built-in datasets (offline: scikit-learn's digits, scikit-image's faces, photos and biomedical images)
and a user's own files, read by the rules of he_leak.data.user_files."""

from he_leak.data.datasets import DATASETS, Dataset, check_labels, load_dataset, load_path

__all__ = ["DATASETS", "Dataset", "check_labels", "load_dataset", "load_path"]
