"""Every bad input gives one clear line: images, models, devices."""

import io

import pytest
import torch
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel

from explain import ImageError, ModelLoadError, load_model, open_image
from explain.images import content_key
from explain.models import resolve_device
from explain.models.transformers_backend import logit_scale_and_bias
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
    with pytest.raises(
        ImageError, match=r"huge.png: image is 10000×10000 \(100 megapixels\); the limit is 100 megapixels"
    ) as caught:
        open_image(path)
    one_line(caught)


HOSTILE = r"""
import io, json, os, resource, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"
from explain import Explainer, ExplainError, load_model
explainer = Explainer(load_model(sys.argv[1], "cpu"))
classes = {"a": ["x"], "b": ["y"]}
explainer.classify(sys.argv[2], classes)  # warm: the model and processor have run once
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcomes = {}
for path in sys.argv[3:]:
    try:
        outcomes[os.path.basename(path)] = "ok " + explainer.classify(path, classes).predictions[0].name
    except ExplainError as error:
        outcomes[os.path.basename(path)] = str(error)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
print(json.dumps({"outcomes": outcomes, "grown": grown}))
"""


def test_hostile_images_stay_within_memory(tmp_path, clip_dir):
    """Thin, huge and lying images are classified or refused in one line, and peak memory grows
    by at most 300 MB over the whole run (measured in a fresh process with getrusage)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    Image.new("L", (50_000, 1)).save(tmp_path / "wide.png")  # 128 bytes
    Image.new("L", (1, 6_000)).save(tmp_path / "tall.png")
    Image.new("L", (9_999, 9_999), 128).save(tmp_path / "big-grey.png")
    Image.new("RGB", (9_999, 9_999), (10, 200, 30)).save(tmp_path / "big-colour.png")
    Image.new("L", (9_000, 9_000), 90).save(tmp_path / "big.jpg", quality=50)
    small = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(small, "JPEG")
    liar = bytearray(small.getvalue())  # a 1 KB JPEG whose header claims 9000×9000
    frame = liar.index(b"\xff\xc0")
    liar[frame + 5 : frame + 9] = (9000).to_bytes(2, "big") * 2
    (tmp_path / "liar.jpg").write_bytes(bytes(liar))
    Image.new("RGB", (4_000, 3_000), (1, 2, 3)).save(tmp_path / "phone.jpg")
    names = ["wide.png", "tall.png", "big-grey.png", "big-colour.png", "big.jpg", "liar.jpg", "phone.jpg"]
    warm = tmp_path / "warm.png"
    random_image(0).save(warm)
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", HOSTILE, str(clip_dir), str(warm), *(str(tmp_path / n) for n in names)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    outcomes = report["outcomes"]
    assert outcomes["wide.png"].endswith("wide.png: image is 50000×1, 50000 times longer than wide; the limit is 20:1")
    assert "tall.png: image is 1×6000" in outcomes["tall.png"]
    assert "big-colour.png: a 9999×9999 PNG needs 286 MB to decode; the limit is 256 MB" in outcomes["big-colour.png"]
    for name in ("big-grey.png", "big.jpg", "phone.jpg"):
        assert outcomes[name].startswith("ok "), outcomes[name]
    assert outcomes["liar.jpg"].startswith("ok ") or "liar.jpg: cannot decode image" in outcomes["liar.jpg"]
    assert all("\n" not in text for text in outcomes.values())
    assert report["grown"] <= 300 * 2**20, f"peak memory grew by {report['grown'] / 2**20:.0f} MB"


def test_large_images_are_decoded_reduced(tmp_path):
    from explain.images import reduction_factor

    assert reduction_factor(640, 480) == 1 and reduction_factor(2000, 1500) == 1
    assert reduction_factor(4000, 3000) == 2  # 12 MP: halved to 3 MP
    assert reduction_factor(9000, 9000) == 8  # short side 9000 // 1024
    Image.new("RGB", (4000, 3000), (5, 6, 7)).save(tmp_path / "photo.jpg")
    assert open_image(tmp_path / "photo.jpg").size == (2000, 1500)
    Image.new("P", (6000, 4000)).save(tmp_path / "palette.gif")
    assert open_image(tmp_path / "palette.gif").size == (2000, 1334)  # factor 3, every third pixel


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
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
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

    assert logit_scale_and_bias(Clip()) == (pytest.approx(100.0, rel=1e-4), 0.0)
    assert logit_scale_and_bias(Align()) == (pytest.approx(20.0), 0.0)
    assert logit_scale_and_bias(Siglip()) == (pytest.approx(10.0, rel=1e-4), -10.0)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    random_image(5, size=(64, 64)).save(buffer, format="PNG")
    return buffer.getvalue()
