"""`finetune`: a torchvision classifier trained on class-per-folder images; the LightningModule is
`FinetuneTask` (`tasks.finetune.module`)."""

from tasks.finetune.module import GRID_SIZE, FinetuneTask

__all__ = ["GRID_SIZE", "FinetuneTask"]
