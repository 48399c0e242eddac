"""Which head and which backbone a stream's state belongs to: identities that survive a restart.

A GRU state means something only to the weights that made it, fed by the
embeddings of the backbone it was made from. Both identities are computed
from content, never from a path, so a model file copied or renamed keeps its
identity and a retrained one, saved over the old path, does not.

* The head: the SHA-256 of its configuration (the JSON its checkpoint carries:
  classes, sizes, layers, backbone spec) and of every tensor of its weights
  (name, dtype, shape, bytes, in name order). Not the checkpoint file's bytes:
  a file whose other metadata changes (the event settings that
  ``tools.tune_events`` stores beside the weights) carries the same GRU, and
  its states stay valid.
* The backbone: its name, input size and embedding width (the spec the head
  was trained for), plus what fixes the function from frames to embeddings:
  the pretrained weights' SHA-256 and the export revision stamped into our
  ONNX graph (``engines/backbone.py``), so the PyTorch, ONNX Runtime and
  TensorRT backends, which all run that graph, share one identity. A graph
  without our stamp (a backbone of one's own) is identified by its file's
  SHA-256. Precision (FP16, INT8) is left out: it moves embeddings by rounding,
  not by meaning, and refusing a restore costs a warm-up while a wrong one
  costs nothing worse than that rounding.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from engines.spec import BackboneSpec, file_sha256
from pipeline.errors import ActionPipeError

if TYPE_CHECKING:
    from engines.temporal_head import TemporalHead

class IdentityError(ActionPipeError, ValueError):
    """A model whose identity cannot be read."""


# Identities are long; a log line shows this many hex digits of the digest (64 bits: no accidental clash).
_SHOWN_DIGITS = 16


def head_identity(head: TemporalHead) -> str:
    """``head-sha256:<hex>`` over the head's configuration and weights (see the module's doc)."""
    import torch

    digest = hashlib.sha256()
    digest.update(head.config.to_metadata()["head"].encode())
    for name, tensor in sorted(head.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"\0{name}\0{value.dtype}\0{tuple(value.shape)}\0".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"head-sha256:{digest.hexdigest()}"


def backbone_identity(spec: BackboneSpec, weights_sha256: str, export_revision: int | str) -> str:
    """The identity of our exported graph (any backend) of ``spec`` from weights with that digest."""
    return f"{_spec_part(spec)}/rev{export_revision}/weights-sha256:{weights_sha256}"


def backbone_identity_of_onnx(path: str | Path, spec: BackboneSpec) -> str:
    """The identity of the ONNX graph at ``path``: from our export's stamp, else from the file's bytes."""
    from engines.graph_metadata import read_graph_metadata

    try:
        stamp = read_graph_metadata(path)
        if "weights_sha256" in stamp and "export_revision" in stamp:
            return backbone_identity(spec, stamp["weights_sha256"], stamp["export_revision"])
        return f"{_spec_part(spec)}/onnx-sha256:{file_sha256(Path(path))}"
    except (OSError, ValueError) as exc:
        raise IdentityError(f"{path}: cannot identify the backbone: {exc}") from exc


def short(identity: str) -> str:
    """An identity as a log line shows it: the digest cut to 16 hex digits."""
    prefix, sep, digest = identity.rpartition(":")
    return f"{prefix}{sep}{digest[:_SHOWN_DIGITS]}" if sep else identity


def _spec_part(spec: BackboneSpec) -> str:
    # stats_dim is left out: a head takes the first stats_dim statistics of a graph that may make more.
    return f"{spec.name}/{spec.input_height}x{spec.input_width}/e{spec.embedding_dim}"
