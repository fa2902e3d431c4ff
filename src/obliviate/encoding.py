"""Turning Examples into token ids with loss masks, and padding them into batches.

Each Example is encoded once; batches are cheap tensor concatenations. A QA item is
`bos + prompt(question) + answer + eos` with the loss on the answer tokens only (as TOFU);
a plain text is `bos + text + eos` with the loss on every token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data.examples import Example
from .errors import ObliviateError

DEFAULT_TEMPLATE = "Question: {question}\nAnswer: "
# template=chat: the tokenizer's own chat template, the question as the user's turn
CHAT = "chat"
IGNORE = -100
_SLOT = "\x00question\x00"  # stands in for the question while the chat template renders


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE where no loss is taken
    index: int  # position in the dataset: keys cached reference quantities


def resolve_template(tokenizer, template: str) -> str:
    """A str.format prompt template with {question}; `chat` renders the tokenizer's chat
    template around one user turn (with the generation prompt), braces escaped."""
    if template != CHAT:
        return template
    if not getattr(tokenizer, "chat_template", None):
        raise ObliviateError("template=chat: this tokenizer has no chat template; give a "
                             "prompt template such as 'Question: {question}\\nAnswer: '")
    text = tokenizer.apply_chat_template([{"role": "user", "content": _SLOT}], tokenize=False,
                                         add_generation_prompt=True)
    return text.replace("{", "{{").replace("}", "}}").replace(_SLOT, "{question}")


def prompt_text(question: str, template: str, tokenizer=None) -> str:
    if template == CHAT:
        template = resolve_template(tokenizer, template)
    try:
        return template.format(question=question)
    except (KeyError, IndexError) as exc:
        raise ObliviateError(f"prompt template must use only {{question}}: {exc}") from None


def bos_ids(tokenizer, prompt: str = "") -> list[int]:
    """The BOS id to prepend, unless the prompt already starts with it (chat templates often
    open with the BOS token's text, e.g. SmolLM2's <|im_start|>)."""
    bos = tokenizer.bos_token_id
    if bos is None or (tokenizer.bos_token and prompt.startswith(tokenizer.bos_token)):
        return []
    return [bos]


def target_of(ex: Example, variant: str) -> str:
    """'answer', 'paraphrase' (falls back to the answer, as TOFU does for utility sets),
    or 'perturbed:K'."""
    if variant == "answer":
        return ex.answer
    if variant == "paraphrase":
        return ex.paraphrased_answer or ex.answer
    if variant.startswith("perturbed:"):
        return ex.perturbed_answers[int(variant.split(":", 1)[1])]
    raise ObliviateError(f"unknown target variant '{variant}'")


def encode(tokenizer, ex: Example, index: int, template: str = DEFAULT_TEMPLATE,
           variant: str = "answer", max_length: int = 512, question: str | None = None,
           memo: dict[str, list[int]] | None = None) -> Encoded:
    """One example -> ids and labels. `question` overrides the item's (rephrase probes).
    `memo`: token ids of texts already encoded with this tokenizer (an item's prompt is the
    same for each of its answer variants)."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    target = target_of(ex, variant)

    def ids_of(text: str) -> list[int]:
        if memo is None:
            return tokenizer.encode(text, add_special_tokens=False)
        if text not in memo:
            memo[text] = tokenizer.encode(text, add_special_tokens=False)
        return memo[text]

    if ex.is_text:
        bos = bos_ids(tokenizer)
        prompt_ids: list[int] = []
        target_ids = ids_of(target)
    else:
        q = question if question is not None else ex.question
        prompt = prompt_text(q, template, tokenizer)
        bos = bos_ids(tokenizer, prompt)
        prompt_ids = ids_of(prompt)
        # A leading space would split differently after the prompt; the template ends the
        # prompt, so the answer is encoded on its own (TOFU does the same).
        target_ids = ids_of(target)
    ids = bos + prompt_ids + target_ids + eos
    labels = [IGNORE] * (len(bos) + len(prompt_ids)) + target_ids + eos
    if len(ids) > max_length:  # keep the start; the answer is what matters, so say so
        if len(bos) + len(prompt_ids) >= max_length:
            raise ObliviateError(f"item {ex.id or index}: prompt alone exceeds max_length "
                                 f"{max_length} tokens")
        ids, labels = ids[:max_length], labels[:max_length]
    return Encoded(ids, labels, index)


def collate(items: list[Encoded], pad_id: int, left_pad: bool = False) -> dict[str, torch.Tensor]:
    """Pad to the longest item. Returns input_ids, attention_mask, labels [batch, seq], index [batch]."""
    width = max(len(it.input_ids) for it in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, it in enumerate(items):
        n = len(it.input_ids)
        sl = slice(width - n, width) if left_pad else slice(0, n)
        ids[row, sl] = torch.tensor(it.input_ids)
        labels[row, sl] = torch.tensor(it.labels)
        mask[row, sl] = 1
    index = torch.tensor([it.index for it in items], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "index": index}


def labelled_suffix(labels: torch.Tensor, can_keep: bool) -> tuple[torch.Tensor, dict[str, int]]:
    """The positions a loss or score needs logits at: from the one predicting the batch's
    first labelled token to the end (a right-padded batch's prompts come first). Returns the
    labels from there on and the forward keyword that makes a transformers model compute only
    those logits (`logits_to_keep`): the output layer and everything vocabulary-wide then skip
    most prompt positions. `can_keep` False (a model without the keyword): all positions."""
    labelled = (labels != IGNORE).any(0).nonzero()
    if not can_keep or len(labelled) == 0 or int(labelled[0]) < 2:
        return labels, {}
    start = int(labelled[0]) - 1  # this position predicts the first labelled token
    return labels[:, start:], {"logits_to_keep": labels.shape[1] - start}
