"""LocoProp: layer-wise locally constructed problems, as a PyTorch optimizer."""
from .chain import forward_record, linear_chain
from .matching import matching_grad, matching_loss
from .optimizer import LocoProp

__all__ = ["LocoProp", "matching_loss", "matching_grad", "linear_chain", "forward_record"]
