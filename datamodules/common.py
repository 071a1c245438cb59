"""Pieces every DataModule shares: the base class that parses `data.*` into typed settings, worker
sizing and DataLoader construction."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast, get_args

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from datamodules.gpu_augment import GpuAugment
from datamodules.settings import DataSettings
from datamodules.synthetic import ensure_generated
from visionlab.errors import DataError

#: the settings model of a SplitDataModule subclass
S = TypeVar("S", bound=DataSettings)


def resolve_num_workers(value: int | str) -> int:
    """`auto` = one worker per core but one, at most 16; an integer (checked by the settings) as given."""
    if value == "auto":
        return max(0, min(16, (os.cpu_count() or 1) - 1))
    return int(value)


def resolve_pin_memory(value: bool | str) -> bool:
    """`auto` = pin host memory only when a CUDA device will receive the batches."""
    return torch.cuda.is_available() if value == "auto" else bool(value)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    pin_memory: bool,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader whose order and augmentation follow from (global seed, epoch) alone, with
    persistent workers and prefetching when workers are used."""
    augment = getattr(dataset, "augment", None)
    per_sample_seeds = augment is not None and hasattr(augment, "reseed")
    sampler = EpochSampler(len(dataset), shuffle, torch.initial_seed(), per_sample_seeds)
    extra: dict[str, Any] = {"persistent_workers": True, "prefetch_factor": 4} if num_workers > 0 else {}
    return DataLoader(
        SeededSamples(dataset) if per_sample_seeds else dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        **extra,
    )


class EpochSampler(Sampler):
    """The indices of one epoch, a permutation seeded by (seed, epoch) when shuffling; with
    `per_sample_seeds` each index comes with a seed for that sample's augmentation. The data stream is
    then a pure function of (seed, epoch): the same with any number of workers, and again after a
    resume. Lightning calls `set_epoch` before every epoch; without it the epoch counts iterations."""

    def __init__(self, length: int, shuffle: bool, seed: int, per_sample_seeds: bool = False) -> None:
        self.length, self.shuffle, self.seed, self.per_sample_seeds = length, shuffle, seed, per_sample_seeds
        self.epoch = 0
        self._epoch_set = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._epoch_set = epoch, True

    def __len__(self) -> int:
        return self.length

    def epoch_order(self) -> tuple[torch.Tensor, torch.Generator]:
        """This epoch's index order (and the generator, positioned to draw the sample seeds next);
        advances the epoch when Lightning does not call `set_epoch`."""
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**63)
        order = (
            torch.randperm(self.length, generator=generator) if self.shuffle else torch.arange(self.length)
        )
        if not self._epoch_set:
            self.epoch += 1
        return order, generator

    def __iter__(self) -> Iterator[int | tuple[int, int]]:
        order, generator = self.epoch_order()
        if not self.per_sample_seeds:
            return iter(order.tolist())
        seeds = torch.randint(0, 2**31 - 1, (self.length,), generator=generator)
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))


class DeviceBatches:
    """Batches cut from tensors that already sit on the training device: the whole data set is
    resident (`data.device_resident`, for MNIST-size data), so a batch is one gather on the device,
    with no loader workers, collation or host-to-device copy. The order is `EpochSampler`'s, so the
    batches equal those of `make_loader` for the same seed. Under DDP the order is padded (repeating its
    start) to a multiple of world_size and each rank takes every world_size-th sample, as
    `DistributedSampler` shards it: every rank gets the same number of batches, so none waits forever
    in a collective that the others never reach.
    """

    def __init__(
        self,
        tensors: Sequence[torch.Tensor],
        batch_size: int,
        shuffle: bool,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.tensors, self.batch_size, self.drop_last = list(tensors), batch_size, drop_last
        self.rank, self.world_size = rank, world_size
        #: Lightning calls `sampler.set_epoch` before every epoch and inspects these, as for a DataLoader
        self.sampler = EpochSampler(len(self.tensors[0]), shuffle, torch.initial_seed())
        self.batch_sampler = None

    def _rank_length(self) -> int:
        return -(-self.sampler.length // self.world_size)

    def __len__(self) -> int:
        n = self._rank_length()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        order, _ = self.sampler.epoch_order()
        padding = self._rank_length() * self.world_size - len(order)
        if padding:
            order = torch.cat([order, order.repeat(-(-padding // len(order)))[:padding]])
        order = order[self.rank :: self.world_size].to(self.tensors[0].device, non_blocking=True)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            rows = order[start : start + self.batch_size]
            yield [t[rows] for t in self.tensors]


class SeededSamples(Dataset):
    """Wraps a dataset with a `SeededAugment`: item (index, seed) reseeds the augmentation, then reads."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        self.dataset.augment.reseed(seed)
        return self.dataset[index]


def decode_all(
    items: Sequence[Any], load: Callable[[Any], np.ndarray], threads: int | None = None
) -> np.ndarray:
    """Decode every item with `load` (in threads: PIL releases the GIL) straight into one preallocated
    uint8 array, so the peak memory is the cache itself (stacking a list of copies doubled it)."""
    if not len(items):
        return np.zeros((0,), dtype=np.uint8)
    first = load(items[0])
    out = np.empty((len(items), *first.shape), dtype=first.dtype)
    out[0] = first

    def fill(index: int) -> None:
        array = load(items[index])
        if array.shape != first.shape:
            raise ValueError(f"item {index} decodes to shape {array.shape}, item 0 to {first.shape}")
        out[index] = array

    threads = threads or max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fill, range(1, len(items))))
    return out


#: `data.cache_images: auto` keeps a split's decoded images in memory when they take at most this share
#: of the memory available when the split is loaded (2 GiB when the available memory cannot be read)
AUTO_CACHE_SHARE = 0.25
AUTO_CACHE_FALLBACK_BYTES = 2 * 1024**3


def available_memory_bytes() -> int | None:
    """The memory the OS can still give this process (Linux MemAvailable, else free physical pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def keep_decoded(cache: bool | str, count: int, bytes_each: int) -> bool:
    """Whether to decode `count` items of `bytes_each` bytes into memory once: `cache` when it is a
    bool; for `auto`, when they fit in AUTO_CACHE_SHARE of the available memory (decoding on access
    keeps memory flat however large the set, at the cost of decoding every epoch)."""
    if cache != "auto":
        return bool(cache) and count > 0
    available = available_memory_bytes()
    budget = AUTO_CACHE_FALLBACK_BYTES if available is None else AUTO_CACHE_SHARE * available
    return 0 < count * bytes_each <= budget


def readable_items(
    items: Sequence[Any], load: Callable[[Any], Any], key: str = "data.on_bad_file", unit: str = "file"
) -> list[int]:
    """Positions of the items `load` can read (it raises `DataError` otherwise); the others are skipped
    with one warning that counts them and names the first (`data.on_bad_file=skip`, for data sets with a
    few broken files). `unit` names what an item is in that warning, e.g. "image/mask pair"."""
    threads = max(1, min(8, os.cpu_count() or 1))

    def ok(item: Any) -> str | None:
        try:
            load(item)
            return None
        except DataError as err:
            return str(err)

    with ThreadPoolExecutor(threads) as pool:
        errors = list(pool.map(ok, items))
    bad = [e for e in errors if e is not None]
    if bad:
        warnings.warn(
            f"{key}=skip: skipped {len(bad)} unreadable {unit}(s) of {len(items)}; first: {bad[0]}",
            stacklevel=2,
        )
    return [i for i, e in enumerate(errors) if e is None]


class SplitDataModule(pl.LightningDataModule, Generic[S]):
    """A DataModule built from `data.*` (parsed into its `settings_class`, so a wrong key or value is
    one ConfigError line before anything is read) whose `setup()` fills `self.datasets` with
    train/val/test; it provides the loaders (train shuffled, dropping a last partial batch when there
    is more than one). An empty train or test split is an error; an empty val split just means no
    validation."""

    #: the typed `data.*` settings this DataModule takes: the `SplitDataModule[<Settings>]` parameter
    settings_class: ClassVar[type[DataSettings]] = DataSettings
    settings: S
    datasets: dict[str, Dataset]
    #: batched augmentation on the training device (`data.gpu_augment`), None = none
    gpu_augment: GpuAugment | None = None
    #: the embedded set's generator (`datamodules.synthetic`), called with `data.synthetic` by
    #: `prepare_data` when `data.root` is null, into `synthetic_root`; None = no embedded set
    generate: ClassVar[Callable[..., Any] | None] = None
    #: where the embedded set lies under `data_dir` (subclasses set it in `configure`)
    synthetic_root: Path

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            found = [a for a in get_args(base) if isinstance(a, type) and issubclass(a, DataSettings)]
            if found:
                cls.settings_class = found[0]

    def __init__(self, data_dir: str, root: str | None = None, **settings: Any) -> None:
        super().__init__()
        self.settings = cast(S, self.settings_class.parse({"root": root, **settings}))
        self.data_dir = Path(data_dir)
        #: `data.root` as a path; None = the embedded set generated under `data_dir`
        self.root = Path(self.settings.root).expanduser() if self.settings.root else None
        self.batch_size = self.settings.batch_size
        self.num_workers = resolve_num_workers(self.settings.num_workers)
        self.pin_memory = resolve_pin_memory(self.settings.pin_memory)
        self.skip_bad_files = self.settings.skip_bad_files
        self.synthetic = dict(self.settings.synthetic or {})
        self.datasets = {}
        self.configure()

    def configure(self) -> None:
        """The format's own state from `self.settings` (augmentation pipelines, the embedded set's
        folder, split settings), made once at construction; subclasses override."""

    @property
    def resolved_root(self) -> Path:
        """The folder the data is read from: `data.root`, or the embedded set's folder."""
        return (self.root if self.root is not None else self.synthetic_root).resolve()

    def prepare_data(self) -> None:
        """Generate the embedded set on first use (a real `data.root` is only read, in `setup`)."""
        if self.root is None and self.generate is not None:
            ensure_generated(self.resolved_root, self.generate, **self.synthetic)

    def gpu_augment_batch(self, batch: Any, epoch: int) -> Any:
        """Apply `gpu_augment` to a training batch already on the device. Default layout: images
        first, the rest (labels) unchanged; datamodules with keypoints or masks override."""
        assert self.gpu_augment is not None
        images = self.gpu_augment(batch[0], epoch=epoch)[0]
        return type(batch)([images, *batch[1:]])

    def loader(self, split: str, shuffle: bool = False) -> DataLoader:
        """The DataLoader of `split`; an empty train/test split is a DataError naming it."""
        dataset = self.checked_dataset(split)
        drop_last = shuffle and len(dataset) > self.batch_size
        return make_loader(dataset, self.batch_size, shuffle, self.num_workers, self.pin_memory, drop_last)

    def checked_dataset(self, split: str) -> Dataset:
        """The dataset of `split`; an empty train/test split is a DataError naming it."""
        dataset = self.datasets[split]
        if not len(dataset) and split != "val":
            raise DataError(f"{self.describe()}: the {split} split is empty; {self.empty_split_hint}")
        return dataset

    def describe(self) -> str:
        """Where the data comes from, for error messages."""
        return str(self.resolved_root)

    #: what to do about an empty split, appended to the error
    empty_split_hint: str = "check the split settings in data.*"

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")
