"""Pure loss functions. Each cites its paper; each has a hand-derived unit test.

Shapes: logits [batch, seq, vocab]; labels [batch, seq] with -100 where no loss is taken.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..encoding import IGNORE


# Under data parallelism each process holds a shard of the batch and DDP averages gradients
# over the `world` processes. A mean over a shard's own tokens would then weight shards
# equally, not tokens; dividing each shard's sum by (global count / world) instead makes the
# average of the gradients exactly the gradient of the whole batch's mean, as on one process
# (the same normalisation as transformers' num_items_in_batch). Callers pass `world` from the
# step in progress (a method reads it from its Context); every process calls the same
# functions in the same order, so the all-reduce below lines up.
def _count(count: torch.Tensor | int, device: torch.device, world: int) -> torch.Tensor:
    count = torch.as_tensor(count, dtype=torch.float32, device=device)
    if world > 1:
        import torch.distributed as dist

        count = count.detach().clone()
        dist.all_reduce(count)  # the global count, summed over processes
        count = count / world
    return count.clamp(min=1e-12)


def dp_mean(values: torch.Tensor, mask: torch.Tensor | None = None, world: int = 1) -> torch.Tensor:
    """Mean of `values` (over `mask` where given), global over `world` data-parallel shards."""
    if mask is None:
        return values.sum() / _count(values.numel(), values.device, world)
    return (values * mask).sum() / _count(mask.sum(), values.device, world)


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each next-token label, shifted for causal LMs.

    Returns (logp [batch, seq-1], mask [batch, seq-1]) with logp = 0 where masked.
    """
    target = labels[:, 1:]  # position t predicts token t+1
    mask = target != IGNORE
    # the vocabulary-wide log-softmax only at labelled positions ([n_labelled, vocab], not
    # [batch, seq, vocab]): prompts are most of a QA sequence, so this is most of the memory
    # autograd would keep for the step
    picked = logits[:, :-1, :][mask].float()
    lp = torch.log_softmax(picked, dim=-1).gather(-1, target[mask].unsqueeze(-1)).squeeze(-1)
    logp = torch.zeros(mask.shape, dtype=lp.dtype, device=lp.device).masked_scatter(mask, lp)
    return logp, mask


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed NLL [batch], labelled-token count [batch]) of each sequence's target."""
    logp, mask = token_logprobs(logits, labels)
    return -logp.sum(-1), mask.sum(-1)


def summed_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed NLL, number of labelled tokens) of a batch."""
    target = labels[:, 1:]
    mask = target != IGNORE  # labelled positions only, as in token_logprobs
    return F.cross_entropy(logits[:, :-1, :][mask].float(), target[mask], reduction="sum"), mask.sum()


def mean_nll(logits: torch.Tensor, labels: torch.Tensor, world: int = 1) -> torch.Tensor:
    """Token-averaged NLL over the whole batch: the standard LM loss (scalar)."""
    nll, count = summed_nll(logits, labels)
    return nll / _count(count, nll.device, world)


def gradient_ascent(forget_nll: torch.Tensor) -> torch.Tensor:
    """GA (Jang et al. 2023, "Knowledge Unlearning"): minimise -NLL(forget)."""
    return -forget_nll


def grad_diff(forget_nll: torch.Tensor, retain_loss: torch.Tensor, alpha: float = 1.0,
              gamma: float = 1.0) -> torch.Tensor:
    """GradDiff (Liu et al. 2022; TOFU baseline): -gamma * NLL(forget) + alpha * retain loss."""
    return -gamma * forget_nll + alpha * retain_loss


def npo(seq_nll: torch.Tensor, ref_seq_nll: torch.Tensor, beta: float, world: int = 1) -> torch.Tensor:
    """NPO (Zhang et al. 2024, "Negative Preference Optimization"), eq. 3:

    L = -(2/beta) * mean log sigmoid(-beta * log(pi_theta(y|x) / pi_ref(y|x)))
      = -(2/beta) * mean log sigmoid(beta * (nll_theta - nll_ref))
    with nll the summed sequence NLL. At nll_theta = nll_ref the loss is (2/beta) log 2, and
    it falls towards 0 as the model's likelihood of the forget answer drops below ref's.
    """
    return -(2.0 / beta) * dp_mean(F.logsigmoid(beta * (seq_nll - ref_seq_nll)), world=world)


# ---------------------------------------------------------------------------- token-level helpers
def answer_logits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [n_tokens, vocab], targets [n_tokens]) at the labelled positions, causal shift applied.

    Rows come in row-major batch order, so one item always yields its tokens in the same order
    (what cached per-token reference quantities rely on)."""
    shifted = logits[:, :-1, :]
    target = labels[:, 1:]
    mask = target != IGNORE
    return shifted[mask], target[mask]


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor,
                    world: int = 1) -> torch.Tensor:
    """KL(p_ref || p_model) per position, averaged over `mask` (the KL retain term of TOFU's
    GradDiff-KL and NPO-KL; Maini et al. 2024, "TOFU"). logits, ref_logits [..., vocab]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    ref_logp = torch.log_softmax(ref_logits.float(), dim=-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    return dp_mean(kl, mask, world=world)


# ---------------------------------------------------------------------------- sequence-level losses
def simnpo(seq_nll: torch.Tensor, lengths: torch.Tensor, beta: float, gamma: float,
           world: int = 1) -> torch.Tensor:
    """SimNPO (Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization
    for LLM Unlearning"), eq. 4: NPO with the reference replaced by a length-normalised margin,
    L = -(2/beta) * mean log sigmoid(beta * nll_seq / |y| - gamma). Reference-free."""
    return -(2.0 / beta) * dp_mean(F.logsigmoid(beta * seq_nll / lengths.clamp(min=1) - gamma), world=world)


def dpo(win_nll: torch.Tensor, lose_nll: torch.Tensor, ref_win_nll: torch.Tensor,
        ref_lose_nll: torch.Tensor, beta: float, world: int = 1) -> torch.Tensor:
    """DPO (Rafailov et al. 2023) in the 2/beta scaling TOFU's IdkPO uses (Maini et al. 2024):
    L = -(2/beta) * mean log sigmoid(beta * [(ref_win - win) - (ref_lose - lose)])
    with nll summed sequence NLLs; the preferred ("win") answer is the refusal."""
    margin = (ref_win_nll - win_nll) - (ref_lose_nll - lose_nll)
    return -(2.0 / beta) * dp_mean(F.logsigmoid(beta * margin), world=world)


# ---------------------------------------------------------------------------- token-reweighted ascent
def weighted_ascent(logp: torch.Tensor, weight: torch.Tensor, world: int = 1) -> torch.Tensor:
    """Mean of weight * log p over labelled tokens [n_tokens]: minimising it is gradient ascent
    on the NLL with each token's step scaled by a (detached) weight."""
    return dp_mean(weight.detach() * logp, world=world)


def wga_weights(logp: torch.Tensor, beta: float) -> torch.Tensor:
    """WGA (Wang et al. 2025, "Rethinking LLM Unlearning Objectives: A Gradient Perspective and
    Go Beyond"): w = p^beta. Tokens the model already finds unlikely get small steps, which
    stops ascent from running away on tokens that are already forgotten."""
    return logp.detach().exp() ** beta


def satimp_weights(logp: torch.Tensor, beta1: float, beta2: float) -> torch.Tensor:
    """SatImp (Yang et al. 2025, "Exploring Criteria of Loss Reweighting to Enhance LLM
    Unlearning"): w = p^beta1 * (1 - p)^beta2, saturation times importance."""
    p = logp.detach().exp()
    return p ** beta1 * (1.0 - p) ** beta2


# ---------------------------------------------------------------------------- distribution targets
def undial(logits: torch.Tensor, ref_logits: torch.Tensor, targets: torch.Tensor,
           strength: float, world: int = 1) -> torch.Tensor:
    """UNDIAL (Dong et al. 2024, "UNDIAL: Self-Distillation with Adjusted Logits for Robust
    Unlearning"): distil from the reference with the true token's logit lowered by `strength`,
    L = mean_t CE(softmax(ref_logits_t - strength * onehot(y_t)), p_model_t).
    logits, ref_logits [n_tokens, vocab]; targets [n_tokens]."""
    adjusted = ref_logits.float().scatter_add(
        -1, targets.unsqueeze(-1), torch.full_like(targets, -strength, dtype=torch.float).unsqueeze(-1))
    soft = torch.softmax(adjusted, dim=-1)
    return -dp_mean((soft * torch.log_softmax(logits.float(), dim=-1)).sum(-1), world=world)


def cross_entropy_unlearning(logits: torch.Tensor, targets: torch.Tensor, world: int = 1) -> torch.Tensor:
    """CE-U (Yang et al. 2025, "CE-U: Cross Entropy Unlearning"): cross-entropy against the
    model's own detached distribution with the true token removed (its logit set to -inf).
    The gradient w.r.t. the logits is p - q: it lowers the true token and keeps the rest of the
    distribution's shape, with no runaway as p(true) -> 0. logits [n_tokens, vocab]."""
    q_logits = logits.detach().float().scatter(-1, targets.unsqueeze(-1), float("-inf"))
    q = torch.softmax(q_logits, dim=-1)
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -dp_mean((q * logp.masked_fill(q == 0, 0.0)).sum(-1), world=world)


def logit_flatness(logits: torch.Tensor, world: int = 1) -> torch.Tensor:
    """PDU's forget loss (Entesari et al. 2025, "Constrained Entropic Unlearning: A Primal-Dual
    Framework for Large Language Models"): mean over tokens of (max logit - mean logit)^2, zero
    exactly when the next-token distribution is uniform. logits [n_tokens, vocab]."""
    lf = logits.float()
    return dp_mean((lf.max(-1).values - lf.mean(-1)) ** 2, world=world)


def uniform_kl(logits: torch.Tensor, world: int = 1) -> torch.Tensor:
    """ULD's retain loss for the assistant (Ji et al. 2024, "Reversing the Forget-Retain
    Objectives"): KL(U || p) = -log V - (1/V) sum_v log p(v), averaged over tokens; zero exactly
    when p is uniform, where the assistant's logits are constant and subtracting them changes
    nothing. logits [n_tokens, vocab]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return dp_mean(-math.log(logp.shape[-1]) - logp.mean(-1), world=world)


def zo_step(f, x: float, mu: float, lr: float, lower: float = 0.0) -> tuple[float, float]:
    """One zeroth-order step on a scalar (ECO, Liu et al. 2024, learns its corruption strength
    this way): the central difference g = (f(x + mu) - f(x - mu)) / (2 mu) estimates the
    gradient without backpropagation; x <- max(lower, x - lr * g). Returns (new x, g)."""
    g = (f(x + mu) - f(max(lower, x - mu))) / (x + mu - max(lower, x - mu))
    return max(lower, x - lr * g), g


def dual_ascent(lam: float, constraint: float, step: float) -> float:
    """Projected dual ascent for a constraint g <= 0: lam <- max(0, lam + step * g)."""
    return max(0.0, lam + step * constraint)


# ---------------------------------------------------------------------------- FLAT
# (activation g*, conjugate f*) pairs of the variational f-divergence bound (Nowozin et al. 2016,
# "f-GAN", table 2) for the divergences FLAT evaluates.
F_DIVERGENCES = {
    "kl": (lambda v: v, lambda t: torch.exp(t - 1.0)),
    "tv": (lambda v: 0.5 * torch.tanh(v), lambda t: t),
    "js": (lambda v: math.log(2.0) - F.softplus(-v), lambda t: -torch.log(2.0 - torch.exp(t))),
    "pearson": (lambda v: v, lambda t: t * t / 4.0 + t),
}


def flat(good_score: torch.Tensor, bad_score: torch.Tensor, divergence: str = "kl",
         world: int = 1) -> torch.Tensor:
    """FLAT (Wang et al. 2025, "LLM Unlearning via Loss Adjustment with Only Forget Data"):
    maximise the variational f-divergence between template answers ("good") and forget answers
    ("bad"), L = -mean g*(s_good) + mean f*(g*(s_bad)), with s the mean token probability of
    an answer. Its per-sample gradient weights come from f*'s slope. Scores [batch]."""
    if divergence not in F_DIVERGENCES:
        raise ValueError(f"unknown divergence '{divergence}' (one of {sorted(F_DIVERGENCES)})")
    act, conj = F_DIVERGENCES[divergence]
    return -dp_mean(act(good_score), world=world) + dp_mean(conj(act(bad_score)), world=world)


def mean_token_prob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean probability of the labelled tokens of each sequence [batch] (FLAT's answer score)."""
    logp, mask = token_logprobs(logits, labels)
    return (logp.exp() * mask).sum(-1) / mask.sum(-1).clamp(min=1)


# ---------------------------------------------------------------------------- representations
def rmu_forget(hidden: torch.Tensor, control: torch.Tensor, mask: torch.Tensor,
               world: int = 1) -> torch.Tensor:
    """RMU (Li et al. 2024, "The WMDP Benchmark"), forget term: mean squared distance of the
    layer's hidden states [batch, seq, d] to the scaled random control vector c*u [d], over
    `mask` [batch, seq]."""
    sq = ((hidden.float() - control.float()) ** 2).mean(-1)
    return dp_mean(sq, mask, world=world)


def rmu_retain(hidden: torch.Tensor, ref_hidden: torch.Tensor, mask: torch.Tensor,
               world: int = 1) -> torch.Tensor:
    """RMU retain term: mean squared distance to the reference model's hidden states."""
    sq = ((hidden.float() - ref_hidden.float()) ** 2).mean(-1)
    return dp_mean(sq, mask, world=world)


def lunar_redirect(hidden: torch.Tensor, ref_hidden: torch.Tensor, direction: torch.Tensor,
                   mask: torch.Tensor, world: int = 1) -> torch.Tensor:
    """LUNAR (Shen et al. 2025, "LLM Unlearning via Neural Activation Redirection"), forget
    term: mean squared distance of the layer's hidden states [batch, seq, d] to where they are
    redirected, the reference's states plus the refusal direction [d], over `mask`."""
    sq = ((hidden.float() - (ref_hidden.float() + direction.float())) ** 2).mean(-1)
    return dp_mean(sq, mask, world=world)


def whp_generic_logits(base: torch.Tensor, reinforced: torch.Tensor, alpha: float) -> torch.Tensor:
    """Who's Harry Potter (Eldan & Russinovich 2023): v_generic = v_base - alpha *
    relu(v_reinforced - v_base). A model fine-tuned further on the forget data raises exactly
    the tokens tied to it; subtracting that rise demotes them. [..., vocab] -> [..., vocab]."""
    base = base.float()
    return base - alpha * torch.relu(reinforced.float() - base)


# ---------------------------------------------------------------------------- parameters
def l1_penalty(params: list[torch.Tensor]) -> torch.Tensor:
    """Sum of absolute weights (Jia et al. 2023, "Model Sparsity Can Simplify Machine
    Unlearning"): its subgradient sign(w) shrinks every weight by the same amount per step."""
    return sum(p.abs().sum() for p in params)


def negate_task_vector(base: torch.Tensor, finetuned: torch.Tensor, scale: float) -> torch.Tensor:
    """Task arithmetic (Ilharco et al. 2023, "Editing Models with Task Arithmetic"):
    w = base - scale * (finetuned - base), the model moved away from what fine-tuning on the
    forget set added."""
    return base - scale * (finetuned - base)
