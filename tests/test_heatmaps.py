"""Where each descriptor matches: ClearCLIP maps checked step by step, the right layer, properties, and the outputs."""

import numpy as np
import pytest
import torch

from explain import Explainer, ExplainError, load_model
from explain.cli import main
from explain.heatmap_drawing import draw_heatmap
from explain.scoring import normalise
from tests.conftest import FROGS, random_image
from tests.tiny_models import save_tiny_align, save_tiny_open_clip, save_tiny_siglip, save_tiny_siglip2


def step_by_step(encoder, image, prompt):
    """The recipe computed from the model's own forward pass: the last block's input is the second-to-last
    hidden state; then query-query attention, the output projection, the final norm and the projection."""
    model = encoder.model
    pixels = encoder.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        states = model.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states
        block = model.vision_model.encoder.layers[-1]
        x = block.layer_norm1(states[-2])[0]  # [tokens, width]
        heads = block.self_attn.num_heads
        d = x.shape[-1] // heads
        q = block.self_attn.q_proj(x).reshape(-1, heads, d).permute(1, 0, 2)
        v = block.self_attn.v_proj(x).reshape(-1, heads, d).permute(1, 0, 2)
        mixed = torch.einsum("hij,hjd->hid", torch.softmax(torch.einsum("hid,hjd->hij", q, q) / d**0.5, dim=-1), v)
        mixed = block.self_attn.out_proj(mixed.permute(1, 0, 2).reshape(-1, heads * d))
        patches = model.visual_projection(model.vision_model.post_layernorm(mixed[1:])).numpy()
        text = encoder.encode_texts([prompt])[0]
    cosine = normalise(patches) @ text
    side = int(round(len(cosine) ** 0.5))
    return (encoder.logit_scale * cosine + encoder.logit_bias).reshape(side, side), states


def test_maps_equal_the_recipe_step_by_step(clip):
    image = random_image(5, size=(48, 40))
    maps = Explainer(clip).heatmaps(image, FROGS, ["tree frog"])
    for entry in maps.entries:
        expected, _ = step_by_step(clip, image, entry.prompt)
        np.testing.assert_allclose(entry.grid, expected, atol=1e-4)


def test_the_class_token_of_the_same_block_gives_the_image_embedding(clip):
    """Run the same block the ordinary way: its class token must be get_image_features, so the maps use the
    last block."""
    image = random_image(6)
    _, states = step_by_step(clip, image, "a photo")
    model = clip.model
    with torch.no_grad():
        out = model.vision_model.encoder.layers[-1](states[-2], attention_mask=None)
        pooled = model.visual_projection(model.vision_model.post_layernorm(out[:, 0]))
        pixels = clip.image_processor(images=[image], return_tensors="pt")["pixel_values"]
        reference = model.get_image_features(pixel_values=pixels).pooler_output
    np.testing.assert_allclose(pooled.numpy(), reference.numpy(), atol=1e-5)


def test_a_map_does_not_depend_on_the_other_prompts(clip):
    explainer = Explainer(clip)
    image = random_image(7)
    together = {(m.class_name, m.descriptor): m.grid for m in explainer.heatmaps(image, FROGS, list(FROGS)).entries}
    alone = explainer.heatmaps(image, FROGS, ["bullfrog"])
    for entry in alone.entries:
        np.testing.assert_allclose(entry.grid, together[("bullfrog", entry.descriptor)], atol=1e-5)


def test_shapes_sizes_and_the_descriptor_alone(clip):
    explainer = Explainer(clip)
    image = random_image(8, size=(80, 40))
    native = explainer.heatmaps(image, FROGS, ["tree frog", "tailed frog"])
    assert native.grids.shape == (7, 4, 4) and native.input_size is None  # 32 px, patches of 8
    assert native.region == (20, 0, 60, 40)  # the centre square the processor kept
    finer = explainer.heatmaps(image, FROGS, ["tree frog"], size=64)
    assert finer.grids.shape == (4, 8, 8) and finer.input_size == 64
    images_before = explainer.images_encoded
    bare = explainer.heatmaps(image, FROGS, ["tree frog"], alone=True)
    assert [m.prompt for m in bare.entries] == FROGS["tree frog"] and bare.alone
    assert explainer.images_encoded == images_before  # cached patch grids: no image forward when switching


def test_what_the_gradient_fallback_cannot_do_is_refused_for_its_reason(tmp_path):
    timm_tower = load_model(str(save_tiny_open_clip(tmp_path / "oc", "timm")), device="cpu")
    with pytest.raises(ExplainError, match="a finer grid for .* its maps come from gradients"):
        Explainer(timm_tower).heatmaps(random_image(1), FROGS, ["tree frog"], size=448)
    packed = load_model(str(tmp_path / "oc"), device="cpu", precision="int8")
    with pytest.raises(ExplainError, match="gradients, which int8's packed weights do not give"):
        Explainer(packed).heatmaps(random_image(1), FROGS, ["tree frog"])


@pytest.mark.parametrize("family", ["siglip", "siglip2"])
def test_attention_pooled_maps_are_the_pool_output_with_its_attention_on_one_location(tmp_path, family):
    """MaskCLIP's value path: at each location, exactly what SigLIP's MAP head gives when the probe's
    attention falls on that location alone (a single key, so its softmax weight is 1)."""
    save = save_tiny_siglip if family == "siglip" else save_tiny_siglip2
    model = load_model(str(save(tmp_path / family)), "cpu", precision="fp32")
    image = random_image(4, size=(80, 60))
    maps = model.patch_embeddings(image)
    tower = model.model.vision_model
    inputs = model.map_inputs(image)
    with torch.no_grad():
        hidden = tower(**inputs).last_hidden_state[0]
        if "pixel_attention_mask" in inputs:
            hidden = hidden[inputs["pixel_attention_mask"][0].bool()]
        alone = torch.cat([tower.head(hidden[j : j + 1][None]) for j in range(hidden.shape[0])]).numpy()
        pooled = tower.head(hidden[None])[0].numpy()
    assert maps.reshape(-1, maps.shape[-1]) == pytest.approx(normalise(alone), abs=1e-5)
    # ... and the head's real output (attention over every location) is the image's embedding.
    assert normalise(pooled[None])[0] == pytest.approx(model.encode_images([image])[0], abs=1e-5)
    heatmaps = Explainer(model).heatmaps(image, FROGS, ["tree frog"])
    assert heatmaps.region == (0, 0, 80, 60)  # SigLIP's processor resizes the whole image, no crop
    assert "MaskCLIP" in heatmaps.method and heatmaps.family == family
    assert heatmaps.record(heatmaps.entries[0])["method"] == heatmaps.method


def test_average_pooled_maps_average_back_to_the_image_feature(tmp_path):
    """ALIGN: the locations' own features, before normalisation, average to the pooled embedding."""
    model = load_model(str(save_tiny_align(tmp_path / "align")), "cpu", precision="fp32")
    image = random_image(5, size=(160, 120))
    inputs = model.map_inputs(image, 128)  # a larger input: a finer grid for a convolutional tower
    with torch.no_grad():
        features = model.model.vision_model(**inputs).last_hidden_state[0]  # [dim, h, w]
        pooled = model.model.get_image_features(pixel_values=inputs["pixel_values"])
        pooled = pooled.pooler_output if hasattr(pooled, "pooler_output") else pooled
    assert features.shape[1] * features.shape[2] > 1
    assert features.mean(dim=(1, 2)).numpy() == pytest.approx(pooled[0].numpy(), abs=1e-5)
    maps = model.patch_embeddings(image, 128)
    assert maps == pytest.approx(normalise(features.permute(1, 2, 0).reshape(-1, features.shape[0]).numpy())
                                 .reshape(maps.shape), abs=1e-5)  # fmt: skip
    heatmaps = Explainer(model).heatmaps(image, FROGS, ["tree frog"], size=128)
    assert heatmaps.method.startswith("each location's feature") and heatmaps.family == "align"


def test_a_scales_ends_are_never_the_same_words():
    from explain.heatmap_drawing import scale_ends

    assert scale_ends(21.386, 25.904) == ("21.39", "25.90")  # real CLIP scores: two decimals
    assert scale_ends(-3.1e-9, 3.4e-9) == ("-3.1e-09", "3.4e-09")  # gradient shares of a layer-normed tower
    assert scale_ends(0.0123, 0.0351) == ("0.0123", "0.0351")


def test_drawn_heatmaps_show_high_and_low_where_they_are():
    image = random_image(9, size=(60, 40)).convert("RGB")
    grid = np.array([[0.0, 10.0], [0.0, 10.0]], dtype=np.float32)  # right half high
    drawn = np.asarray(draw_heatmap(image, grid, 0.0, 10.0, region=(10, 0, 50, 40), alpha=1.0))
    assert drawn.shape == (40 + 28, 60, 3)
    left, right = drawn[20, 14].astype(int), drawn[20, 46].astype(int)
    assert right[0] > 200 and right[1] > 200 and left[2] > left[1]  # yellow at the high side, blue-purple at the low


def test_cli_writes_heatmaps(capsys, clip_dir, image_files, frog_file, tmp_path):
    out = tmp_path / "maps"
    code = main(
        [
            "classify",
            str(image_files[0]),
            "--descriptors",
            str(frog_file),
            "--model",
            str(clip_dir),
            "--heatmaps",
            str(out),
            "--heatmap-size",
            "64",
        ]
    )
    assert code == 0
    stem = image_files[0].stem
    saved = np.load(out / f"{stem}.npz")
    assert saved["grids"].shape[1:] == (8, 8) and saved["grids"].dtype == np.float32
    assert len(saved["prompts"]) == len(saved["grids"]) == len(list(out.glob(f"{stem}-*.png")))
    assert int(saved["input_size"]) == 64
    assert "ClearCLIP" in str(saved["method"]) and str(saved["family"]) == "clip"


def test_cli_tests_each_map_with_faithfulness_for_a_siglip(capsys, siglip_dir, image_files, frog_file, tmp_path):
    out = tmp_path / "maps"
    args = [str(image_files[0]), "--descriptors", str(frog_file), "--model", str(siglip_dir), "--heatmaps", str(out)]
    assert main(["classify", *args, "--faithfulness", "--no-cache"]) == 0
    printed = capsys.readouterr().out
    assert "faithfulness of " in printed and "MaskCLIP" in printed and "median deletion ratio" in printed
    saved = np.load(out / f"{image_files[0].stem}.npz")
    assert len(saved["deletion_ratio"]) == len(saved["grids"]) and "MaskCLIP" in str(saved["method"])
    assert np.isfinite(saved["deletion_auc"]).all() and np.isfinite(saved["insertion_auc"]).all()


def test_maps_follow_the_half_of_the_image_they_describe(clip_dir):
    """With position embeddings zeroed, a patch's embedding depends on its pixels alone: on an image made of
    a red half and a green half, every descriptor's map is one value over the red half and another over the
    green half, whatever the weights. The map follows the content, not the layout of the grid."""
    import copy

    from PIL import Image

    from explain import wrap_model

    base = load_model(str(clip_dir), device="cpu")
    model = copy.deepcopy(base.model)
    with torch.no_grad():
        model.vision_model.embeddings.position_embedding.weight.zero_()
    encoder = wrap_model(model, base.processor, "halves")
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[:, :16] = (220, 30, 30)
    pixels[:, 16:] = (30, 200, 40)
    for entry in Explainer(encoder).heatmaps(Image.fromarray(pixels), FROGS, ["tree frog"]).entries:
        left, right = entry.grid[:, :2], entry.grid[:, 2:]
        assert np.ptp(left) < 1e-4 and np.ptp(right) < 1e-4
        assert abs(left.mean() - right.mean()) > 1e-3


def test_open_clip_vit_maps_equal_the_recipe_from_its_own_forward(tmp_path):
    """For open_clip's own ViT tower: the last block's input is captured from `encode_image` with a hook, the
    recipe is applied to it, and the class token of the same block run the ordinary way gives `encode_image`."""
    encoder = load_model(str(save_tiny_open_clip(tmp_path / "oc", "quickgelu")), device="cpu")
    visual = encoder.model.visual
    image = random_image(4, size=(48, 40))
    captured = {}
    handle = visual.transformer.resblocks[-1].register_forward_pre_hook(
        lambda module, args: captured.setdefault("x", args[0])
    )
    with torch.no_grad():
        pixels = encoder.image_processor(images=[image])["pixel_values"]
        reference = encoder.model.encode_image(pixels)
    handle.remove()
    block = visual.transformer.resblocks[-1]
    with torch.no_grad():
        x = captured["x"]
        ordinary = block(x)
        np.testing.assert_allclose((visual.ln_post(ordinary[:, 0]) @ visual.proj).numpy(), reference.numpy(), atol=1e-5)
        h = block.ln_1(x)[0]
        heads, width = block.attn.num_heads, h.shape[-1]
        d = width // heads
        q = (
            (h @ block.attn.in_proj_weight[:width].T + block.attn.in_proj_bias[:width])
            .reshape(-1, heads, d)
            .permute(1, 0, 2)
        )
        v = (
            (h @ block.attn.in_proj_weight[2 * width :].T + block.attn.in_proj_bias[2 * width :])
            .reshape(-1, heads, d)
            .permute(1, 0, 2)
        )
        mixed = torch.einsum("hij,hjd->hid", torch.softmax(torch.einsum("hid,hjd->hij", q, q) / d**0.5, dim=-1), v)
        patches = (
            visual.ln_post(block.attn.out_proj(mixed.permute(1, 0, 2).reshape(-1, width))[1:]) @ visual.proj
        ).numpy()
    maps = Explainer(encoder).heatmaps(image, FROGS, ["tree frog"])
    side = maps.grids.shape[1]
    for entry in maps.entries:
        expected = (
            encoder.logit_scale * (normalise(patches) @ encoder.encode_texts([entry.prompt])[0]) + encoder.logit_bias
        )
        np.testing.assert_allclose(entry.grid, expected.reshape(side, side), atol=1e-4)


def test_an_average_pooled_open_clip_vit_maps_locations_that_average_to_its_embedding(tmp_path):
    """CLIPA's layout (average pool, final layer norm after the pool): the locations' features, before
    normalisation, average exactly to open_clip's own pooled, projected embedding."""
    model = load_model(str(save_tiny_open_clip(tmp_path / "clipa", "avg")), "cpu", precision="fp32")
    visual = model.model.visual
    assert visual.pool_type == "avg" and visual.final_ln_after_pool
    image = random_image(6, size=(48, 40))
    pixels = model.image_processor(images=[image])["pixel_values"]
    with torch.no_grad():
        features = model.location_features(pixels).numpy()
        expected = visual(pixels)[0].numpy()  # open_clip's own forward: pool, layer norm, projection
    assert features.reshape(-1, features.shape[-1]).mean(axis=0) == pytest.approx(expected, abs=1e-5)
    heatmaps = Explainer(model).heatmaps(image, FROGS, ["tree frog"])
    assert heatmaps.method.startswith("each location's feature") and heatmaps.entries[0].grid.shape == (4, 4)


def test_an_attention_pooled_resnet_maps_the_pool_with_its_attention_on_one_location(tmp_path):
    """OpenAI's RN50 layout: at each location, the value path equals the attention pool's own computation
    (torch's multi-head attention with the pool's weights) when its only key is that location."""
    import torch.nn.functional as F

    model = load_model(str(save_tiny_open_clip(tmp_path / "rn", "resnet")), "cpu", precision="fp32")
    visual = model.model.visual
    image = random_image(7, size=(80, 64))
    pixels = model.image_processor(images=[image])["pixel_values"]
    maps = model.patch_embeddings(image)
    pool = visual.attnpool
    with torch.no_grad():
        x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(pixels)))))
        x = x.flatten(2).permute(2, 0, 1)  # (HW)NC, as the pool reads it
        x = torch.cat([x.mean(dim=0, keepdim=True), x]) + pool.positional_embedding[:, None, :]
        alone = []
        for t in range(1, x.shape[0]):
            out, _ = F.multi_head_attention_forward(
                query=x[:1], key=x[t : t + 1], value=x[t : t + 1], embed_dim_to_check=x.shape[-1],
                num_heads=pool.num_heads, q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight,
                v_proj_weight=pool.v_proj.weight, in_proj_weight=None,
                in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]), bias_k=None,
                bias_v=None, add_zero_attn=False, dropout_p=0.0, out_proj_weight=pool.c_proj.weight,
                out_proj_bias=pool.c_proj.bias, use_separate_proj_weight=True, training=False, need_weights=False,
            )  # fmt: skip
            alone.append(out[0, 0])
    assert maps.shape[:2] == (2, 2)
    assert maps.reshape(-1, maps.shape[-1]) == pytest.approx(normalise(torch.stack(alone).numpy()), abs=1e-5)
    heatmaps = Explainer(model).heatmaps(image, FROGS, ["tree frog"])
    assert "MaskCLIP" in heatmaps.method and heatmaps.family == "open_clip ModifiedResNet"


@pytest.mark.parametrize("variant", ["coca", "coca-parallel"])
def test_an_attention_pooled_open_clip_vit_maps_its_pooler_with_one_location(tmp_path, variant):
    """CoCa's layouts: open_clip's attentional pooler (256 queries, the first one's output normalised and
    projected is the embedding), or the paper's contrastive pooler beside it. At each patch the value path
    equals open_clip's own pooling code (`_pool`, then the projection) given that patch as its only token;
    given every token, the same code gives open_clip's embedding."""
    model = load_model(str(save_tiny_open_clip(tmp_path / variant, variant)), "cpu", precision="fp32")
    visual = model.model.visual
    assert type(model.model).__name__ == "CoCa" and visual.attn_pool is not None

    def pooled(tokens):
        return visual._pool(tokens)[0].reshape(len(tokens), -1) @ visual.proj

    image = random_image(9, size=(48, 40))
    pixels = model.image_processor(images=[image])["pixel_values"]
    with torch.no_grad():
        tokens = visual.transformer(visual._embeds(pixels))  # [1, 1 + patches, width]
        alone = [pooled(tokens[:, t : t + 1])[0] for t in range(1, tokens.shape[1])]
        features = model.location_features(pixels)
        embedding = model.model.encode_image(pixels, normalize=False).reshape(-1)
        whole = pooled(tokens)[0]
    assert whole.numpy() == pytest.approx(embedding.numpy(), abs=1e-5)
    assert features.reshape(len(alone), -1).numpy() == pytest.approx(torch.stack(alone).numpy(), abs=1e-5)
    heatmaps = Explainer(model).heatmaps(image, FROGS, ["tree frog"])
    assert "MaskCLIP" in heatmaps.method and heatmaps.entries[0].grid.shape == (4, 4)


def test_a_timm_map_head_maps_its_head_with_one_location(tmp_path):
    """open_clip's SigLIP layout (a timm ViT, no class token, a MAP head): at each patch the value path
    equals timm's own attention-pool head with that patch as its only key, then the trunk's head."""
    model = load_model(str(save_tiny_open_clip(tmp_path / "sig", "siglip")), "cpu", precision="fp32")
    trunk = model.model.visual.trunk
    image = random_image(10, size=(40, 48))
    pixels = model.image_processor(images=[image])["pixel_values"]
    with torch.no_grad():
        tokens = trunk.forward_features(pixels)  # [1, patches, width]
        assert trunk.forward_head(tokens)[0].numpy() == pytest.approx(
            model.model.encode_image(pixels)[0].numpy(), abs=1e-5
        )
        alone = [trunk.forward_head(tokens[:, t : t + 1])[0] for t in range(tokens.shape[1])]
        features = model.location_features(pixels)
    assert features.reshape(len(alone), -1).numpy() == pytest.approx(torch.stack(alone).numpy(), abs=1e-5)
    heatmaps = Explainer(model).heatmaps(image, FROGS, ["tree frog"])
    assert "MaskCLIP" in heatmaps.method and heatmaps.family == "open_clip TimmModel VisionTransformer"


def test_a_timm_eva_tower_maps_clearclip_through_its_rotary_attention(tmp_path):
    """EVA02's layout through timm: the last block's query-query attention, computed here by hand (query
    projection and norm, rotary embeddings on the patches, softmax, values, the inner norm, the output
    projection and the layer scale), then the trunk's final norm, head and open_clip's projection."""
    from timm.layers import apply_rot_embed_cat

    model = load_model(str(save_tiny_open_clip(tmp_path / "eva", "eva")), "cpu", precision="fp32")
    trunk = model.model.visual.trunk
    image = random_image(11, size=(48, 48))
    pixels = model.image_processor(images=[image])["pixel_values"]
    with torch.no_grad():
        x, rope = trunk._pos_embed(trunk.patch_embed(pixels))
        x = trunk.norm_pre(x)
        for block in trunk.blocks[:-1]:
            x = block(x, rope=rope)
        last, prefix = trunk.blocks[-1], trunk.num_prefix_tokens
        assert trunk.norm(last(x, rope=rope))[0, 0] @ trunk.head.weight.T + trunk.head.bias == pytest.approx(
            model.model.encode_image(pixels)[0], abs=1e-5
        )  # the embedding is the class token's, through these steps
        attention, h = last.attn, last.norm1(x)
        heads = attention.num_heads
        split = lambda t: t.reshape(1, t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
        q, v = attention.q_norm(split(attention.q_proj(h))), split(attention.v_proj(h))
        q = torch.cat([q[:, :, :prefix], apply_rot_embed_cat(q[:, :, prefix:], rope)], dim=2)
        mixed = torch.softmax(q @ q.transpose(-1, -2) * attention.scale, dim=-1) @ v
        mixed = attention.proj(attention.norm(mixed.transpose(1, 2).reshape(1, h.shape[1], -1)))
        if last.gamma_1 is not None:
            mixed = last.gamma_1 * mixed
        expected = trunk.head(trunk.fc_norm(trunk.norm(mixed[0, prefix:])))
        features = model.location_features(pixels)
    assert features.reshape(expected.shape).numpy() == pytest.approx(expected.numpy(), abs=1e-5)
    heatmaps = Explainer(model).heatmaps(image, FROGS, ["tree frog"])
    assert heatmaps.method.startswith("ClearCLIP") and heatmaps.family == "open_clip TimmModel Eva"


def gradient_share(encoder, image, prompt, block) -> np.ndarray:
    """One descriptor's gradient × activation at `block`'s input, by one plain backward pass of its own
    score: the last block's input made a leaf, scale · cos(image, prompt), summed over channels."""
    pixels = encoder.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    text = torch.from_numpy(encoder.encode_texts([prompt])[0])
    seen = {}

    def leaf(module, args):
        seen["a"] = args[0].detach().requires_grad_(True)
        return (seen["a"], *args[1:])

    handle = block.register_forward_pre_hook(leaf)
    try:
        embed = encoder.model.encode_image if hasattr(encoder.model, "encode_image") else None
        if embed is None:
            output = encoder.model.get_image_features(pixel_values=pixels)
            image_embedding = output.pooler_output if hasattr(output, "pooler_output") else output
        else:
            image_embedding = embed(pixels)
        score = encoder.logit_scale * torch.nn.functional.normalize(image_embedding, dim=-1)[0] @ text
        (grad,) = torch.autograd.grad(score, seen["a"])
    finally:
        handle.remove()
    share = (grad * seen["a"]).sum(dim=-1)[0].detach().numpy()  # [tokens]
    side = int(len(share) ** 0.5)
    return share[len(share) - side * side :].reshape(side, side)


def test_the_gradient_fallback_equals_each_descriptors_own_backward_pass(tmp_path):
    """A tower no training-free recipe follows (a timm ViT averaged and normalised after the pool): every
    map equals gradient × activation from that descriptor's own backward pass, though all of them come from
    batched passes over the embedding's dimensions; the maps carry no bias and say so."""
    from explain.models.gradient_maps import last_block

    model = load_model(str(save_tiny_open_clip(tmp_path / "timm", "timm")), "cpu", precision="fp32")
    assert model.map_recipe == "gradient"
    path, block = last_block(model.model.visual)
    assert path == "trunk.blocks.11"
    image = random_image(12, size=(64, 48))
    heatmaps = Explainer(model).heatmaps(image, FROGS, ["tree frog", "tailed frog"])
    assert heatmaps.grids.shape[1:] == (14, 14) and "gradient" in heatmaps.method
    assert "without the bias" in heatmaps.units and heatmaps.record(heatmaps.entries[0])["units"] == heatmaps.units
    assert not heatmaps.bar_units and not model.map_in_bar_units
    for entry in heatmaps.entries:
        expected = gradient_share(model, image, entry.prompt, block)
        np.testing.assert_allclose(entry.grid, expected, rtol=1e-3, atol=1e-6 * np.abs(expected).max())


def test_the_gradient_fallback_follows_a_transformers_tower_too(clip, monkeypatch):
    """The fallback knows towers only through their last block: on transformers' CLIP (made to take it) the
    maps equal each descriptor's own backward pass at `encoder.layers[-1]`."""
    from explain.models.gradient_maps import last_block
    from explain.models.transformers_backend import TransformersModel

    monkeypatch.setattr(TransformersModel, "map_recipe", property(lambda self: "gradient"))
    path, block = last_block(clip.model.vision_model)
    assert path == "encoder.layers.1"
    image = random_image(13, size=(40, 40))
    heatmaps = Explainer(clip).heatmaps(image, FROGS, ["tree frog"])
    for entry in heatmaps.entries:
        expected = gradient_share(clip, image, entry.prompt, block)
        # Through the final layer norm, which ignores scale, the shares mostly cancel (~1e-5 logits here):
        # float32 shows at a few percent of the largest (full-size ViT-B/32: 1.7% forward, 2.7% reverse mode,
        # against float64), so the check is against the map's own scale.
        np.testing.assert_allclose(entry.grid, expected, atol=0.06 * np.abs(expected).max())
        assert np.corrcoef(entry.grid.ravel(), expected.ravel())[0, 1] > 0.995


def test_forward_and_reverse_differentiation_give_the_same_shares(tmp_path, clip):
    """The fallback's two ways to the same M: forward mode (one row per location, what runs) and reverse mode
    (one row per embedding dimension, for towers with an operation torch cannot differentiate forward)."""
    from explain.models.gradient_maps import _forward_mode, last_block, reverse_mode

    timm_tower = load_model(str(save_tiny_open_clip(tmp_path / "timm", "timm")), "cpu", precision="fp32")
    image = random_image(14, size=(50, 40))
    cases = [
        (timm_tower.model.encode_image, timm_tower.model.visual, timm_tower.preprocess([image])["pixel_values"]),
        (lambda batch: clip.model.get_image_features(pixel_values=batch).pooler_output, clip.model.vision_model,
         clip.pixels_at(image)),
    ]  # fmt: skip
    for embed, tower, pixels in cases:
        _, block = last_block(tower)
        forward, reverse = _forward_mode(embed, block, pixels), reverse_mode(embed, block, pixels, chunk=5)
        assert forward.shape == reverse.shape and np.abs(reverse).max() > 0
        np.testing.assert_allclose(forward, reverse, atol=0.06 * np.abs(reverse).max())  # float32 (see above)
        assert np.corrcoef(forward.ravel(), reverse.ravel())[0, 1] > 0.995


def test_a_timm_vit_with_a_fused_projection_maps_clearclip_too(tmp_path):
    """timm's plain ViT pooled by its class token: one fused query-key-value projection, whose key rows the
    recipe's copy overwrites with the query's. By hand: q and v from the fused weights, query-query
    attention, the output projection and the layer scale, then the trunk's norms and head; the model's
    own weights are left as they were."""
    model = load_model(str(save_tiny_open_clip(tmp_path / "vit", "timm-token")), "cpu", precision="fp32")
    trunk = model.model.visual.trunk
    before = trunk.blocks[-1].attn.qkv.weight.detach().clone()
    image = random_image(15, size=(40, 40))
    pixels = model.image_processor(images=[image])["pixel_values"]
    with torch.no_grad():
        x = trunk.norm_pre(trunk._pos_embed(trunk.patch_embed(pixels)))
        for block in trunk.blocks[:-1]:
            x = block(x)
        last = trunk.blocks[-1]
        attention, h = last.attn, last.norm1(x)
        heads, width = attention.num_heads, h.shape[-1]
        q, _, v = (h @ attention.qkv.weight.T + attention.qkv.bias).split(width, dim=-1)
        split = lambda t: t.reshape(1, t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
        q, v = attention.q_norm(split(q)), split(v)
        mixed = torch.softmax(q @ q.transpose(-1, -2) * attention.scale, dim=-1) @ v
        mixed = last.ls1(attention.proj(attention.norm(mixed.transpose(1, 2).reshape(1, h.shape[1], width))))
        expected = trunk.head(trunk.fc_norm(trunk.norm(mixed[0, trunk.num_prefix_tokens :])))
        features = model.location_features(pixels)
    assert features.reshape(expected.shape).numpy() == pytest.approx(expected.numpy(), abs=1e-5)
    assert torch.equal(trunk.blocks[-1].attn.qkv.weight, before)
    assert Explainer(model).heatmaps(image, FROGS, ["tree frog"]).method.startswith("ClearCLIP")


def test_a_block_off_the_way_to_the_embedding_is_refused_in_words():
    from explain.errors import HeatmapsUnavailable
    from explain.models.gradient_maps import gradient_features, reverse_mode

    used, unused = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, 4, 1)
    embed = lambda pixels: used(pixels).mean(dim=(2, 3))  # noqa: E731
    pixels = torch.rand(1, 3, 4, 4)
    for find in (gradient_features, reverse_mode):
        with pytest.raises(HeatmapsUnavailable, match="not on the way to the image embedding"):
            find(embed, unused, pixels)
    assert gradient_features(embed, used, pixels).shape == (4, 4, 4)  # a 4x4 grid of 4-dimensional shares
