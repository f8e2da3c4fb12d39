"""Prompt and image preprocessing follow the official recipe; bad inputs are refused clearly."""

import numpy as np
import pytest
import torch
from PIL import Image

from kv_efficient_vla_ros.core.openvla.config import IMAGENET_MEAN, IMAGENET_STD, SIGLIP_MEAN, VISION_BACKBONES
from kv_efficient_vla_ros.core.openvla.processor import ImageProcessor, InvalidInputError, build_prompt

DINOSIGLIP = VISION_BACKBONES["dinosiglip-vit-so-224px"]


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


def _official_resize(frame: np.ndarray, strategy: str) -> np.ndarray:
    """The official PrismaticImageProcessor's steps on a PIL image, spelled out with Pillow: letterbox pads
    int(gap / 2) on both sides with the last featurizer's mean; torchvision's resize of a PIL image is
    Image.resize(BICUBIC), to 224x224 (resize-naive) or shorter side 224 (longer truncated); centre crop."""
    image = Image.fromarray(frame)
    if strategy == "letterbox":
        (w, h), side = image.size, max(image.size)
        padded = Image.new("RGB", (w + 2 * int((side - w) / 2), h + 2 * int((side - h) / 2)), (127, 127, 127))
        padded.paste(image, (int((side - w) / 2), int((side - h) / 2)))
        image = padded
    w, h = image.size
    if strategy == "resize-naive":
        size = (224, 224)
    else:
        size = (224, int(224 * h / w)) if w <= h else (int(224 * w / h), 224)
    out = np.asarray(image.resize(size, resample=Image.Resampling.BICUBIC) if size != image.size else image)
    top, left = round((out.shape[0] - 224) / 2), round((out.shape[1] - 224) / 2)
    return out[top : top + 224, left : left + 224]


def _normalized(rgb: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255.0
    mean = torch.tensor([*IMAGENET_MEAN, *SIGLIP_MEAN]).view(1, 6, 1, 1)
    std = torch.tensor([*IMAGENET_STD, 0.5, 0.5, 0.5]).view(1, 6, 1, 1)
    return (x.repeat(1, 2, 1, 1) - mean) / std


@pytest.mark.parametrize("strategy", ["resize-naive", "resize-crop", "letterbox"])
@pytest.mark.parametrize(("height", "width"), [(512, 600), (480, 640), (600, 512), (101, 100)])
def test_resize_is_the_official_pillow_bicubic(strategy, height, width):
    frame = np.random.default_rng(height + width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    official = _official_resize(frame, strategy)
    processor = ImageProcessor(DINOSIGLIP, strategy)
    np.testing.assert_array_equal(processor.resize(frame), official)  # bit-exact in uint8
    torch.testing.assert_close(processor(frame), _normalized(official), rtol=0, atol=1e-6)


@pytest.mark.parametrize("strategy", ["resize-naive", "resize-crop", "letterbox"])
def test_a_224_frame_is_not_resized(strategy):
    frame = np.random.default_rng(3).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    processor = ImageProcessor(DINOSIGLIP, strategy)
    np.testing.assert_array_equal(processor.resize(frame), frame)
    torch.testing.assert_close(processor(frame), _normalized(frame), rtol=0, atol=1e-6)


def test_a_float_frame_is_its_nearest_8_bit_frame():
    frame = np.random.default_rng(4).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    noisy = np.clip(frame / 255.0 + np.random.default_rng(5).uniform(-0.4, 0.4, frame.shape) / 255.0, 0, 1)
    processor = ImageProcessor(DINOSIGLIP, "resize-naive")
    torch.testing.assert_close(processor(noisy.astype(np.float32)), processor(frame), rtol=0, atol=0)


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
    ("instruction", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * 100_000, "100000 characters"),  # refused before tokenizing
        ("\U0001f916" * 512, r"\d+ tokens, more than max_instruction_tokens=64"),  # 512 characters, ~2,000 tokens
        (None, "string"),
    ],
)
def test_bad_instructions_are_refused(tiny_policy, instruction, message):
    with pytest.raises(InvalidInputError, match=message):
        tiny_policy.prompt_tokenizer(instruction)


def test_the_longest_instruction_fits_the_planned_prompt(tiny_policy):
    tokenizer = tiny_policy.prompt_tokenizer
    words = []
    while len(tokenizer.tokenizer(" ".join([*words, "red"]), add_special_tokens=False).input_ids) <= 64:
        words.append("red")
    longest = " ".join(words)
    assert len(tokenizer(longest)) <= tokenizer.max_prompt_tokens
    with pytest.raises(InvalidInputError, match="tokens, more than"):
        tokenizer(longest + " cube")
