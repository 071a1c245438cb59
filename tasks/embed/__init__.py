"""`embed`: an MNIST CNN whose truncated network embeds symbols; the LightningModule is `EmbedTask`
(`tasks.embed.module`)."""

from tasks.embed.module import EmbedTask

__all__ = ["EmbedTask"]
