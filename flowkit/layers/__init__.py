"""The layer catalogue, one family per module: couplings, mixings, normalizations, reshapes."""

from .actnorm import ActNorm
from .conv1x1 import InvConv1x1
from .coupling import AdditiveCoupling, AffineCoupling, SubnetConstructor
from .cross_scale import CouplingHalf, CrossConvolutions, CrossScaleBlock, CrossScaleCoupling
from .elementwise import ElementwiseAffine, Logit
from .mlp import MLPSubnet
from .permute import Permute, Reverse
from .pyramid import LaplacianPyramid
from .pyramid_coupling import PyramidCoupling, PyramidCouplingKind
from .revnet import RevNetBlock
from .spline import RQSpline, RQSplineCoupling
from .squeeze import HaarDownsample, Squeeze
from .subnet import ConvSubnet
from .volume_norm import VolumeNorm, VolumeNormMode

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "ConvSubnet",
    "CouplingHalf",
    "CrossConvolutions",
    "CrossScaleBlock",
    "CrossScaleCoupling",
    "ElementwiseAffine",
    "HaarDownsample",
    "InvConv1x1",
    "LaplacianPyramid",
    "Logit",
    "MLPSubnet",
    "Permute",
    "PyramidCoupling",
    "PyramidCouplingKind",
    "RQSpline",
    "RQSplineCoupling",
    "RevNetBlock",
    "Reverse",
    "Squeeze",
    "SubnetConstructor",
    "VolumeNorm",
    "VolumeNormMode",
]
