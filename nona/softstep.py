"""SoftStep: learned attention masks on min-max normalised similarities (the NONA paper, Algorithm 1).

The mask functions work on normalised similarities ``x`` in [0, 1]:

* ``S1(x; a, b, t)`` is 0 up to the rejection threshold ``a``, 1 from ``b``
  on, and ``(x-a)^(1/t) / ((x-a)^(1/t) + (b-x)^(1/t))`` in between.
* ``S2(x; b, t)`` is ``(x/b)^((b-x) t/(1-t))`` below ``b`` and 1 from ``b`` on.
* ``lu`` is the SoftStep paper's SoftStep with transition bounds ``l < u``:
  the S1 curve with ``a = l`` and ``b = u``, where ``l`` is learned directly
  (not clipped below the best neighbour) because the rows are normalised over
  the valid neighbours only, so the nearest valid neighbour sits at ``x = 1``
  and is never rejected. See :class:`SoftStep`.

Everything is computed as a log-mask, because the module returns
``sim + log(mask)`` and a mask of 0 must become ``-inf`` without producing a
NaN gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

SOFTSTEP_FUNCTIONS = ("s1", "s2", "lu")
PARAM_MODES = ("global", "pointwise")
# Learned parameters per function: S1 (a0, b0, t), S2 (b0, t), lu (l, u0, t).
N_PARAMS = {"s1": 3, "s2": 2, "lu": 3}

# Keeps t strictly inside (0, 1): t/(1-t) and 1/t stay finite.
T_MARGIN = 1e-4


# Cached 0-dim tensors for the constants of the hot paths, one per (value, dtype, device).
_CONSTANTS: dict[tuple, Tensor] = {}


def constant(value: float, like: Tensor) -> Tensor:
    """``value`` as a cached 0-dim tensor of ``like``'s dtype and device.

    An operation given a Python float first converts it to a tensor of the
    other operand's dtype: one more kernel call, which makes e.g. ``x > 1e-19``
    on a 32 x 32 float32 matrix take 8.3 µs instead of 3.9 on a CPU. The
    converted value is the same, so the results are bit for bit the same.
    """
    key = (value, like.dtype, like.device)
    found = _CONSTANTS.get(key)
    if found is None:
        found = _CONSTANTS[key] = torch.tensor(value, dtype=like.dtype, device=like.device)
    return found


def _where_safe(cond: Tensor, value: Tensor, fill: float) -> Tensor:
    # Replaces entries outside ``cond`` before a log so that the discarded
    # branch of a later torch.where cannot put NaN into the gradient.
    return torch.where(cond, value, constant(fill, value))


def log_s1(x: Tensor, a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """log S1(x; a, b, t): -inf for x <= a, 0 for x >= b, log of the smooth step between."""
    inside = (x > a) & (x < b)
    above = _where_safe(inside, x - a, 1.0)
    below = _where_safe(inside, b - x, 1.0)
    # log S1 = -log(1 + ((b-x)/(x-a))^(1/t)) = -softplus((log(b-x) - log(x-a)) / t)
    transition = -nn.functional.softplus((below.log() - above.log()) / t)
    rejected = constant(float("-inf"), x)
    return torch.where(x <= a, rejected, torch.where(x >= b, constant(0.0, x), transition))


def _s2_floor(dtype: torch.dtype) -> float:
    # x is floored at sqrt(smallest normal number) (1e-19 in float32): the exact
    # S2(0) = 0 would reject the farthest neighbour of every row outright and
    # leave a row with a single valid neighbour without any finite weight, and a
    # lower floor lets b/x overflow in the backward pass.
    return torch.finfo(dtype).tiny ** 0.5


def _log_s2_terms(xs: Tensor, b: Tensor, t: Tensor, floor: float) -> tuple[Tensor, ...]:
    """log S2 on ``xs`` (already floored; clamped to b here, in place).

    Returns ``(xs, b_floored, rest, k, log(xs/b), value)`` with ``rest = 1 - t`` and ``k = t / rest``.
    """
    rest = torch.sub(constant(1.0, t), t)
    k = t / rest
    b_floored = b.clamp_min(floor)
    torch.minimum(xs, b_floored, out=xs)
    log_ratio = torch.div(xs, b_floored).log_()
    value = torch.addcmul(k * b_floored, xs, -k).mul_(log_ratio)
    return xs, b_floored, rest, k, log_ratio, value


def _s2_x_grad(grad: Tensor, xs: Tensor, b_floored: Tensor, k: Tensor, log_ratio: Tensor) -> Tensor:
    """Gradient of log S2 to x: ``k (b/x - 1 - log(x/b))``, 0 where x >= b (clamped to b) or at the floor."""
    grad_x = torch.div(b_floored, xs).sub_(log_ratio).sub_(constant(1.0, xs)).mul_(grad).mul_(k)
    return grad_x.mul_(xs > constant(_s2_floor(xs.dtype), xs))


def _s2_parameter_grads(
    needs, grad, xs, b, b_floored, rest, k, log_ratio, value
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of log S2 to b and t (``needs``: autograd's needs_input_grad, b and t at positions 1 and 2)."""
    grad_b = grad_t = None
    if needs[1]:
        # d/db = k (log(x/b) - 1 + x/b): exactly 0 where x >= b; none through b's floor.
        slope = torch.div(xs, b_floored).add_(log_ratio).sub_(constant(1.0, xs)).mul_(grad).sum_to_size(b.shape)
        grad_b = (slope * k).masked_fill_(b <= constant(_s2_floor(xs.dtype), b), 0.0)
    if needs[2]:
        # value = k (b - x) log(x/b), so d/dk = value / k, and dk/dt = 1 / (1 - t)^2 (rest = 1 - t).
        grad_t = (grad * value).sum_to_size(rest.shape) / (k * (rest * rest))
    return grad_b, grad_t


class _LogS2(torch.autograd.Function):
    """log S2 with a hand-written backward pass that stays finite for any b in [0, 1].

    Autograd through ``log(x / b)`` forms ``x / b^2``, which overflows once b
    saturates below about 1e-19 (a sigmoid of -44 in float32). Here x is
    clamped into ``[floor, b]`` (b itself floored like x), so that
    ``log(x / b)`` and ``b - x`` vanish where ``x >= b`` without a mask, and
    the derivatives only divide by the floored x and b.
    """

    @staticmethod
    def forward(ctx, x: Tensor, b: Tensor, t: Tensor) -> Tensor:
        floor = _s2_floor(x.dtype)
        xs, b_floored, rest, k, log_ratio, value = _log_s2_terms(x.clamp_min(floor), b, t, floor)
        ctx.save_for_backward(xs, b, b_floored, rest, k, log_ratio, value)
        return value

    @staticmethod
    def backward(ctx, grad: Tensor):
        xs, b, b_floored, rest, k, log_ratio, value = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = _s2_x_grad(grad, xs, b_floored, k, log_ratio).sum_to_size(xs.shape)
        grad_b, grad_t = _s2_parameter_grads(ctx.needs_input_grad, grad, xs, b, b_floored, rest, k, log_ratio, value)
        return grad_x, grad_b, grad_t


def log_s2(x: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """log S2(x; b, t): (b-x) t/(1-t) log(x/b) for x < b, 0 for x >= b.

    x and b are floored at sqrt(float tiny) (1e-19 in float32).
    """
    return _LogS2.apply(x, b, t)


def s1(x: Tensor, a: Tensor | float, b: Tensor | float, t: Tensor | float) -> Tensor:
    """The S1 SoftStep mask on [0, 1] with rejection threshold a, full-keep threshold b and transition t."""
    x, a, b, t = _as_tensors(x, a, b, t)
    return log_s1(x, a, b, t).exp()


def s2(x: Tensor, b: Tensor | float, t: Tensor | float) -> Tensor:
    """The S2 SoftStep mask on [0, 1] with full-keep threshold b and transition t."""
    x, b, t = _as_tensors(x, b, t)
    return log_s2(x, b, t).exp()


def _as_tensors(x: Tensor, *params: Tensor | float) -> tuple[Tensor, ...]:
    x = torch.as_tensor(x)
    return (x, *(torch.as_tensor(p, dtype=x.dtype, device=x.device) for p in params))


def minmax_normalise(sim: Tensor, self_index: Tensor | None = None) -> Tensor:
    """Row-wise min-max normalisation to [0, 1]; a flat row (max == min) maps to all ones.

    With ``self_index`` the minimum and maximum of row i skip its own column
    ``self_index[i]``, whose normalised value may then fall outside [0, 1].
    """
    if self_index is None:
        low = sim.amin(dim=1, keepdim=True)
        high = sim.amax(dim=1, keepdim=True)
    else:
        rows = torch.arange(sim.shape[0], device=sim.device)
        inf = torch.tensor(float("inf"), dtype=sim.dtype, device=sim.device)
        low = sim.index_put((rows, self_index), inf).amin(dim=1, keepdim=True)
        high = sim.index_put((rows, self_index), -inf).amax(dim=1, keepdim=True)
    span = high - low
    flat = span <= 0
    x = torch.sub(sim, low).div_(torch.where(flat, torch.ones_like(span), span))
    # A flat row has every neighbour equally near, hence all are "the nearest".
    return x.masked_fill_(flat, 1.0) if bool(flat.any()) else x


def _s2_split(p: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """S2's ``(b, t, t before its clamp)`` from the parameters ``p`` of :meth:`SoftStep.parameters_for`.

    The values :meth:`SoftStep.log_step` uses, without an autograd node for each slice and the clamp.
    """
    t_raw = p[:, -1:]
    return p[:, 0:1], t_raw.clamp(T_MARGIN, 1.0 - T_MARGIN), t_raw


def _s2_join_grads(grad_b: Tensor, grad_t: Tensor, t_raw: Tensor) -> Tensor:
    """The gradient to ``p`` from those to ``b`` and ``t`` (:func:`_s2_split` backwards).

    The values autograd forms through the slices and the clamp, which passes
    the gradient strictly inside its bounds only.
    """
    inside = (t_raw > constant(T_MARGIN, t_raw)).logical_and_(t_raw < constant(1.0 - T_MARGIN, t_raw))
    return torch.cat([grad_b, torch.where(inside, grad_t, constant(0.0, grad_t))], dim=1)


def s2_shift_forward(sim: Tensor, p: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The forward pass of :class:`_S2Shift`: ``sim + log S2(minmax(sim))`` and what its backward pass needs.

    ``p``: the parameters of :meth:`SoftStep.parameters_for`, split into b and the clamped t here.
    """
    b, t, t_raw = _s2_split(p)
    floor = _s2_floor(sim.dtype)
    low, low_at = sim.min(dim=1, keepdim=True)
    high, high_at = sim.max(dim=1, keepdim=True)
    span = high - low
    flat = span <= constant(0.0, span)
    if bool(flat.any()):
        # A flat row has every neighbour equally near, hence all are "the nearest" (x = 1).
        x = torch.sub(sim, low).div_(torch.where(flat, torch.ones_like(span), span))
        x.add_(flat.to(x.dtype))
        inv_span = torch.where(flat, torch.zeros_like(span), span.reciprocal())
    else:
        # No flat row (the common case): the same values without the selections.
        x = torch.sub(sim, low).div_(span)
        inv_span = span.reciprocal()
    xs, b_floored, rest, k, log_ratio, value = _log_s2_terms(x.clamp_min_(floor), b, t, floor)
    return value + sim, (xs, b, b_floored, rest, k, log_ratio, value, inv_span, low_at, high_at, t_raw)


def s2_shift_backward(grad: Tensor, saved: tuple[Tensor, ...], needs: tuple) -> tuple[Tensor | None, Tensor | None]:
    """Gradients ``(to sim, to p)`` of :func:`s2_shift_forward`; ``needs`` as autograd's needs_input_grad."""
    xs, b, b_floored, rest, k, log_ratio, value, inv_span, low_at, high_at, t_raw = saved
    grad_sim = grad_p = None
    if needs[0]:
        grad_x = _s2_x_grad(grad, xs, b_floored, k, log_ratio)
        # x = (sim - low) / span: dx/dlow = (x - 1) / span, dx/dhigh = -x / span.
        dot = (grad_x * xs).sum(dim=1, keepdim=True)
        grad_low = (dot - grad_x.sum(dim=1, keepdim=True)) * inv_span
        grad_high = -dot * inv_span
        grad_sim = grad_x.mul_(inv_span).add_(grad)
        grad_sim.scatter_add_(1, low_at, grad_low).scatter_add_(1, high_at, grad_high)
    if needs[1]:
        grad_b, grad_t = _s2_parameter_grads((False, True, True), grad, xs, b, b_floored, rest, k, log_ratio, value)
        grad_p = _s2_join_grads(grad_b, grad_t, t_raw)
    return grad_sim, grad_p


class _S2Shift(torch.autograd.Function):
    """``sim + log S2(minmax(sim); b, t)`` in one node, with a hand-written backward pass.

    The same values as :func:`minmax_normalise` followed by :func:`log_s2`; the
    row minimum and maximum pass their gradient to one entry each (autograd's
    amin/amax share it among ties, which only differs where ties occur), and
    no boolean ``(b, N)`` masks are formed, which are slow on CPU. It takes
    the parameters ``p`` of :meth:`SoftStep.parameters_for` and forms b and t
    itself (:func:`_s2_split`): three fewer autograd nodes a call.
    """

    @staticmethod
    def forward(ctx, sim: Tensor, p: Tensor) -> Tensor:
        out, saved = s2_shift_forward(sim, p)
        ctx.save_for_backward(*saved)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        return s2_shift_backward(grad, ctx.saved_tensors, ctx.needs_input_grad)


def _best_other(x: Tensor, self_index: Tensor) -> Tensor:
    """Each row's largest entry outside its own column ``self_index[i]``, shape ``(rows, 1)``."""
    if x.shape[1] < 2:
        return torch.full_like(x[:, :1], float("-inf"))
    # The two largest entries hold the best other one: no (rows x N) copy with the own entry masked.
    values, columns = x.topk(2, dim=1)
    own_first = columns[:, :1] == self_index.unsqueeze(1)
    return torch.where(own_first, values[:, 1:], values[:, :1])


class SoftStep(nn.Module):
    """Learned SoftStep mask: returns ``sim + log(mask(normalised sim))`` (the NONA paper, Algorithm 1).

    ``"lu"`` is the SoftStep paper's parameterisation by transition bounds:
    from sigmoids ``(p0, p1, t)`` it sets ``l = min(p0, 1 - T_MARGIN)`` and
    ``u = l + p1 (1 - l)``, so ``0 < l <= u <= 1``, and the mask is 0 for
    ``x <= l``, 1 for ``x >= u`` and
    ``(x-l)^(1/t) / ((x-l)^(1/t) + (u-x)^(1/t))`` in between (``t -> 0``: a hard
    step at ``(l+u)/2``; ``t -> 1``: a linear ramp from l to u). Unlike S1's
    ``(a, b)``, the row-wise min-max normalisation skips each row's own entry
    (training), so the best valid neighbour sits at ``x = 1 >= u`` and keeps
    full weight; ``l`` is therefore used as learned, without S1's clipping
    below the best neighbour and its ``eps`` margin.

    Parameters
    ----------
    fn : str
        The mask function: ``"s1"``, ``"s2"`` or ``"lu"``.
    params : str
        ``"global"`` (learned scalars through a sigmoid) or ``"pointwise"``
        (a sigmoid of a linear layer of the query embedding).
    dim : int or None
        The embedding dimension; needed by ``params="pointwise"``.
    eps : float
        The margin of S1's rejection threshold below the best neighbour.

    Raises
    ------
    ValueError
        On an unknown ``fn`` or ``params``, or pointwise parameters without ``dim``.
    """

    def __init__(self, fn: str = "s2", params: str = "global", dim: int | None = None, eps: float = 1e-6) -> None:
        super().__init__()
        if fn not in SOFTSTEP_FUNCTIONS:
            raise ValueError(f"unknown SoftStep function {fn!r}; expected one of {', '.join(SOFTSTEP_FUNCTIONS)}")
        if params not in PARAM_MODES:
            raise ValueError(f"unknown SoftStep parameter mode {params!r}; expected one of {', '.join(PARAM_MODES)}")
        self.fn = fn
        self.params = params
        self.dim = dim
        self.eps = eps
        self.n_params = N_PARAMS[fn]
        if params == "pointwise":
            if dim is None or dim < 1:
                raise ValueError(
                    "pointwise SoftStep needs the embedding dimension: SoftStep(..., params='pointwise', dim=d)"
                )
            self.linear = nn.Linear(dim, self.n_params)
        else:
            self.raw = nn.Parameter(torch.zeros(self.n_params))

    def extra_repr(self) -> str:
        return f"fn={self.fn!r}, params={self.params!r}, dim={self.dim}"

    def parameters_for(self, z: Tensor) -> Tensor:
        """The mask parameters in (0, 1): shape ``(b, n_params)`` (pointwise) or ``(1, n_params)`` (global)."""
        if self.params == "pointwise":
            if z.shape[1] != self.dim:
                raise ValueError(
                    f"pointwise SoftStep was built for dim={self.dim} but the embeddings have dimension {z.shape[1]}"
                )
            return torch.sigmoid(self.linear(z))
        return torch.sigmoid(self.raw).unsqueeze(0).to(z.dtype)

    def log_mask(
        self, sim: Tensor, z: Tensor, self_index: Tensor | None = None, *, parameters: Tensor | None = None
    ) -> Tensor:
        """log of the SoftStep mask for each entry of a similarity matrix.

        Parameters
        ----------
        sim : torch.Tensor
            Similarities, shape ``(b, N)``; min-max normalised row by row here.
        z : torch.Tensor
            Query embeddings, shape ``(b, d)``, from which the parameters are computed.
        self_index : torch.Tensor or None
            ``self_index[i]`` is row i's own column (training), or None.
        parameters : torch.Tensor or None
            Mask parameters in [0, 1] to use instead of the learned ones, shape
            ``(b, n_params)`` or ``(1, n_params)`` in the order of
            :meth:`parameters_for` (e.g. to draw the mask at a chosen ``t``);
            ``z`` is then unused.

        Returns
        -------
        torch.Tensor
            ``log(mask)``, shape ``(b, N)``: 0 where the mask keeps full weight, ``-inf`` where it rejects.
        """
        # Algorithm 1 normalises S1 and S2 over the whole row, own entry included.
        x = minmax_normalise(sim, self_index if self.fn == "lu" else None)
        return self.log_step(x, z, self_index, parameters=parameters)

    def log_step(
        self, x: Tensor, z: Tensor, self_index: Tensor | None = None, *, parameters: Tensor | None = None
    ) -> Tensor:
        """log SoftStep(x) for scores ``x`` already normalised to [0, 1] (e.g. soft ranks).

        The arguments are those of :meth:`log_mask`, with ``x`` in place of ``sim``.
        """
        p = self.parameters_for(z) if parameters is None else self._checked(parameters, x.shape[0])
        t = p[:, -1:].clamp(T_MARGIN, 1.0 - T_MARGIN)
        if self.fn == "s2":
            return log_s2(x, p[:, 0:1], t)
        if self.fn == "lu":
            # l < 1 keeps the best valid neighbour (x = 1) above the rejection bound.
            low = p[:, 0:1].clamp(max=1.0 - T_MARGIN)
            return log_s1(x, low, low + p[:, 1:2] * torch.sub(constant(1.0, low), low), t)
        top = x.amax(dim=1, keepdim=True) if self_index is None else _best_other(x, self_index)
        a = torch.minimum(p[:, 0:1], top) - constant(self.eps, top)
        b = a + p[:, 1:2] * torch.sub(constant(1.0, a), a)
        return log_s1(x, a, b, t)

    def _checked(self, parameters: Tensor, rows: int) -> Tensor:
        if parameters.dim() != 2 or parameters.shape[1] != self.n_params or parameters.shape[0] not in (1, rows):
            raise ValueError(
                f"parameters for SoftStep(fn={self.fn!r}) must have shape ({rows}, {self.n_params}) or "
                f"(1, {self.n_params}), got {tuple(parameters.shape)}"
            )
        return parameters

    def forward(self, sim: Tensor, z: Tensor, self_index: Tensor | int | None = None) -> Tensor:
        """Shift similarities down by the learned mask.

        Parameters
        ----------
        sim : torch.Tensor
            Similarities, shape ``(b, N)``.
        z : torch.Tensor
            Query embeddings, shape ``(b, d)``.
        self_index : torch.Tensor, int or None
            Row i's own column (training): ``self_index[i]``, or
            ``i + self_index`` for an int; None when there is none.

        Returns
        -------
        torch.Tensor
            ``sim + log(mask)``, shape ``(b, N)``.
        """
        if isinstance(self_index, int) and self.fn != "s2":
            self_index = torch.arange(self_index, self_index + sim.shape[0], device=sim.device)
        if self.fn == "s2":
            return _S2Shift.apply(sim, self.parameters_for(z))
        return sim + self.log_mask(sim, z, self_index)


def softstep_from_spec(spec: str, dim: int | None = None) -> SoftStep | None:
    """The SoftStep named by ``"<fn>-<params>"`` (e.g. ``"lu-global"``), or None for ``"none"``."""
    if spec == "none":
        return None
    fn, _, params = spec.partition("-")
    if fn not in SOFTSTEP_FUNCTIONS or params not in PARAM_MODES:
        valid = ["none"] + [f"{f}-{m}" for f in SOFTSTEP_FUNCTIONS for m in PARAM_MODES]
        raise ValueError(f"unknown SoftStep spec {spec!r}; expected one of {', '.join(valid)}")
    return SoftStep(fn=fn, params=params, dim=dim)
