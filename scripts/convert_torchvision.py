#!/usr/bin/env python3
"""One-off conversion of torchvision's ImageNet weights to safetensors, with torchvision's names.

    python3 -m venv ~/torchvenv && ~/torchvenv/bin/pip install torch torchvision safetensors
    ~/torchvenv/bin/python scripts/convert_torchvision.py alexnet weights/alexnet.safetensors

Needs internet once (torchvision downloads its .pth file); artculture itself never runs this.
"""
import sys

import torch
import torchvision
from safetensors.torch import save_file

BUILDERS = {
    "alexnet": (torchvision.models.alexnet, "AlexNet_Weights"),
    "resnet50": (torchvision.models.resnet50, "ResNet50_Weights"),
    "vgg16_bn": (torchvision.models.vgg16_bn, "VGG16_BN_Weights"),
}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in BUILDERS:
        raise SystemExit(f"usage: {sys.argv[0]} {{{'|'.join(BUILDERS)}}} OUT.safetensors")
    build, weights = BUILDERS[sys.argv[1]]
    model = build(weights=getattr(torchvision.models, weights).IMAGENET1K_V1)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(state, sys.argv[2])
    print(f"wrote {sys.argv[2]}: {len(state)} tensors")


if __name__ == "__main__":
    main()
