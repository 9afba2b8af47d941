#!/usr/bin/env bash
# Gather, on this machine, what a lent GPU machine lacks to run the benchmarks: wheels into .gpu-kit/wheels
# (Python 3.12, x86-64), and with a diffusers git directory diffusers' two example LoRA trainers for bench/peers.py.
#
#   bash bench/gpu_kit.sh [DIFFUSERS_GIT_DIR]
#
# The H200 image (torch 2.11 for CUDA 13, transformers, peft, accelerate, safetensors, tokenizers, torchvision) has no
# diffusers, pydantic, ruamel.yaml, optimum-quanto, torchao, bitsandbytes or prodigyopt; torchao 0.17 is the release
# built for torch 2.11. bitsandbytes' wheel (43 MB) holds a library for every CUDA release: it is unpacked into
# .gpu-kit/site with the CUDA 13 ones only (put that folder on PYTHONPATH). lycoris-lora and the UI's packages are left
# out: no benchmark of bench/gpu_goals.py imports them.
# .gpu-kit/ is ignored by git; name it in the device call's carry (docs/PERFORMANCE.md has the whole command).
set -euo pipefail
cd "$(dirname "$0")/.."
kit=.gpu-kit
mkdir -p "$kit/wheels"
wheels=(diffusers==0.42.1 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
        ruamel.yaml==0.19.1 optimum-quanto==0.2.7 torchao==0.17.0 prodigyopt==1.1.2)
download() {
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$@"
}
download "$kit/wheels" "${wheels[@]}"
rm -rf "$kit/site" "$kit/bnb"
download "$kit/bnb" bitsandbytes==0.50.2
python3 -m zipfile -e "$kit"/bnb/bitsandbytes-*.whl "$kit/site"
find "$kit/site/bitsandbytes" -name 'libbitsandbytes_*.so' ! -name 'libbitsandbytes_cuda13*.so' ! -name 'libbitsandbytes_cpu.so' -delete
rm -rf "$kit/bnb"
if [ $# -ge 1 ]; then
    mkdir -p "$kit/diffusers/examples/dreambooth"
    for script in train_dreambooth_lora_sdxl.py train_dreambooth_lora_z_image.py; do
        git --git-dir "$1" show "HEAD:examples/dreambooth/$script" > "$kit/diffusers/examples/dreambooth/$script"
    done
fi
du -sh "$kit"
ls "$kit/wheels"
