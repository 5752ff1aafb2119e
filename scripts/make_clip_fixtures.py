#!/usr/bin/env python3
"""Fixtures for the CLIP parity tests (tests/clip.rs), made with Hugging Face `transformers`.

- `tokenizer/vocab.json`, `tokenizer/merges.txt`: OpenAI's CLIP BPE (the file open_clip ships,
  `bpe_simple_vocab_16e6.txt.gz`, which is what `openai/clip-vit-base-patch32`'s vocab.json and
  merges.txt hold), cut to its first MERGES merges so the fixture stays small; vocab order as
  OpenAI's SimpleTokenizer and Hugging Face build it (256 byte symbols, the same with `</w>`,
  one per merge, then `<|startoftext|>`, `<|endoftext|>`).
- `tokenizer/expected.json`: prompts and the ids `CLIPTokenizerFast` gives them (truncated at 77).
- `model/config.json`, `model/model.safetensors`: a tiny `CLIPModel` with seeded weights
  (Hugging Face's config and state_dict names, as the published checkpoint has them).
- `model/expected.safetensors`: pixel values and token ids in, image and text features
  (projected, not normalised) and logits per image out.

Run from the repository root with torch and transformers installed (a venv outside the repo):
    python scripts/make_clip_fixtures.py
"""
import gzip
import json
import os

import torch
from safetensors.torch import save_file

MERGES = 4000
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "clip")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def tokenizer_fixture():
    import open_clip
    from transformers import CLIPTokenizerFast

    src = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    merges = gzip.open(src).read().decode("utf-8").split("\n")[1 : 1 + MERGES]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    d = os.path.join(OUT, "tokenizer")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({v: i for i, v in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizerFast.from_pretrained(d)
    prompts = [
        "a photo of a snuff box",
        "A painting of the Madonna and Child",
        "Harbour at sunset",
        "Café naïve façade, Düsseldorf; Ærø — São Paulo",
        "  tabs\tand\nnewlines   collapse  ",
        "it's the artist's wife, isn't it? They're here; we'll see!!!",
        "1880s oil-on-canvas (44.5 x 60 cm) #42 $100 50% off...",
        "日本の浮世絵 and 中国山水画",
        "emoji 🎨🖼️ and symbols ©®™",
        "ÉCOLE FRANÇAISE",
        "",
        " ".join(["a very long description of a painting"] * 20),
    ]
    expected = [{"text": p, "ids": tok(p, truncation=True, max_length=77)["input_ids"]} for p in prompts]
    with open(os.path.join(d, "expected.json"), "w", encoding="utf-8") as f:
        f.write('{"merges": %d, "cases": [\n' % MERGES)
        f.write(",\n".join(json.dumps(c, ensure_ascii=False) for c in expected))
        f.write("\n]}\n")


def model_fixture():
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    vocab, eot = 1000, 999
    cfg = CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, eos_token_id=eot,
                         bos_token_id=eot - 1, pad_token_id=eot),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    model = CLIPModel(cfg).eval()
    # Default init leaves biases and layer norms at 0/1: give every parameter seeded values so
    # each one matters to the outputs.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                continue
            scale = 0.2 if p.dim() >= 2 else 0.1
            base = 1.0 if name.endswith("layer_norm1.weight") or name.endswith("layer_norm2.weight") or "layrnorm.weight" in name or "layernorm.weight" in name or name.endswith("final_layer_norm.weight") else 0.0
            p.copy_(base + scale * torch.randn_like(p))
    d = os.path.join(OUT, "model")
    os.makedirs(d, exist_ok=True)
    cfg.save_pretrained(d)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if "position_ids" not in k}
    save_file(state, os.path.join(d, "model.safetensors"))

    pixels = torch.randn(2, 3, 32, 32)
    g = torch.Generator().manual_seed(1)
    lengths = [5, 12, 1]
    ids = torch.full((3, 16), eot, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, 0] = eot - 1
        ids[i, 1 : 1 + n] = torch.randint(0, eot - 1, (n,), generator=g)
        ids[i, 1 + n] = eot  # pooled here; the rest is padding with the same token
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels)
        # The model's own normalised embeddings agree with the projections below.
        assert torch.allclose(out.image_embeds.norm(dim=-1), torch.ones(2))
        vision = model.vision_model(pixel_values=pixels)
        text = model.text_model(input_ids=ids)
        image_features = model.visual_projection(vision.pooler_output)
        text_features = model.text_projection(text.pooler_output)
    save_file(
        {
            "pixel_values": pixels,
            "input_ids": ids.to(torch.int64),
            "image_features": image_features.contiguous(),
            "text_features": text_features.contiguous(),
            "vision_last_hidden": vision.last_hidden_state.contiguous(),
            "logits_per_image": out.logits_per_image.contiguous(),
        },
        os.path.join(d, "expected.safetensors"),
    )


if __name__ == "__main__":
    tokenizer_fixture()
    model_fixture()
