"""LightningDataModules, one per on-disk data format, and the embedded-data generators."""

import os

# Albumentations otherwise checks the network for a newer release at import.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
