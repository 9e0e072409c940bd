"""Small random CLIP-family checkpoints built offline, for tests and benchmarks.

No weights can be downloaded here, so these build the real transformers
classes from configs with CLIP's real BPE tokenizer, built in memory from the
merge list in assets/tokenizer, then save
them to a directory so that callers load them through `from_pretrained`,
exactly as a user's checkpoint would be. Random weights make rankings
meaningless; they exercise mechanics and parity, not accuracy.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import torch
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
    SiglipProcessor,
)

from descriptors.tokens import byte_alphabet, clip_tokenizer

IMAGE_SIZE = 32
ALIGN_DIM = 32


def clip_bpe_tokenizer() -> CLIPTokenizer:
    """CLIP's real tokenizer (from the shipped BPE merges), as a private copy callers may modify."""
    return copy.deepcopy(clip_tokenizer())


def clip_config(tokenizer: CLIPTokenizer, **sizes) -> CLIPConfig:
    """A CLIP config sized by `sizes`; the defaults are tiny. `full=True` gives ViT-B/32 sizes."""
    special = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        "pad_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    }
    if sizes.pop("full", False):
        return CLIPConfig(text_config=special)
    text = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=8,
    )
    return CLIPConfig(text_config={**text, **special}, vision_config=vision, projection_dim=16, **sizes)


def clip_processor(tokenizer: CLIPTokenizer, image_size: int = IMAGE_SIZE) -> CLIPProcessor:
    images = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return CLIPProcessor(image_processor=images, tokenizer=tokenizer)


def save_tiny_clip(directory: Path, seed: int = 0) -> Path:
    """A tiny random CLIP with CLIP's real logit scale (100) saved to `directory`."""
    torch.manual_seed(seed)
    tokenizer = clip_bpe_tokenizer()
    model = CLIPModel(clip_config(tokenizer, logit_scale_init_value=math.log(100.0))).eval()
    model.save_pretrained(directory)
    clip_processor(tokenizer).save_pretrained(directory)
    return directory


def save_tiny_siglip(directory: Path, seed: int = 0) -> Path:
    """A tiny random SigLIP (sigmoid loss, logit scale and bias) saved to `directory`."""
    torch.manual_seed(seed)
    tokenizer = clip_bpe_tokenizer()
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=8,
    )
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).eval()
    with torch.no_grad():  # trained SigLIP has a large scale and a negative bias; random init has neither
        model.logit_scale.fill_(math.log(110.0))
        model.logit_bias.fill_(-12.0)
    model.save_pretrained(directory)
    tokenizer.model_max_length = 64
    images = SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    SiglipProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def _letters_and_words() -> list[str]:
    """A small word list that covers the test prompts well enough; anything else becomes unknown."""
    words = (
        "a an the of photo which is has often can may typically used tree tailed frog bull newt eyes green colour body"
    )
    return [*words.split(), *"abcdefghijklmnopqrstuvwxyz", ",", ".", "-"]


def save_tiny_align(directory: Path, seed: int = 0) -> Path:
    """A tiny random ALIGN (BERT text tower, EfficientNet image tower, a learned temperature)."""
    from transformers import AlignConfig, AlignModel, AlignProcessor, BertTokenizer, EfficientNetImageProcessor

    torch.manual_seed(seed)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {
        token: i
        for i, token in enumerate([*specials, *_letters_and_words(), *("##" + c for c in "abcdefghijklmnopqrstuvwxyz")])
    }
    tokenizer = BertTokenizer(vocab=vocab, model_max_length=64)
    # A wide initialisation keeps the tiny BERT's sentence embeddings apart, so parity checks have something to see.
    text = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        initializer_range=0.5,
    )
    # ALIGN scores the vision tower's pooled output directly, so its width must equal the text projection.
    vision = dict(image_size=IMAGE_SIZE, hidden_dim=ALIGN_DIM, width_coefficient=0.1, depth_coefficient=0.1)
    model = AlignModel(
        AlignConfig(text_config=text, vision_config=vision, projection_dim=ALIGN_DIM, temperature_init_value=0.05)
    ).eval()
    with torch.no_grad():  # the default init shrinks activations to ~1e-30 through a narrow EfficientNet
        for module in model.vision_model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight)
    model.save_pretrained(directory)
    images = EfficientNetImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False)
    AlignProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def save_tiny_altclip(directory: Path, seed: int = 0) -> Path:
    """A tiny random AltCLIP (XLM-R text tower with a unigram tokenizer, CLIP image tower)."""
    from transformers import AltCLIPConfig, AltCLIPModel, AltCLIPProcessor, XLMRobertaTokenizer

    torch.manual_seed(seed)
    pieces = [
        "<s>",
        "<pad>",
        "</s>",
        "<unk>",
        "<mask>",
        *("▁" + w for w in _letters_and_words()),
        *_letters_and_words(),
        "▁",
    ]
    tokenizer = XLMRobertaTokenizer(vocab=[(p, -float(i)) for i, p in enumerate(pieces)], model_max_length=64)
    text = dict(
        vocab_size=len(pieces),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=80,
        project_dim=16,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        initializer_range=0.5,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=8,
    )
    model = AltCLIPModel(
        AltCLIPConfig(text_config=text, vision_config=vision, projection_dim=16, logit_scale_init_value=math.log(100.0))
    ).eval()
    model.save_pretrained(directory)
    AltCLIPProcessor(
        image_processor=clip_processor(clip_bpe_tokenizer()).image_processor, tokenizer=tokenizer
    ).save_pretrained(directory)
    return directory


def save_tiny_siglip2(directory: Path, seed: int = 0) -> Path:
    """A tiny random SigLIP 2 (NaFlex: variable patch grids with a pixel attention mask, Gemma tokenizer)."""
    from transformers import GemmaTokenizer, Siglip2Config, Siglip2ImageProcessor, Siglip2Model, Siglip2Processor

    torch.manual_seed(seed)
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    vocab = {token: i for i, token in enumerate([*specials, *byte_alphabet(), "▁"])}
    tokenizer = GemmaTokenizer(vocab=vocab, merges=[], model_max_length=64)
    text = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
    )
    # The processor's own defaults (16-pixel patches, up to 256 of them) are those of the released checkpoints.
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_patches=256, patch_size=16
    )
    model = Siglip2Model(Siglip2Config(text_config=text, vision_config=vision)).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(110.0))
        model.logit_bias.fill_(-12.0)
    model.save_pretrained(directory)
    Siglip2Processor(image_processor=Siglip2ImageProcessor(), tokenizer=tokenizer).save_pretrained(directory)
    return directory


def full_size_clip(seed: int = 0) -> tuple[CLIPModel, CLIPProcessor]:
    """ViT-B/32 at its real sizes (CLIPConfig defaults) with random weights, for benchmarks."""
    torch.manual_seed(seed)
    tokenizer = clip_bpe_tokenizer()
    model = CLIPModel(clip_config(tokenizer, full=True)).eval()
    return model, CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer)


# --- open_clip ---------------------------------------------------------------------------------------------------

OPEN_CLIP_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
OPEN_CLIP_VIT = {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16}  # a 4x4 grid
OPEN_CLIP_CONFIGS = {
    # A CLIP-style tower trained with QuickGELU, as OpenAI's and DFN's weights were.
    "quickgelu": {
        "embed_dim": 16,
        "quick_gelu": True,
        "text_cfg": OPEN_CLIP_TEXT,
        "vision_cfg": OPEN_CLIP_VIT,
    },
    # A sigmoid-loss model with a logit bias, as SigLIP has.
    "bias": {
        "embed_dim": 16,
        "init_logit_bias": -10.0,
        "init_logit_scale": 2.3,
        "text_cfg": OPEN_CLIP_TEXT,
        "vision_cfg": OPEN_CLIP_VIT,
    },
    # A ViT pooled by averaging its patch tokens, normalised after pooling, as CLIPA's is.
    "avg": {
        "embed_dim": 16,
        "text_cfg": OPEN_CLIP_TEXT,
        "vision_cfg": {**OPEN_CLIP_VIT, "no_ln_pre": True, "pool_type": "avg", "final_ln_after_pool": True},
    },
    # A ResNet pooled by attention, as OpenAI's RN50 is (stride 32: a 2x2 grid at 64 px).
    "resnet": {
        "embed_dim": 16,
        "text_cfg": OPEN_CLIP_TEXT,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
    },
    # A ViT pooled by an attentional pooler of 256 queries, the first one's output the embedding, as CoCa's is.
    "coca": {
        "embed_dim": 16,
        "custom_text": True,
        "text_cfg": {**OPEN_CLIP_TEXT, "embed_cls": True, "output_tokens": True},
        "vision_cfg": {**OPEN_CLIP_VIT, "attentional_pool": True, "attn_pooler_heads": 2, "output_tokens": True},
        "multimodal_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    },
    # The same with the pooling the CoCa paper describes: a contrastive pooler of one query beside the
    # captioning one, both over the normalised tokens ("parallel"). open_clip 3.3 runs it only where the
    # tower's width is the embedding's size (its final norm is built for the one and applied to the other).
    "coca-parallel": {
        "embed_dim": 32,
        "custom_text": True,
        "text_cfg": {**OPEN_CLIP_TEXT, "embed_cls": True, "output_tokens": True},
        "vision_cfg": {**OPEN_CLIP_VIT, "attentional_pool": "parallel", "attn_pooler_heads": 2, "output_tokens": True},
        "multimodal_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    },
    # A timm Eva tower pooled by its class token, built as EVA02-CLIP's (rotary embeddings, SwiGLU, an inner
    # attention norm, separate query, key and value projections), at a tiny size.
    "eva": {
        "embed_dim": 16,
        "text_cfg": OPEN_CLIP_TEXT,
        "vision_cfg": {
            "image_size": 32,
            "timm_model_name": "descry_tiny_eva",
            "timm_model_pretrained": False,
            "timm_pool": "token",
            "timm_proj": None,
        },
    },
    # A timm ViT pooled by its class token (fused query-key-value projection), as timm's CLIP ViTs are.
    "timm-token": {
        "embed_dim": 16,
        "text_cfg": OPEN_CLIP_TEXT,
        "vision_cfg": {
            "image_size": 32,
            "timm_model_name": "descry_tiny_vit",
            "timm_model_pretrained": False,
            "timm_pool": "token",
            "timm_proj": None,
        },
    },
    # A timm ViT pooled by a MAP head, with no class token, as open_clip's SigLIP towers are.
    "siglip": {
        "embed_dim": 32,
        "init_logit_bias": -10.0,
        "text_cfg": OPEN_CLIP_TEXT,
        "vision_cfg": {
            "image_size": 32,
            "timm_model_name": "descry_tiny_siglip",
            "timm_model_pretrained": False,
            "timm_pool": "map",
            "timm_proj": "none",
        },
    },
    # A timm ViT pooled by averaging its tokens, with a norm after the pool: no training-free recipe, so its
    # maps come from gradients.
    "timm": {
        "embed_dim": 16,
        "text_cfg": OPEN_CLIP_TEXT,
        "vision_cfg": {
            "image_size": 224,
            "timm_model_name": "vit_tiny_patch16_224",
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": "linear",
            "patch_size": 16,
        },
    },
}


def register_tiny_timm_towers() -> None:
    """Tiny timm trunks for the open_clip configs above, registered with timm under descry_tiny_* names (they
    exist in this process only, as a user's own timm registration would)."""
    from timm.models import register_model
    from timm.models._registry import is_model
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer

    if is_model("descry_tiny_eva"):
        return

    @register_model
    def descry_tiny_eva(pretrained: bool = False, **kwargs) -> Eva:
        shape = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, ref_feat_shape=(4, 4))
        style = dict(qkv_fused=False, mlp_ratio=4 * 2 / 3, swiglu_mlp=True, scale_mlp=True, scale_attn_inner=True)
        return Eva(**shape, **style, use_rot_pos_emb=True, **_built(kwargs))

    @register_model
    def descry_tiny_vit(pretrained: bool = False, **kwargs) -> VisionTransformer:
        shape = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
        return VisionTransformer(**shape, init_values=0.5, **_built(kwargs))

    @register_model
    def descry_tiny_siglip(pretrained: bool = False, **kwargs) -> VisionTransformer:
        shape = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
        return VisionTransformer(**shape, class_token=False, **_built(kwargs))


def _built(options: dict) -> dict:
    """What open_clip asks of a timm trunk (its head and pool), without timm's registry bookkeeping."""
    return {key: options[key] for key in ("num_classes", "global_pool") if key in options}


def save_tiny_open_clip(path: Path, variant: str = "quickgelu", seed: int = 0) -> Path:
    """A tiny random open_clip model saved as open_clip's local-dir layout: open_clip_config.json and weights.

    The architecture is registered with `open_clip.add_model_config`, built with
    `create_model(name, pretrained=None)`, and saved the way hub repositories are.
    """
    import open_clip
    from open_clip.push_to_hf_hub import save_config_for_hf
    from safetensors.torch import save_file

    register_tiny_timm_towers()
    config = OPEN_CLIP_CONFIGS[variant]
    name = f"descry-tiny-{variant}"
    registry = path.parent / f"{path.name}-config"
    registry.mkdir(parents=True, exist_ok=True)
    (registry / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(registry / f"{name}.json")
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    path.mkdir(parents=True, exist_ok=True)
    save_config_for_hf(model, path / "open_clip_config.json", config)
    save_file(
        {key: value.contiguous() for key, value in model.state_dict().items()},
        str(path / "open_clip_model.safetensors"),
    )
    return path
