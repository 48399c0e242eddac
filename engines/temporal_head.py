"""The temporal head: a MiniROAD-style GRU (Ahn et al., ICCV 2023) over frame embeddings.

    frame vector r_t = [ e_t | stats | log ||embedding|| ]
                       e_t: the L2-normalised embedding, or its first K principal
                       components (``embedding_components``)
    input x_t        = standardise([ r_t | r_t - r_{t-1} ])     (r_{-1} := r_0)
    scores           = softmax(classifier(GRU(ReLU(Linear(x_t)))))

The step-to-step change exposes *direction* (approach vs recede, enter vs
exit, lights on vs off), which a single frame cannot show. ``r_{t-1}`` is part
of a stream's state, next to the GRU hidden state, so stepping one frame at a
time with carried state computes exactly what running the whole sequence does.

``kind="frame_only"`` is the baseline: the same frame vector (no change term)
through a per-step MLP, with no recurrence and no state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from engines.head_config import CHECKPOINT_FORMAT, HEAD_KINDS, CheckpointError, HeadConfig  # noqa: F401  (re-exported)


def frame_vectors(embedding: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
    """[..., E], [..., L] -> [..., E + L + 1]: direction, brightness and magnitude of each frame."""
    norm = embedding.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    return torch.cat([embedding / norm, stats, norm.log()], dim=-1)


def principal_components(unit_embeddings: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean [E] and the first ``count`` principal directions [E, count] of [N, E] vectors.

    Deterministic (an eigendecomposition of the covariance, each direction's sign
    fixed so that its largest entry is positive), so a training run can be repeated."""
    x = unit_embeddings.to(torch.float64)
    mean = x.mean(dim=0)
    centred = x - mean
    covariance = centred.T @ centred / max(1, len(x) - 1)
    _, vectors = torch.linalg.eigh(covariance)
    basis = vectors[:, -count:].flip(dims=[1])
    signs = torch.sign(basis.gather(0, basis.abs().argmax(dim=0, keepdim=True)))
    return mean.to(torch.float32), (basis * signs).to(torch.float32)


@dataclass
class StreamState:
    """What a stream carries from one step to the next, batched over streams."""

    hidden: torch.Tensor  # [B, layers, hidden]
    previous: torch.Tensor  # [B, state_vector_dim]; r_{t-1} (then m_{t-1} with an EMA)
    has_previous: torch.Tensor  # [B] bool; False right after a START

    def select(self, rows: torch.Tensor) -> "StreamState":
        return StreamState(self.hidden[rows], self.previous[rows], self.has_previous[rows])


@dataclass
class SequenceOutput:
    logits: torch.Tensor  # [B, T, C]
    state: StreamState = field(repr=False)


class TemporalHead(nn.Module):
    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("input_mean", torch.zeros(config.input_dim))
        self.register_buffer("input_std", torch.ones(config.input_dim))
        if config.embedding_components:
            self.register_buffer("embedding_mean", torch.zeros(config.backbone.embedding_dim))
            self.register_buffer("embedding_basis", torch.zeros(config.backbone.embedding_dim, config.embedding_components))
        self.projection = nn.Sequential(
            # Dropping input features in training keeps the head from memorising a
            # scene's look through a few embedding dimensions.
            nn.Dropout(config.input_dropout),
            nn.Linear(config.input_dim, config.projection_dim),
            nn.LayerNorm(config.projection_dim),
            nn.ReLU(),
            nn.Dropout(config.dropout),
        )
        if config.kind == "gru":
            self.core: nn.Module = nn.GRU(
                config.projection_dim, config.hidden_size, num_layers=config.num_layers, batch_first=True
            )
        else:
            self.core = nn.Sequential(
                nn.Linear(config.projection_dim, config.hidden_size), nn.ReLU(), nn.Dropout(config.dropout)
            )
        self.classifier = nn.Linear(config.hidden_size, len(config.classes))

    # -- state ---------------------------------------------------------------
    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> StreamState:
        cfg = self.config
        return StreamState(
            hidden=torch.zeros(batch, cfg.num_layers, cfg.hidden_size, device=device),
            previous=torch.zeros(batch, cfg.state_vector_dim, device=device),
            has_previous=torch.zeros(batch, dtype=torch.bool, device=device),
        )

    # -- features ------------------------------------------------------------
    def frame_vectors(self, embedding: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        """[..., E], [..., L >= stats_dim] -> [..., frame_vector_dim]: the frame as this head sees it."""
        vectors = frame_vectors(embedding, stats[..., :self.config.backbone.stats_dim])
        if not self.config.embedding_components:
            return vectors
        width = self.config.backbone.embedding_dim
        components = (vectors[..., :width] - self.embedding_mean) @ self.embedding_basis
        return torch.cat([components, vectors[..., width:]], dim=-1)

    def inputs(self, vectors: torch.Tensor, state: StreamState) -> torch.Tensor:
        """[B, T, V] frame vectors -> [B, T, input_dim] standardised model inputs."""
        return self._inputs_and_carry(vectors, state)[0]

    def _inputs_and_carry(self, vectors: torch.Tensor, state: StreamState) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs, and the frame state to carry after the last step."""
        if self.config.kind != "gru":
            return (vectors - self.input_mean) / self.input_std, vectors[:, -1]
        width = self.config.frame_vector_dim
        has_prev = state.has_previous[:, None]
        first_prev = torch.where(has_prev, state.previous[:, :width], vectors[:, 0])
        previous = torch.cat([first_prev[:, None], vectors[:, :-1]], dim=1)
        parts = [vectors, vectors - previous]
        carry = vectors[:, -1]
        if self.config.uses_ema:
            decay = self.config.ema_decay
            average = torch.where(has_prev, state.previous[:, width:], vectors[:, 0])
            averages_before = []
            for t in range(vectors.shape[1]):
                averages_before.append(average)
                average = decay * average + (1.0 - decay) * vectors[:, t]
            parts.append(vectors - torch.stack(averages_before, dim=1))
            carry = torch.cat([carry, average], dim=-1)
        x = torch.cat(parts, dim=-1)
        return (x - self.input_mean) / self.input_std, carry

    # -- running -------------------------------------------------------------
    def forward_sequence(
        self, embedding: torch.Tensor, stats: torch.Tensor, state: StreamState | None = None
    ) -> SequenceOutput:
        """Run [B, T, E] / [B, T, L] from ``state`` (fresh streams if None)."""
        batch = embedding.shape[0]
        if state is None:
            state = self.initial_state(batch, embedding.device)
        # Stats come from the newest graph; a head uses the first stats_dim of them (engines/spec.py).
        vectors = self.frame_vectors(embedding, stats)
        x, carry = self._inputs_and_carry(vectors, state)
        hidden_seq = self.projection(x)
        if self.config.kind == "gru":
            out, h_n = self.core(hidden_seq, state.hidden.transpose(0, 1).contiguous())
            new_hidden = h_n.transpose(0, 1)
        else:
            out, new_hidden = self.core(hidden_seq), state.hidden
        new_state = StreamState(
            hidden=new_hidden,
            previous=carry,
            has_previous=torch.ones(batch, dtype=torch.bool, device=embedding.device),
        )
        return SequenceOutput(logits=self.classifier(out), state=new_state)

    @torch.inference_mode()
    def step(
        self, embedding: torch.Tensor, stats: torch.Tensor, state: StreamState
    ) -> tuple[torch.Tensor, StreamState]:
        """One step for B streams: [B, E], [B, L] -> probabilities [B, C] and their next state."""
        out = self.forward_sequence(embedding[:, None], stats[:, None], state)
        return out.logits[:, 0].softmax(dim=-1), out.state


def save_head(path: Path, head: TemporalHead, extra_metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    metadata = head.config.to_metadata()
    metadata.update(extra_metadata or {})
    tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)


def load_head(path: str | Path, device: str = "cpu") -> tuple[TemporalHead, dict[str, str]]:
    """Load a checkpoint without pickle; returns the head (eval mode) and its metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"head checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        tensors = load_file(str(path), device=device)
    except Exception as exc:  # safetensors raises several unrelated types for a bad file
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint: {exc}") from exc
    config = HeadConfig.from_metadata(metadata, str(path))
    head = TemporalHead(config)
    try:
        head.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match its metadata: {exc}") from exc
    return head.to(device).eval(), metadata
