"""Prompt and image preprocessing follow the official recipe; bad inputs are refused clearly."""

import numpy as np
import pytest
import torch

from kv_efficient_vla_ros.core.openvla.config import IMAGENET_MEAN, IMAGENET_STD
from kv_efficient_vla_ros.core.openvla.processor import InvalidInputError, build_prompt


def test_prompt_text():
    assert build_prompt("Lift The Red Cube") == "In: What action should the robot take to lift the red cube?\nOut:"


def test_prompt_ids_start_with_bos_and_end_with_the_empty_piece(tiny_policy):
    tok = tiny_policy.prompt_tokenizer
    ids = tok("  lift the red cube \n")
    assert ids[0] == tok.tokenizer.bos_token_id
    assert tok.tokenizer.convert_ids_to_tokens(ids[-1]) == "▁"
    text = tok.tokenizer.decode(ids, skip_special_tokens=True)
    assert "robot take to lift the red cube?\nOut:" in text
    assert ids == tok("lift the red cube")  # surrounding whitespace does not change the prompt


def test_pixels_are_normalized_per_featurizer(tiny_policy):
    white = np.full((224, 224, 3), 255, dtype=np.uint8)
    pixels = tiny_policy.image_processor(white)
    assert pixels.shape == (1, 6, 224, 224)
    dino = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(pixels[0, :3, 0, 0], dino)
    torch.testing.assert_close(pixels[0, 3:, 0, 0], torch.ones(3))  # SigLIP: (1 - 0.5) / 0.5


@pytest.mark.parametrize("strategy", ["resize-naive", "resize-crop", "letterbox"])
def test_any_frame_size_becomes_224(tiny_policy, strategy):
    processor = tiny_policy.image_processor
    processor.resize_strategy, original = strategy, processor.resize_strategy
    try:
        frame = np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8)
        assert processor(frame).shape == (1, 6, 224, 224)
    finally:
        processor.resize_strategy = original


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((224, 224), np.uint8), "HxWx3"),
        (np.zeros((224, 224, 4), np.uint8), "HxWx3"),
        (np.zeros((0, 224, 3), np.uint8), "HxWx3"),
        (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
        (np.full((8, 8, 3), 2.0, np.float32), r"\[0, 1\]"),
        (np.zeros((8, 8, 3), np.int32), "dtype"),
        ([[0, 0, 0]], "numpy array"),
    ],
)
def test_bad_images_are_refused(tiny_policy, image, message):
    with pytest.raises(InvalidInputError, match=message):
        tiny_policy.image_processor(image)


@pytest.mark.parametrize(
    ("instruction", "message"), [("", "empty"), ("   ", "empty"), ("x" * 600, "600 characters"), (None, "string")]
)
def test_bad_instructions_are_refused(tiny_policy, instruction, message):
    with pytest.raises(InvalidInputError, match=message):
        tiny_policy.prompt_tokenizer(instruction)
