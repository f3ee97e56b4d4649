"""GradResNet: a ResNet-18 whose input gradient is a good denoiser (the paper; chapter "GradResNet as
a UNet"). From the paper: GELU instead of ReLU, GroupNorm without additive shift instead of
BatchNorm, no bias anywhere, side connections from every stage into the final features, noise-blind
unless ``noise_conditioning=True``. The paper's block layout and head are not available to us; the
variants below are the candidates chapter 10 measures, each a combination of switches of the one
builder ``cdn.nets.resnet.ResNet`` (its docstring gives every formula):

* ``preact``: pre-activation blocks, shift-free GroupNorm inside the branches, the stream kept
  un-normalised (so ``f(a y) != f(y)``), summed side connections;
* ``preact8``: the same with groups of 8 channels in its GroupNorms (``gcd(C, 32)`` groups, as in
  ``preact``, make one channel per group at width 16: an InstanceNorm); ``preactln`` with one group
  per layer (a shift-free LayerNorm);
* ``homog``: the layout of the authors' group's later GradResNet: post-activation blocks with a
  scale-preserving GroupNorm after the residual sum (``N(a h) = a N(h)``), stem = conv + GELU,
  concatenated side connections; its features are (nearly) homogeneous of degree 1 in ``y``;

and the heads ``linear`` (the literal classifier), ``logenergy`` (linear plus
``-(d/2) log mean(R(y)^2)``, our addition), ``quadratic`` (linear minus ``s mean(phi^2)/2``, the later
network's energy) and ``logquad`` (linear minus ``(d/2) log mean(phi^2)``).

``VARIANTS`` names each measured combination. The architecture ``gradresnet`` is the first default,
chosen in chapter 10 by 300-step probes, and ``gradresnet-relu | -batchnorm | -noside | -nologenergy``
are one-switch ablations of it. Its denoiser turned out to be its one-convolution log-energy alone (a
shortcut), so the joint *model* ``gradresnet`` is now built on ``gradresnet-stage1energy``, the same
network whose log-energy comes from the first stage's feature map (``cdn.profiles.JOINT_ARCH``, chosen
at ten epochs by ``cdn.experiments.joint_search``); the architecture keeps its name so its runs keep their hashes."""
from __future__ import annotations

from .resnet import ResNet

PREACT = dict(block="preact", norm="group", side_connections="sum")
HOMOG = dict(block="postact", norm="homog", side_connections="concat")

#: name -> switches of ``ResNet`` (activation GELU and no bias for all)
VARIANTS: dict[str, dict] = {
    "gradresnet-preact-logenergy": dict(PREACT, head="logenergy"),
    "gradresnet-preact-linear": dict(PREACT, head="linear"),
    "gradresnet-preact-quadratic": dict(PREACT, head="quadratic"),
    "gradresnet-preact8-logenergy": dict(PREACT, norm="group8", head="logenergy"),
    "gradresnet-preactln-logenergy": dict(PREACT, norm="layer", head="logenergy"),
    "gradresnet-homog-linear": dict(HOMOG, head="linear"),
    "gradresnet-homog-quadratic": dict(HOMOG, head="quadratic"),
    "gradresnet-homog-logquad": dict(HOMOG, head="logquad"),
    "gradresnet-homog-logenergy": dict(HOMOG, head="logenergy"),
}
#: the variant that ``gradresnet`` names, chosen by the rule of chapter 10 ("Choosing the default"):
#: equal to ``gradresnet-preact-logenergy`` on CIFAR-10 within one seed's noise, twice its accuracy at
#: 64x64 (results/architecture-quick.json)
DEFAULT_VARIANT = "gradresnet-preact8-logenergy"
VARIANTS["gradresnet"] = VARIANTS[DEFAULT_VARIANT]
# one-switch ablations of the default
VARIANTS["gradresnet-relu"] = dict(VARIANTS["gradresnet"], activation="relu")
VARIANTS["gradresnet-batchnorm"] = dict(VARIANTS["gradresnet"], norm="batch")
VARIANTS["gradresnet-noside"] = dict(VARIANTS["gradresnet"], side_connections="none")
VARIANTS["gradresnet-nologenergy"] = dict(VARIANTS["gradresnet"], head="linear")
# the log-energy built from the network's own feature maps instead of one 3x3 convolution of y, so that
# its gradient (the denoiser's 1/sigma^2 scale) passes through the classifier's features
VARIANTS["gradresnet-stage1energy"] = dict(VARIANTS["gradresnet"], head="stage1energy")
VARIANTS["gradresnet-stagesenergy"] = dict(VARIANTS["gradresnet"], head="stagesenergy")
# ... and from the last stage's map, the one the class read-out pools: the energy and the logits share features
VARIANTS["gradresnet-stage4energy"] = dict(VARIANTS["gradresnet"], head="stage4energy")


class GradResNet(ResNet):
    """``GradResNet(num_classes, in_channels=3, width=64, noise_conditioning=False, variant='gradresnet',
    **switches)``: the ``ResNet`` of ``VARIANTS[variant]`` with GELU and no bias; keyword ``switches``
    (``block``, ``norm``, ``side_connections``, ``head``, ``activation``) override the variant's."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64,
                 noise_conditioning: bool = False, variant: str = "gradresnet", **switches):
        if variant not in VARIANTS:
            raise ValueError(f"unknown GradResNet variant {variant!r}; expected one of {', '.join(VARIANTS)}")
        kwargs = {"activation": "gelu", **VARIANTS[variant]}
        kwargs.update(switches)
        if kwargs["norm"] == "batch":
            noise_conditioning = False
        super().__init__(num_classes, in_channels, width, bias=False, noise_conditioning=noise_conditioning, **kwargs)
        self.variant = variant
