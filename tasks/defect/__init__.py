"""`defect`: autoencoder anomaly detection; the LightningModule is `DefectTask` (`tasks.defect.module`)."""

from tasks.defect.module import DefectTask, per_sample_loss

__all__ = ["DefectTask", "per_sample_loss"]
