"""Every bad input gives one clear line: images, models, devices."""

import io

import pytest
import torch
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel

from explain import ImageError, ModelLoadError, load_model, open_image
from explain.images import content_key
from explain.models import _logit_scale_and_bias, resolve_device
from tests.conftest import random_image
from tests.tiny_models import clip_bpe_tokenizer, clip_processor


def one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_open_image_handles_paths_bytes_and_modes(tmp_path):
    path = tmp_path / "a.png"
    random_image(1).convert("RGBA").save(path)
    from_path = open_image(path)
    assert from_path.mode == "RGB" and from_path.size == (48, 40)
    assert content_key(open_image(path.read_bytes())) == content_key(from_path)
    assert open_image(Image.new("P", (4, 4))).mode == "RGB"


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    random_image(2, size=(60, 20)).save(path, exif=exif)
    assert open_image(path).size == (20, 60)


def test_content_key_follows_pixels_not_objects():
    assert content_key(random_image(3)) == content_key(random_image(3))
    assert content_key(random_image(3)) != content_key(random_image(4))
    flipped = random_image(3).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert content_key(flipped) != content_key(random_image(3))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "absent.jpg", "absent.jpg: no such file"),
        (lambda d: d, "is a directory, not an image"),
        (lambda d: _write(d / "notes.jpg", b"these are words, not pixels"), "notes.jpg: not a recognised image format"),
        (lambda d: _write(d / "cut.png", _png_bytes()[:60]), "cut.png: cannot decode image"),
    ],
    ids=["missing", "directory", "not-an-image", "truncated"],
)
def test_unreadable_images(tmp_path, make, message):
    with pytest.raises(ImageError, match=message) as caught:
        open_image(make(tmp_path))
    one_line(caught)


def test_images_of_100_megapixels_are_refused(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (10_000, 10_000)).save(path)  # 100 MP, but a small file
    with pytest.raises(ImageError, match="huge.png: image is 100 megapixels; the limit is 100") as caught:
        open_image(path)
    one_line(caught)


def test_unknown_model_says_how_to_work_offline():
    with pytest.raises(ModelLoadError, match="cannot load model 'no-such-org/no-such-model'.*--model DIR") as caught:
        load_model("no-such-org/no-such-model", device="cpu")
    one_line(caught)


def test_directory_without_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot load model") as caught:
        load_model(str(tmp_path), device="cpu")
    assert "--model DIR" not in one_line(caught)


def test_text_only_model_is_refused(tmp_path):
    tokenizer = clip_bpe_tokenizer()
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    CLIPTextModel(config).save_pretrained(tmp_path)
    clip_processor(tokenizer).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="is a CLIPTextModel, not an image-text model") as caught:
        load_model(str(tmp_path), device="cpu")
    one_line(caught)


def test_device_choice():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(ModelLoadError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu():
    with pytest.raises(ModelLoadError, match="no CUDA GPU is available"):
        resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_runs_in_fp16(clip_dir):
    encoder = load_model(str(clip_dir), device="auto")
    assert encoder.dtype == torch.float16 and encoder.key.endswith("float16")


def test_logit_scale_conventions():
    class Clip(torch.nn.Module):
        logit_scale = torch.nn.Parameter(torch.tensor(4.6052))  # log(100)

    class Align(torch.nn.Module):
        temperature = torch.nn.Parameter(torch.tensor(0.05))

    class Siglip(torch.nn.Module):
        logit_scale = torch.nn.Parameter(torch.tensor(2.3026))  # log(10)
        logit_bias = torch.nn.Parameter(torch.tensor(-10.0))

    assert _logit_scale_and_bias(Clip()) == (pytest.approx(100.0, rel=1e-4), 0.0)
    assert _logit_scale_and_bias(Align()) == (pytest.approx(20.0), 0.0)
    assert _logit_scale_and_bias(Siglip()) == (pytest.approx(10.0, rel=1e-4), -10.0)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    random_image(5, size=(64, 64)).save(buffer, format="PNG")
    return buffer.getvalue()
