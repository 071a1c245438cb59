"""What tasks may ask of a DataModule beyond Lightning's loaders, declared as Protocols (checked with
`isinstance`) instead of attribute names looked up as strings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # only for annotations: importing the contract does not load kornia or torch
    import torch
    from torch.utils.data import DataLoader

    from datamodules.gpu_augment import GpuAugment


@runtime_checkable
class GpuAugmenting(Protocol):
    """Data with a batched augmentation on the training device (`data.gpu_augment`; None = none)."""

    gpu_augment: GpuAugment | None

    def gpu_augment_batch(self, batch: Any, epoch: int) -> Any:
        """Apply `gpu_augment` to a training batch already on the device."""
        ...


@runtime_checkable
class PlainLoading(Protocol):
    """Data that can also be read without augmentation (pose stage > 1 fits error statistics on it)."""

    def plain_dataloader(self, split: str = "train") -> DataLoader:
        """The loader of `split`, unshuffled and unaugmented."""
        ...


@runtime_checkable
class TensorData(Protocol):
    """Data held as whole tensors (embed's projector reads the validation images from them)."""

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images (N, H, W, C), labels (N,)) of `split`."""
        ...


@runtime_checkable
class DescribedData(Protocol):
    """Data that describes itself (class names, defect types, image size, ...) for the task."""

    def info(self) -> dict[str, Any]:
        """What the task needs to know about the data."""
        ...


def gpu_augmented(datamodule: object, batch: Any, epoch: int) -> Any:
    """`batch` through the data's device augmentation when it has one, else unchanged."""
    if isinstance(datamodule, GpuAugmenting) and datamodule.gpu_augment is not None:
        return datamodule.gpu_augment_batch(batch, epoch)
    return batch
