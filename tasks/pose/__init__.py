"""`pose`: DeepPose with cascade stages; the LightningModule is `PoseTask` (`tasks.pose.module`)."""

from tasks.pose.module import PoseTask

__all__ = ["PoseTask"]
