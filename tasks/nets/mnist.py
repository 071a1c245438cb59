"""Digit networks whose penultimate layer doubles as an embedding for nearest-neighbour symbol lookup.

Both take (N, 1, 28, 28) MNIST-normalised images and return log-probabilities (N, num_classes), so
they train with `nll_loss`. `embed(x)` is the network truncated before its last layer; call
`model.eval()` first, otherwise dropout makes embeddings random.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MnistNet(nn.Module):
    """The reference network: 21,840 parameters with 10 classes.

    conv 10@5x5 -> max-pool 2 -> ReLU -> conv 20@5x5 -> Dropout2d(p) -> max-pool 2 -> ReLU ->
    flatten 320 -> fc 50 -> ReLU -> fc 10 -> log-softmax. Attribute names follow the reference
    code (conv1, conv2, conv2_drop, fc1, fc2) so its state dicts load unchanged.
    """

    embedding_dim = 50

    def __init__(self, dropout: float = 0.5, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d(p=dropout)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Intermediate activations for visualisation, in order.

        conv1 (N,10,24,24) raw filter responses; block1 (N,10,12,12) after pool+ReLU; conv2
        (N,20,8,8) raw responses; block2 (N,20,4,4) after dropout, pool and ReLU.
        """
        conv1 = self.conv1(x)
        block1 = F.relu(F.max_pool2d(conv1, 2))
        conv2 = self.conv2(block1)
        block2 = F.relu(F.max_pool2d(self.conv2_drop(conv2), 2))
        return {"conv1": conv1, "block1": block1, "conv2": conv2, "block2": block2}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The 50-d embedding (N, 50): the fc1 layer's output AFTER its ReLU (so it is non-negative)."""
        return F.relu(self.fc1(self.feature_maps(x)["block2"].flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (N, num_classes)."""
        return F.log_softmax(self.fc2(self.embed(x)), dim=1)


class ConvNet(nn.Module):
    """The larger reference network (about 99% on MNIST in 6 epochs); 3,199,106 parameters.

    conv 32@5x5 (padding 2) -> ReLU -> max-pool 2 -> conv 64@5x5 (padding 2) -> ReLU -> max-pool 2
    -> flatten 3136 -> dropout(p) -> fc 1000 -> ReLU -> fc 10 -> log-softmax. The tutorial it comes
    from has no ReLU after fc 1000 (fc1 and fc2 then collapse into one linear map); we add it so
    the 1000-d embedding is a non-linear feature like MnistNet's.
    """

    embedding_dim = 1000

    def __init__(self, dropout: float = 0.5, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5, padding=2)
        self.drop = nn.Dropout(p=dropout)
        self.fc1 = nn.Linear(7 * 7 * 64, 1000)
        self.fc2 = nn.Linear(1000, num_classes)

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Intermediate activations for visualisation, in order.

        conv1 (N,32,28,28) raw filter responses; block1 (N,32,14,14) after ReLU+pool; conv2
        (N,64,14,14) raw responses; block2 (N,64,7,7) after ReLU+pool.
        """
        conv1 = self.conv1(x)
        block1 = F.max_pool2d(F.relu(conv1), 2)
        conv2 = self.conv2(block1)
        block2 = F.max_pool2d(F.relu(conv2), 2)
        return {"conv1": conv1, "block1": block1, "conv2": conv2, "block2": block2}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The 1000-d embedding (N, 1000): fc1's output AFTER its ReLU."""
        return F.relu(self.fc1(self.drop(self.feature_maps(x)["block2"].flatten(1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (N, num_classes)."""
        return F.log_softmax(self.fc2(self.embed(x)), dim=1)


def replace_head(model: MnistNet | ConvNet, num_classes: int) -> MnistNet | ConvNet:
    """Transfer to a symbol set: freeze every parameter, then give `model` a new trainable last layer.

    Modifies and returns `model`; only `model.fc2` (fresh, `num_classes` outputs) has
    `requires_grad=True`. Dropout still acts in train mode, as in the course's transfer step.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    model.fc2 = nn.Linear(model.fc2.in_features, num_classes)
    return model
