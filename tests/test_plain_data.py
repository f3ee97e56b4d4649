"""The training loop's batched data path (cdn.data.fast_batch) gives, for a seed, exactly the batches
of the plain per-image DataLoader (cdn.experiments.per_image_loader)."""
import torch

from cdn.data import epoch_permutation, fast_batch, make_synthetic
from cdn.experiments.per_image_loader import plain_loader


def test_fast_batches_equal_the_plain_per_image_batches():
    data = make_synthetic("train", size=12, n=96)
    perm = epoch_permutation(len(data), 0, seed=5)
    batches = [perm[i * 16:(i + 1) * 16] for i in range(len(data) // 16)]
    g_fast, g_plain = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    plain = list(plain_loader(data, batches, g_plain))
    assert len(plain) == len(batches)
    flipped = 0
    for index, (xp, cp) in zip(batches, plain):
        xf, cf = fast_batch(data.images, data.labels, index, g_fast)
        assert torch.equal(xf, xp) and torch.equal(cf, cp)
        flipped += int((xf != data.to_float(index)).flatten(1).any(1).sum())
    assert flipped > 0  # the batches were augmented, not passed through


def test_without_padding_the_plain_path_only_flips():
    data = make_synthetic("train", size=8, n=8)
    index = torch.arange(8)
    (x, c), = list(plain_loader(data, [index], torch.Generator().manual_seed(0), pad=0))
    g = torch.Generator().manual_seed(0)
    flip = torch.rand(8, generator=g) < 0.5
    clean = data.to_float(index)
    torch.testing.assert_close(x, torch.where(flip[:, None, None, None], clean.flip(3), clean))
