"""LocoProp: layer-wise locally constructed problems, as a PyTorch optimizer, and what it is built on.

- `transfer`, `chain`, `losses`: the shared primitives (transfer-function records, the layer
  chain of an `nn.Sequential`, the benchmark's output losses) that K-FAC, FOOF and DTP use too;
- `rmsprop_tf1`, `adagrad_tf1`, `adam_tf1`: the official code's optimizers, in TensorFlow 1
  semantics (LocoProp's default inner optimizer is `RMSpropTF1`), on the step of `tf1_step`;
- `optimizer`: the `LocoProp` optimizer.
"""
from .adagrad_tf1 import AdagradTF1
from .adam_tf1 import AdamTF1
from .chain import forward_record, linear_chain
from .optimizer import LocoProp
from .rmsprop_tf1 import RMSpropTF1
from .transfer import matching_grad, matching_loss

__all__ = ["LocoProp", "RMSpropTF1", "AdagradTF1", "AdamTF1", "matching_loss", "matching_grad", "linear_chain",
           "forward_record"]
