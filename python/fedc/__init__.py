"""fedc: Python binding of the fedc client library (include/fedc/client.h).

    import fedc
    client = fedc.Client(coordinator="host:7070", ca="ca.crt", cert="client.crt", key="client.key",
                         trainer=my_trainer)
    client.run()

A trainer has train(weights, config) -> (weights_or_delta, num_examples, loss)
and optionally evaluate(weights) -> (accuracy, loss); weights are dicts of
float32 NumPy arrays named and shaped as the coordinator's model. See
fedc.client for the threading, error and Ctrl-C rules, fedc.pytorch for
nn.Module helpers.
"""
from .client import Client, Delta, Event, FedcError, ShapeError, abi_version, strerror  # noqa: F401
from . import safetensors  # noqa: F401

__all__ = ["Client", "Delta", "Event", "FedcError", "ShapeError", "abi_version", "strerror", "safetensors"]
__version__ = "0.1.0"
