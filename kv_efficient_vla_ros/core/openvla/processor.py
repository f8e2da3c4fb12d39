"""Camera frames -> pixel tensors, instructions -> prompt token ids (the official OpenVLA recipe)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.utils import logging as transformers_logging

from .config import CheckpointError, OpenVLAConfig, ViTSpec
from .errors import InvalidInputError as InvalidInputError  # defined apart so that ROS adapters need no torch

PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"
# SentencePiece's empty word piece; official predict_action appends it (id 29871 in Llama 2's vocab).
EMPTY_PIECE = "▁"
TOKENIZER_FILE = "tokenizer.json"  # what every OpenVLA checkpoint ships; no slow SentencePiece conversion here


def build_prompt(instruction: str) -> str:
    return PROMPT_TEMPLATE.format(instruction=instruction.lower())


class ImageProcessor:
    """Resize per ``image_resize_strategy`` as the official ``PrismaticImageProcessor`` does (a PIL image,
    Pillow's bicubic filter), then normalize once per featurizer and stack channels."""

    def __init__(self, specs: tuple[ViTSpec, ...], resize_strategy: str):
        self.size = specs[0].image_size
        self.resize_strategy = resize_strategy
        # The official processor pads with the mean of its last featurizer (SigLIP's for dinosiglip) for
        # every featurizer; Prismatic's training code padded each with its own. Inference parity wins.
        self.fill = tuple(int(255 * m) for m in specs[-1].mean)
        self.mean = torch.tensor([m for s in specs for m in s.mean]).view(1, -1, 1, 1)
        self.std = torch.tensor([v for s in specs for v in s.std]).view(1, -1, 1, 1)
        self.copies = len(specs)

    @staticmethod
    def validate(image: np.ndarray) -> np.ndarray:
        if not isinstance(image, np.ndarray):
            raise InvalidInputError(f"image must be a numpy array, got {type(image).__name__}")
        if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
            raise InvalidInputError(f"image must be HxWx3 RGB, got shape {image.shape}")
        if image.dtype == np.uint8:
            return image
        if np.issubdtype(image.dtype, np.floating):
            if not np.isfinite(image).all():
                raise InvalidInputError("image contains NaN or infinite values")
            if image.min() < 0.0 or image.max() > 1.0:
                raise InvalidInputError("a float image must lie in [0, 1]")
            # The official processor takes 8-bit PIL images: round to the nearest 8-bit value first.
            return (image * 255.0 + 0.5).astype(np.uint8)
        raise InvalidInputError(f"image dtype must be uint8 or float in [0, 1], got {image.dtype}")

    def resize(self, rgb: np.ndarray) -> np.ndarray:
        """``HxWx3`` uint8 -> ``SxSx3`` uint8, bit-exact with the official processor; ``SxS`` is untouched.

        torchvision's ``resize`` on a PIL image is Pillow's ``Image.resize`` with the bicubic filter:
        ``resize-naive`` to ``SxS``, the others shorter side to ``S`` (longer side truncated), then a
        centre crop. A torch bicubic resize differs from it by up to a few uint8 units.
        """
        image = Image.fromarray(np.ascontiguousarray(rgb))
        if self.resize_strategy == "letterbox":
            image = _letterbox(image, self.fill)
        square = self.resize_strategy == "resize-naive"
        size = (self.size, self.size) if square else _shorter_side(image.size, self.size)
        if image.size != size:
            image = image.resize(size, resample=Image.Resampling.BICUBIC)
        return _center_crop(np.asarray(image), self.size)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """``HxWx3`` RGB (uint8, or float in [0, 1]) -> ``[1, 3 * featurizers, S, S]`` float32."""
        rgb = self.resize(self.validate(image))
        x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float()
        x = (x / 255.0).repeat(1, self.copies, 1, 1)
        return (x - self.mean) / self.std


def _letterbox(image: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    """Pad to square symmetrically, as the official ``letterbox_pad_transform``: the same ``int(gap / 2)`` on
    both sides, so an odd gap leaves the image one pixel short of square (the resize and crop absorb it)."""
    (w, h), side = image.size, max(image.size)
    left, top = int((side - w) / 2), int((side - h) / 2)
    canvas = Image.new("RGB", (w + 2 * left, h + 2 * top), fill)
    canvas.paste(image, (left, top))
    return canvas


def _shorter_side(size: tuple[int, int], target: int) -> tuple[int, int]:
    """(W, H) with the shorter side ``target``, torchvision's rule for an int size: the longer side truncated."""
    w, h = size
    return (target, int(target * h / w)) if w <= h else (int(target * w / h), target)


def _center_crop(rgb: np.ndarray, side: int) -> np.ndarray:
    # torchvision's centre crop rounds the offsets with Python's round (half to even).
    top, left = round((rgb.shape[0] - side) / 2.0), round((rgb.shape[1] - side) / 2.0)
    return rgb[top : top + side, left : left + side]


# A token of the Llama-2 vocabulary spans at most 16 characters: an instruction longer than
# 16 x max_instruction_tokens characters is refused before it is tokenized (a 1 MB string costs no work).
MAX_CHARS_PER_TOKEN = 16
# Template tokens may merge differently around the instruction: room for that in the prompt's bound.
PROMPT_SLACK_TOKENS = 4


class PromptTokenizer:
    """Tokenizes the official prompt: BOS first, the empty piece last, the instruction bounded in tokens.

    The bound is in tokens because tokens are what a tick costs and what the cache must hold: 512
    characters of emoji are ~2,000 tokens (a 5x slower tick, and a reallocated cache)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_instruction_tokens: int = 64):
        if max_instruction_tokens < 1:
            raise ValueError(f"max_instruction_tokens must be at least 1, got {max_instruction_tokens}")
        self.tokenizer = tokenizer
        self.max_instruction_tokens = max_instruction_tokens
        self.bos_id = tokenizer.bos_token_id
        empty = tokenizer.convert_tokens_to_ids(EMPTY_PIECE)
        self.empty_piece_id = empty if empty != tokenizer.unk_token_id else None
        template = len(self._ids(build_prompt("")))
        self.max_prompt_tokens = template + max_instruction_tokens + PROMPT_SLACK_TOKENS

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: str | Path, **kwargs) -> PromptTokenizer:
        """The checkpoint's fast tokenizer (``tokenizer.json``), offline, and never through ``AutoTokenizer``:
        openvla-7b's config.json has an ``auto_map``, so the Auto classes stop to ask on stdin whether to run
        its remote code (a launched node then stalls). The official processor's tokenizer is this same one.
        """
        tokenizer_file = Path(checkpoint_dir) / TOKENIZER_FILE
        if not tokenizer_file.is_file():
            raise CheckpointError(f"{checkpoint_dir}: no {TOKENIZER_FILE}, so no tokenizer to load")
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()  # keep loading quiet: a real problem raises
        try:
            tokenizer = PreTrainedTokenizerFast.from_pretrained(
                str(checkpoint_dir), local_files_only=True, trust_remote_code=False
            )
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{checkpoint_dir}: cannot load the tokenizer ({err})") from err
        finally:
            transformers_logging.set_verbosity(verbosity)
        return cls(tokenizer, **kwargs)

    def validate(self, instruction: str) -> str:
        if not isinstance(instruction, str):
            raise InvalidInputError(f"instruction must be a string, got {type(instruction).__name__}")
        text = instruction.strip()
        if not text:
            raise InvalidInputError("instruction is empty")
        limit = self.max_instruction_tokens
        if len(text) > MAX_CHARS_PER_TOKEN * limit:
            raise InvalidInputError(
                f"instruction has {len(text)} characters, more than max_instruction_tokens={limit} tokens can hold"
            )
        tokens = len(self.tokenizer(text, add_special_tokens=False).input_ids)
        if tokens > limit:
            raise InvalidInputError(f"instruction is {tokens} tokens, more than max_instruction_tokens={limit}")
        return text

    def __call__(self, instruction: str) -> list[int]:
        ids = self._ids(build_prompt(self.validate(instruction)))
        if len(ids) > self.max_prompt_tokens:  # the slack was too small for this tokenizer: a bug, say so
            raise InvalidInputError(f"prompt is {len(ids)} tokens, more than the {self.max_prompt_tokens} planned for")
        return ids

    def _ids(self, prompt: str) -> list[int]:
        ids = list(self.tokenizer(prompt, add_special_tokens=True).input_ids)
        if self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids.insert(0, self.bos_id)
        if self.empty_piece_id is not None and ids[-1] != self.empty_piece_id:
            ids.append(self.empty_piece_id)
        return ids


def check_tokenizer_fits(tokenizer: PreTrainedTokenizerBase, config: OpenVLAConfig) -> None:
    """A tokenizer from another checkpoint would silently map actions to the wrong ids."""
    size = len(tokenizer)
    # The official tokenizer adds <PAD> at text_vocab_size, inside the padded embedding.
    if not config.text_vocab_size <= size <= config.text_config.vocab_size:
        raise CheckpointError(
            f"tokenizer has {size} tokens but the config implies a text vocabulary of {config.text_vocab_size} "
            f"(embedding {config.text_config.vocab_size}); tokenizer and weights come from different checkpoints"
        )
