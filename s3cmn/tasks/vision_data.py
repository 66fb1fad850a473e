"""Image data for the vision task: scikit-learn's bundled digits (offline), or torchvision's MNIST / CIFAR-10
when they are already downloaded.

Every dataset comes as :class:`ImageSplits`: float images in [0, 1], shape (n, C, H, W), and integer labels,
split into train / validation / test. The digits split is stratified and fixed by the seed; MNIST and CIFAR-10
keep their official test set and hold a stratified validation slice out of their training set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from s3cmn.data.errors import DataError
from s3cmn.tasks.config import TaskConfig

__all__ = ["ImageSplits", "VisionDataError", "load_images", "holdout", "load_digits_splits", "stratified_split"]


class VisionDataError(DataError):
    """Image data that is missing or cannot be read; the message says how to get it."""


@dataclass
class ImageSplits:
    """Images (n, C, H, W) in [0, 1] and labels (n,) for each split; ``num_classes`` labels 0..K-1."""

    train_x: Tensor
    train_y: Tensor
    valid_x: Tensor
    valid_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    name: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]


def stratified_split(labels: np.ndarray, validation_fraction: float, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint index arrays (train, validation, test), each with the class proportions of ``labels``."""
    rest, test = holdout(np.arange(len(labels)), labels, test_fraction, seed)
    train, valid = holdout(rest, labels, validation_fraction / (1 - test_fraction), seed)  # a share of the rest
    return train, valid, test


def holdout(index: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``index`` split into (kept, held out), ``fraction`` of it held out, stratified by ``labels[index]``."""
    from sklearn.model_selection import train_test_split

    kept, held = train_test_split(index, test_size=fraction, stratify=labels[index], random_state=seed)
    return np.sort(kept), np.sort(held)


def load_digits_splits(task: TaskConfig, seed: int) -> ImageSplits:
    """The 1,797 8x8 digits of ``sklearn.datasets.load_digits`` (pixels 0..16 scaled to [0, 1])."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32)[:, None]  # (n, 1, 8, 8)
    labels = np.asarray(digits.target)
    train, valid, test = stratified_split(labels, task.validation_fraction, task.test_fraction, seed)
    y = torch.tensor(labels, dtype=torch.long)
    return ImageSplits(images[train], y[train], images[valid], y[valid], images[test], y[test], 10, "digits")


def _torchvision_dataset(task: TaskConfig) -> tuple[type, str]:
    try:
        import torchvision.datasets as tv
    except ImportError:
        raise VisionDataError(
            f"vision_dataset = {task.vision_dataset!r} needs torchvision: pip install torchvision (the build that "
            "matches your torch), or use vision_dataset = 'digits', which runs offline"
        ) from None
    cls = {"mnist": tv.MNIST, "cifar10": tv.CIFAR10}[task.vision_dataset]
    return cls, cls.__name__


def _to_tensors(dataset: object) -> tuple[Tensor, Tensor]:
    data = torch.as_tensor(np.asarray(dataset.data))  # MNIST (n, H, W) uint8; CIFAR-10 (n, H, W, 3) uint8
    images = data[:, None] if data.dim() == 3 else data.permute(0, 3, 1, 2)  # (n, C, H, W)
    return images.float() / 255.0, torch.as_tensor(np.asarray(dataset.targets), dtype=torch.long)


def load_torchvision_splits(task: TaskConfig, seed: int) -> ImageSplits:
    """MNIST / CIFAR-10 from ``task.vision_data_root`` (never downloaded here)."""
    if task.vision_data_root is None:
        raise VisionDataError(f"vision_dataset = {task.vision_dataset!r} needs --vision-data-root, the folder "
                              "where torchvision downloaded it (or use vision_dataset = 'digits')")
    cls, name = _torchvision_dataset(task)
    root = Path(task.vision_data_root)
    try:
        train_set, test_set = cls(str(root), train=True, download=False), cls(str(root), train=False, download=False)
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        raise VisionDataError(
            f"{name} is not downloaded under {root} ({' '.join(str(err).split())}): download it once with "
            f"torchvision.datasets.{name}({str(root)!r}, download=True), or use vision_dataset = 'digits'"
        ) from None
    train_x, train_y = _to_tensors(train_set)
    test_x, test_y = _to_tensors(test_set)
    labels = train_y.numpy()
    train, valid = holdout(np.arange(len(labels)), labels, task.validation_fraction, seed)
    return ImageSplits(train_x[train], train_y[train], train_x[valid], train_y[valid], test_x, test_y,
                       int(train_y.max()) + 1, task.vision_dataset)


def load_images(task: TaskConfig, seed: int) -> ImageSplits:
    """The dataset ``task.vision_dataset`` as train / validation / test splits."""
    if task.vision_dataset == "digits":
        return load_digits_splits(task, seed)
    return load_torchvision_splits(task, seed)
