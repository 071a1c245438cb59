"""`segment`: FCN semantic segmentation; the LightningModule is `SegmentTask` (`tasks.segment.module`)."""

from tasks.segment.module import SegmentTask, soft_dice_loss

__all__ = ["SegmentTask", "soft_dice_loss"]
