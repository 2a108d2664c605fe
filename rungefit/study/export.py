"""Files for other tools: one member of a run, or the mean of several (EnsembleMean), as
torch.export (pt2), ONNX or safetensors bytes.

Each format starts from the member's plain torch.nn.Sequential (sequential.to_sequential), or a module
averaging such Sequentials, so what a file computes is what that module computes. pt2 and ONNX take a batch of any size, [batch, 1] in
and [batch, 1] out, in the run's dtype; safetensors holds nn.Sequential's state_dict and, as
metadata, everything needed to rebuild the network without torch. torch.onnx and safetensors are
imported inside the functions that need them.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from rungefit._version import __version__
from rungefit.config import format_layers
from rungefit.errors import RungefitError
from rungefit.net.sequential import EnsembleMean, Float64Affine, sequential_layers

# What `pip install` needs for --format onnx: torch.onnx's exporter imports onnx and onnxscript.
ONNX_EXTRA = "rungefit[onnx]"
# The example batch traced by torch.export: larger than 1, which torch.export would specialise.
EXAMPLE_BATCH = 8


def metadata(network: torch.nn.Module, target: str, domain: tuple[float, float], run: str, member: int | list[int]) -> dict[str, str]:
    """What every exported file records beside the weights, as strings (safetensors' metadata type).
    For an EnsembleMean, `member` lists the members averaged."""
    ensemble = isinstance(network, EnsembleMean)
    layers = sequential_layers(_one_member(network))
    return {
        "format": "rungefit-ensemble-mean" if ensemble else "rungefit-member",
        "layers": format_layers(layers),
        "activations": ",".join(layer.activation for layer in layers),
        "output": "linear",
        "dtype": str(next(network.parameters()).dtype).removeprefix("torch."),
        "io_dtype": str(_io_dtype(network)).removeprefix("torch."),
        "target": target,
        "domain": json.dumps(list(domain)),
        "run": run,
        **({"members": ",".join(map(str, member))} if ensemble else {"member": str(member)}),
        "rungefit_version": __version__,
    }


def export_bytes(network: torch.nn.Module, file_format: str, meta: dict[str, str]) -> bytes:
    """The file's contents for `file_format`, one of config.EXPORT_FORMATS."""
    exporters = {"pt2": pt2_bytes, "onnx": onnx_bytes, "safetensors": safetensors_bytes}
    return exporters[file_format](network, meta)


def _one_member(network: torch.nn.Module) -> torch.nn.Sequential:
    """The member's Sequential, or an ensemble's first (they all have the same layers)."""
    return network.members[0] if isinstance(network, EnsembleMean) else network


def _io_dtype(network: torch.nn.Module) -> torch.dtype:
    """The dtype the network takes and returns: float64 where its maps are float64 modules."""
    return torch.float64 if isinstance(_one_member(network)[0], Float64Affine) else next(network.parameters()).dtype


def _example_input(network: torch.nn.Module) -> torch.Tensor:
    return torch.linspace(-1, 1, EXAMPLE_BATCH, dtype=_io_dtype(network)).unsqueeze(1)


def _dynamic_batch() -> tuple[dict[int, object]]:
    """dynamic_shapes for the single input: dimension 0 is the batch, of any size."""
    return ({0: torch.export.Dim("batch")},)


def pt2_bytes(network: torch.nn.Module, meta: dict[str, str]) -> bytes:
    """torch.export's archive, loadable with torch.export.load alone; meta as its extra file rungefit.json."""
    program = torch.export.export(network, (_example_input(network),), dynamic_shapes=_dynamic_batch())
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={"rungefit.json": json.dumps(meta)})
    return buffer.getvalue()


def onnx_bytes(network: torch.nn.Module, meta: dict[str, str]) -> bytes:
    """An ONNX model with input "x" and output "y", both [batch, 1]; meta as its metadata_props."""
    try:
        import onnx
        import onnxscript  # noqa: F401 — torch.onnx's exporter needs it; fail here with the fix
    except ImportError as error:
        raise RungefitError(f"--format onnx needs the {error.name} package: pip install \"{ONNX_EXTRA}\"") from None
    with _quiet_exporter():
        program = torch.onnx.export(
            network, (_example_input(network),), input_names=["x"], output_names=["y"],
            dynamic_shapes=_dynamic_batch(), dynamo=True, verbose=False,
        )
    proto = program.model_proto
    onnx.helper.set_model_props(proto, meta)
    return proto.SerializeToString()


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence what torch.onnx logs and warns about its own internals (optional torchvision
    operators, deprecations inside torch), which the user cannot act on; the core never prints."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def safetensors_bytes(network: torch.nn.Module, meta: dict[str, str]) -> bytes:
    """The module's state_dict ("0.weight", "0.bias", "2.weight", …; an EnsembleMean's under
    "members.I.") with meta as metadata."""
    from safetensors.torch import save

    return save({key: value.contiguous() for key, value in network.state_dict().items()}, metadata=meta)
