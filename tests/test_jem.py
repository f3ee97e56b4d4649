"""JEM baseline (cdn.experiments.jem): SGLD moves toward lower energy, the replay buffer re-initialises
about 5% of chains, an update changes the weights, a checkpoint round-trips, bad input is refused."""
import math

import pytest
import torch

from cdn.experiments.jem import JEMTrainer, ReplayBuffer, energy, sgld
from cdn.joint import JointModel
from cdn.nets import build_net
from cdn.profiles import get_config


def _model(seed=0):
    torch.manual_seed(seed)
    return JointModel(build_net("gradresnet", 4, 3, 4)).eval()


def test_sgld_without_noise_lowers_the_energy():
    model = _model()
    x0 = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    # a small step: gradient descent on E lowers it. JEM's step of 1 overshoots on this untrained
    # GradResNet (its log-energy term makes the energy steep), so a step that is small for this net
    xk = sgld(model, x0, steps=20, step_size=1e-3, noise=0.0)
    with torch.no_grad():
        before, after = energy(model, x0), energy(model, xk)
    assert after.mean() < before.mean()
    assert (after < before).all()


def test_sgld_with_jem_noise_lowers_the_energy_on_average():
    model = _model()
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(16, 3, 8, 8, generator=g) * 2 - 1
    xk = sgld(model, x0, steps=20, step_size=1e-3, noise=0.01, generator=g)
    with torch.no_grad():
        assert energy(model, xk).mean() < energy(model, x0).mean()


def test_sgld_is_the_stated_update():
    model = _model()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    x0 = torch.rand(2, 3, 8, 8) * 2 - 1
    x1 = sgld(model, x0, steps=1, step_size=0.7, noise=0.01, generator=g1)
    xr = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(energy(model, xr).sum(), xr)
    expected = x0 - 0.7 * g + 0.01 * torch.randn(x0.shape, generator=g2)
    torch.testing.assert_close(x1, expected, atol=1e-5, rtol=1e-5)


def test_buffer_reinitialises_about_five_percent():
    buf = ReplayBuffer.uniform(100, (1, 2, 2), torch.Generator().manual_seed(0))
    assert buf.samples.min() >= -1 and buf.samples.max() <= 1
    n = 20_000
    x0, index, reinit = buf.draw(n, 0.05, torch.Generator().manual_seed(1))
    p = 0.05
    assert abs(reinit.float().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n)
    kept = ~reinit
    torch.testing.assert_close(x0[kept], buf.samples[index[kept]])
    assert not torch.isclose(x0[reinit], buf.samples[index[reinit]]).all()


def test_buffer_store_writes_back():
    buf = ReplayBuffer.uniform(10, (1, 2, 2))
    idx = torch.tensor([3, 7])
    buf.store(idx, torch.zeros(2, 1, 2, 2))
    assert (buf.samples[idx] == 0).all()
    with pytest.raises(ValueError, match="shape"):
        buf.store(idx, torch.zeros(2, 3, 2, 2))


def _trainer(tmp_k=2, **kw):
    config = get_config("smoke", "gradresnet", "synthetic", width=4)
    return JEMTrainer(config, 4, (3, 8, 8), k=tmp_k, buffer_size=32, **kw)


def test_step_changes_weights_and_buffer(tmp_path):
    tr = _trainer()
    before = {k: v.clone() for k, v in tr.net.state_dict().items()}
    buf_before = tr.buffer.samples.clone()
    x, c = torch.rand(6, 3, 8, 8), torch.randint(0, 4, (6,))
    terms = tr.step(x, c)
    assert set(terms) == {"ce", "energy_data", "energy_sample", "loss", "acc"}
    assert math.isclose(terms["loss"], terms["ce"] + terms["energy_data"] - terms["energy_sample"], rel_tol=1e-4, abs_tol=1e-5)
    changed = [k for k, v in tr.net.state_dict().items() if not torch.equal(v, before[k])]
    assert changed
    assert (tr.buffer.samples != buf_before).any(dim=(1, 2, 3)).sum() >= 1
    # checkpoint round trip: a fresh trainer loaded from it continues exactly as the original does
    tr.save(tmp_path)
    other = _trainer()
    assert other.load(tmp_path) == 1
    torch.testing.assert_close(other.buffer.samples, tr.buffer.samples)
    a, b = tr.step(x, c), other.step(x, c)
    assert a == b


def test_bad_input_is_refused():
    tr = _trainer()
    with pytest.raises(ValueError, match="shape"):
        tr.step(torch.rand(2, 3, 4, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="c must"):
        tr.step(torch.rand(2, 3, 8, 8), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        tr.step(torch.full((2, 3, 8, 8), float("nan")), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="k"):
        _trainer(tmp_k=0)
    with pytest.raises(ValueError, match="steps"):
        sgld(_model(), torch.rand(1, 3, 8, 8), steps=-1)
    with pytest.raises(ValueError, match="reinit_freq"):
        ReplayBuffer.uniform(4, (1, 2, 2)).draw(2, 1.5)
    with pytest.raises(ValueError, match="buffer size"):
        ReplayBuffer.uniform(0, (1, 2, 2))
