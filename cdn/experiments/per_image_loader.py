"""The plain data path, per image in Python through a torch ``Dataset`` and ``DataLoader``: the
reference that the training loop's batched path (``cdn.data.fast_batch``) is tested against and
timed against (chapter "Efficiency").

A batch sampler draws, batch by batch and in the same order as ``cdn.data.augment``, the crop
offsets ``dy``, ``dx`` (uniform on ``0 .. 2 pad``) and the flip coin of every image from the same
generator, and hands ``(index, dy, dx, flip)`` to the dataset, which pads, crops and flips one image
at a time. For the same generator state the two paths give the same batches, bit for bit.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data import ImageDataset


class PerImageAugmented(Dataset):
    """``dataset[(i, dy, dx, flip)]`` = image ``i`` in [0, 1], reflect-padded by ``pad``, cropped at
    ``(dy, dx)`` and flipped horizontally when ``flip``, with its label."""

    def __init__(self, data: ImageDataset, pad: int = 4):
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self.data, self.pad = data, pad

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int, int, bool]) -> tuple[torch.Tensor, torch.Tensor]:
        i, dy, dx, flip = key
        x = self.data.images[i].float().div_(255)
        h, w = x.shape[1:]
        if self.pad > 0:
            x = torch.nn.functional.pad(x[None], (self.pad,) * 4, mode="reflect")[0]
            x = x[:, dy:dy + h, dx:dx + w]
        if flip:
            x = x.flip(2)
        return x, self.data.labels[i]


class AugmentationBatchSampler(Sampler):
    """Yields, for each batch of ``indices`` (a list of index tensors), the list of
    ``(i, dy, dx, flip)`` with the random draws of ``cdn.data.augment`` taken from ``generator``."""

    def __init__(self, batches: list[torch.Tensor], generator: torch.Generator, pad: int = 4):
        self.batches, self.generator, self.pad = batches, generator, pad

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int, int, bool]]]:
        for index in self.batches:
            b = len(index)
            dy = dx = torch.zeros(b, dtype=torch.long)
            if self.pad > 0:
                dy = torch.randint(0, 2 * self.pad + 1, (b,), generator=self.generator)
                dx = torch.randint(0, 2 * self.pad + 1, (b,), generator=self.generator)
            flip = torch.rand(b, generator=self.generator) < 0.5
            yield [(int(i), int(y), int(x), bool(f)) for i, y, x, f in zip(index, dy, dx, flip)]


def plain_loader(data: ImageDataset, batches: list[torch.Tensor], generator: torch.Generator,
                 pad: int = 4, num_workers: int = 0) -> DataLoader:
    """A ``DataLoader`` over ``batches`` (lists of image indices) doing per-image crop and flip."""
    return DataLoader(PerImageAugmented(data, pad), batch_sampler=AugmentationBatchSampler(batches, generator, pad),
                      num_workers=num_workers)
