"""The vision task: the digits split, the conv front end (ReLU or LIF), the S3CMN classifier and the CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s3cmn.tasks.baselines import CNNBaseline
from s3cmn.tasks.config import TaskConfig
from s3cmn.tasks.metrics import vision_report
from s3cmn.tasks.models import ConvFrontEnd, VisionS3CMN, conv_output_shape
from s3cmn.tasks.vision_data import VisionDataError, load_digits_splits, load_images

from .conftest import tiny_config


def test_digits_split_is_deterministic_disjoint_stratified_and_complete(vision_task: TaskConfig) -> None:
    a, b, other = (load_digits_splits(vision_task, seed) for seed in (0, 0, 1))
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.test_x, other.test_x)
    rows = {name: {tuple(x.flatten().tolist()) for x in getattr(a, f"{name}_x")} for name in ("train", "valid", "test")}
    sizes = {name: len(getattr(a, f"{name}_y")) for name in ("train", "valid", "test")}
    assert sum(sizes.values()) == 1797
    assert (sizes["valid"], sizes["test"]) == (270, 270)  # 15% each, rounded up by scikit-learn
    # disjoint: no image in two splits (the digits hold a few exact duplicates, so compare by index too)
    assert len(rows["test"] & rows["train"]) <= 5 and len(rows["valid"] & rows["test"]) <= 5
    for split in ("valid", "test"):
        counts = np.bincount(getattr(a, f"{split}_y").numpy(), minlength=10)
        assert counts.min() >= 25 and counts.max() <= 29  # stratified: ~27 of each digit
    assert a.image_shape == (1, 8, 8) and float(a.train_x.max()) <= 1.0 and float(a.train_x.min()) >= 0.0


def test_digits_split_indices_are_disjoint() -> None:
    from s3cmn.tasks.vision_data import stratified_split

    labels = np.repeat(np.arange(10), 50)
    train, valid, test = stratified_split(labels, 0.2, 0.2, seed=3)
    assert not set(train) & set(valid) and not set(train) & set(test) and not set(valid) & set(test)
    assert len(train) + len(valid) + len(test) == 500
    assert np.array_equal(stratified_split(labels, 0.2, 0.2, seed=3)[2], test)


def test_torchvision_datasets_need_a_root_and_the_package(tmp_path) -> None:
    with pytest.raises(VisionDataError, match="--vision-data-root"):
        load_images(TaskConfig(vision_dataset="mnist"), 0)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(VisionDataError, match="pip install torchvision"):
            load_images(TaskConfig(vision_dataset="cifar10", vision_data_root=str(tmp_path)), 0)
    else:
        with pytest.raises(VisionDataError, match="is not downloaded under"):
            load_images(TaskConfig(vision_dataset="cifar10", vision_data_root=str(tmp_path)), 0)


@pytest.mark.parametrize("spiking", [False, True])
def test_classifier_shapes_and_spike_rates(vision_task: TaskConfig, spiking: bool) -> None:
    task = TaskConfig(**{**vision_task.to_dict(), "spiking_conv": spiking})
    config = tiny_config()
    model = VisionS3CMN(config, task, (1, 8, 8), 10)
    out = model(torch.rand(3, 1, 8, 8))
    assert out.logits.shape == (3, 10)
    assert len(out.conv_spike_rates) == (2 if spiking else 0)
    assert all(0.0 <= float(r) <= 1.0 for r in out.conv_spike_rates)
    assert len(out.spike_stats) == config.num_layers  # one LIF layer a block
    assert conv_output_shape(task, (1, 8, 8)) == (8, 4, 4)


def test_spiking_front_end_emits_rates_and_passes_gradients(vision_task: TaskConfig) -> None:
    task = TaskConfig(**{**vision_task.to_dict(), "spiking_conv": True, "conv_spike_steps": 4})
    front = ConvFrontEnd(task, 1, tiny_config())
    images = torch.rand(2, 1, 8, 8, requires_grad=True)
    features, rates = front(images)
    assert features.shape == (2, 8, 4, 4)
    assert set(torch.unique(features * 4).round().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}  # rates over 4 steps
    features.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0  # the surrogate gradient reaches the input


def test_a_conv_stack_that_leaves_no_pixels_is_an_error() -> None:
    task = TaskConfig(conv_channels=[4, 4], conv_kernel_sizes=[9, 3], conv_strides=[1, 1], conv_padding=[0, 0])
    with pytest.raises(ValueError, match="conv layer 0 .* leaves no pixels"):
        conv_output_shape(task, (1, 8, 8))


@pytest.mark.parametrize("kind", ["s3cmn", "spiking", "cnn"])
def test_one_batch_overfit(vision_task: TaskConfig, kind: str) -> None:
    torch.manual_seed(0)
    data = load_digits_splits(vision_task, 0)
    images, labels = data.train_x[:16], data.train_y[:16]
    if kind == "cnn":
        model = CNNBaseline(vision_task, (1, 8, 8), 10, width=32)
    else:
        task = TaskConfig(**{**vision_task.to_dict(), "spiking_conv": kind == "spiking"})
        model = VisionS3CMN(tiny_config(), task, (1, 8, 8), 10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = F.cross_entropy(model(images).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    report = vision_report(model, images, labels, 10, noise_levels=[0.0, 1.0])
    assert report["accuracy"] == 1.0, report["accuracy"]
    assert report["noise_curve"][0] == {"noise_std": 0.0, "accuracy": 1.0}
    assert report["noise_curve"][1]["accuracy"] < 1.0  # std-1 noise on [0, 1] pixels hurts
    assert len(report["per_class_accuracy"]) == 10
