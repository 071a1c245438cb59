"""Nearest-neighbour classification in an embedding space, by sum of squared differences (SSD).

k-NN votes are a plain majority over the k nearest reference items (equal SSDs at the k-th place:
the earlier reference item is taken); a tie between classes goes to the tied class whose votes
have the smallest summed SSD (with equal counts, the closest on average), and an exact tie after
that to the smallest class index. k=1 is plain SSD nearest neighbour.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def ssd_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sum of squared differences between every row of `a` (N, D) and of `b` (M, D): (N, M).

    Computed in float64 from the differences themselves (identical rows give exactly 0, as the
    reference's SSD table shows), in chunks of rows so memory stays at about 16 M elements; returned
    in `a`'s floating dtype.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"ssd_matrix expects (N, D) and (M, D) with the same D, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    a64, b64 = a.double(), b.double()
    rows = max(1, 2**24 // max(1, b.shape[0] * b.shape[1]))
    ssd = (
        torch.cat([((chunk[:, None, :] - b64[None]) ** 2).sum(-1) for chunk in a64.split(rows)])
        if len(a)
        else (a64.new_zeros((0, b.shape[0])))
    )
    out_dtype = a.dtype if a.is_floating_point() else torch.float32
    return ssd.to(out_dtype)


def nearest_neighbour(
    ref_emb: torch.Tensor, query_emb: torch.Tensor, exclude_self: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index (M,) of each query's nearest reference item and its SSD (M,).

    `exclude_self=True` means the queries are the reference items themselves (leave-one-out):
    query i never matches reference i.
    """
    ssd = _query_ssd(ref_emb, query_emb, exclude_self)
    dist, index = ssd.min(dim=1)
    return index, dist


def knn_predict(
    ref_emb: torch.Tensor,
    ref_labels: torch.Tensor,
    query_emb: torch.Tensor,
    k: int = 1,
    exclude_self: bool = False,
) -> torch.Tensor:
    """Predicted class (M,) for each query by majority vote of its k nearest reference items by SSD.

    Labels are class indices 0..C-1. Ties between classes: smallest summed SSD of their votes, then
    smallest class index. `exclude_self=True` is leave-one-out: `query_emb` must be `ref_emb`'s
    rows in the same order, and each item is classified by the others.
    """
    available = len(ref_emb) - int(exclude_self)
    if not 1 <= k <= available:
        raise ValueError(f"k={k} needs 1 <= k <= {available} reference items (exclude_self={exclude_self})")
    if len(ref_labels) != len(ref_emb):
        raise ValueError(f"{len(ref_labels)} reference labels for {len(ref_emb)} reference embeddings")
    ssd = _query_ssd(ref_emb, query_emb, exclude_self).double()
    dist, index = (t[:, :k] for t in ssd.sort(dim=1, stable=True))  # equal SSDs: earlier item first
    neighbour_labels = ref_labels.long()[index]
    num_classes = int(ref_labels.max()) + 1
    votes = torch.zeros(len(query_emb), num_classes, dtype=torch.float64, device=ssd.device)
    votes.scatter_add_(1, neighbour_labels, torch.ones_like(dist))
    summed = torch.zeros_like(votes).scatter_add_(1, neighbour_labels, dist)
    winners = votes == votes.max(dim=1, keepdim=True).values
    return torch.where(winners, summed, torch.inf).argmin(dim=1)


def _query_ssd(ref_emb: torch.Tensor, query_emb: torch.Tensor, exclude_self: bool) -> torch.Tensor:
    ssd = ssd_matrix(query_emb, ref_emb)
    if exclude_self:
        if query_emb.shape != ref_emb.shape:
            raise ValueError(
                f"exclude_self (leave-one-out) needs the queries to be the reference items, got "
                f"{tuple(query_emb.shape)} queries for {tuple(ref_emb.shape)} reference items"
            )
        ssd.fill_diagonal_(torch.inf)
    return ssd


class KNNAccuracy(Metric):
    """Accuracy of k-NN classification (SSD, majority vote; see module docstring for ties).

    Two modes. With a reference set (constructor `reference=(emb, labels)` or `set_reference`),
    each `update(query_emb, query_labels)` batch is classified against it. With
    `leave_one_out=True`, the updates themselves form the set: `compute()` classifies each item
    by all the others (across DDP ranks too: the gathered embeddings are the set).
    Embeddings are kept until `compute()` (cat states), fine for embedding-sized data.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        k: int = 1,
        leave_one_out: bool = False,
        reference: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if leave_one_out and reference is not None:
            raise ValueError(
                "leave_one_out classifies the updates by each other; do not pass a reference too"
            )
        self.k = k
        self.leave_one_out = leave_one_out
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.register_buffer("ref_emb", torch.empty(0), persistent=False)
        self.register_buffer("ref_labels", torch.empty(0, dtype=torch.long), persistent=False)
        if reference is not None:
            self.set_reference(*reference)

    def set_reference(self, emb: torch.Tensor, labels: torch.Tensor) -> None:
        """Use `emb` (N, D) with class indices `labels` (N,) as the labelled reference set."""
        if self.leave_one_out:
            raise ValueError("leave_one_out mode has no separate reference set")
        if emb.ndim != 2 or labels.shape != (len(emb),):
            raise ValueError(
                f"reference must be (N, D) and (N,), got {tuple(emb.shape)}, {tuple(labels.shape)}"
            )
        self.ref_emb = emb.detach().to(self.device)
        self.ref_labels = labels.detach().long().to(self.device)

    def update(self, query_emb: torch.Tensor, query_labels: torch.Tensor) -> None:
        """Add a batch of embeddings (B, D) and their true class indices (B,)."""
        self.embeddings.append(query_emb.detach())
        self.labels.append(query_labels.detach().long())

    def compute(self) -> torch.Tensor:
        """Fraction of queries whose k-NN prediction equals their label."""
        emb, labels = dim_zero_cat(self.embeddings), dim_zero_cat(self.labels)
        if self.leave_one_out:
            pred = knn_predict(emb, labels, emb, k=self.k, exclude_self=True)
        elif len(self.ref_emb) == 0:
            raise RuntimeError("KNNAccuracy has no reference set: call set_reference(emb, labels) first")
        else:
            pred = knn_predict(self.ref_emb, self.ref_labels, emb, k=self.k)
        return (pred == labels).double().mean().float()
