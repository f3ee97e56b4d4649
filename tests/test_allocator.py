"""``cdn.train.tune_allocator``: the page faults it stops and the numbers it leaves alone. Outside the kernel-dependent
tests of ``make test-numerics``: it compares two processes of one environment."""
import pytest


_FAULTS_SCRIPT = """
import ctypes, ctypes.util, resource, sys, torch
from cdn.train import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, tune_allocator
# both processes start from glibc's starting thresholds (128 KiB), held fixed: left to itself glibc's adaptive
# threshold lands in either regime; so a tune_allocator that did nothing would fault as the baseline does
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
assert libc.mallopt(M_MMAP_THRESHOLD, 128 << 10) and libc.mallopt(M_TRIM_THRESHOLD, 128 << 10)
if sys.argv[1] == "tuned":
    print(tune_allocator())
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():  # six 8 MiB activations alive at once, then freed, as a training step does
    held = [torch.ones(1 << 21) for _ in range(6)]
    return sum(float(t[0]) for t in held)
step(), step()
before = faults()
for _ in range(5):
    step()
steps_faults = (faults() - before) / 5
# a few joint training steps with activations above glibc's first mmap threshold: their losses, bit for bit
from cdn.joint import JointModel
from cdn.losses import JointLoss
from cdn.nets import build_net
from cdn.train import train_step
torch.manual_seed(0)
net = build_net("gradresnet", 10, 3, 4)
opt = torch.optim.AdamW(net.parameters(), 1e-3)
x, c, gen = torch.rand(16, 3, 32, 32), torch.randint(0, 10, (16,)), torch.Generator().manual_seed(0)
for _ in range(6):
    print(float(train_step(JointModel(net), JointLoss(), opt, x, c, gen)[0]).hex())
print(steps_faults)
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tune_allocator_stops_the_page_faults_of_freed_activations():
    """With glibc's starting thresholds the freed 48 MiB go back to the system and every page faults in again
    (12,288 pages a step); with ``tune_allocator`` they stay in the process (a count of page faults, not a time: it
    does not depend on the load). Left to itself glibc moves its threshold as blocks are freed, and the same
    script measured 205 or 12,256 faults a step from one launch to the next, so the baseline holds the starting
    thresholds fixed in both processes: a ``tune_allocator`` that did nothing fails."""
    import subprocess
    import sys

    def run(mode):
        out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, mode], capture_output=True, text=True, check=True)
        return out.stdout.split("\n")[:-1]

    plain, tuned = run("plain"), run("tuned")
    assert len(plain) == 7 and plain[:-1] == tuned[1:-1]  # the same six training losses, bit for bit
    assert float(plain[-1]) > 6 * 2048 * 0.9  # six 8 MiB tensors of 4 KiB pages, faulted in again each step
    assert tuned[0] == "glibc mmap 32 MiB, trim 1024 MiB"
    assert float(tuned[-1]) < float(plain[-1]) / 10  # measured: 0 to 410 against 12,288
