#!/bin/sh
# Shrink a venv holding PyPI's CUDA build of torch into what a CPU-only run loads (trainer image
# Dockerfile, CUDA_PRUNE=1). Kept: every shared library that torch's own libraries need at load
# time, found by the dynamic loader itself (ldd), i.e. the whole DT_NEEDED closure, which `import
# torch` requires even on a machine without a GPU. Removed: the nvidia/* libraries outside that
# closure (cuDNN's engines and cusolverMg, which a GPU run would dlopen), triton (torch.compile's
# GPU code generator), headers and static libraries. A GPU run of such an image would fail: it is
# the CPU flavour.
set -eu
sp="$1"
before=$(du -sm "$sp" | cut -f1)
keep=$(mktemp)
ldd "$sp"/torch/lib/*.so "$sp"/torch/_C*.so | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p' |
  while read -r f; do readlink -f "$f"; done | sort -u > "$keep"
grep -q '/nvidia/' "$keep" || { echo "cpu-prune: torch needs no nvidia library; nothing to prune"; rm -f "$keep"; exit 0; }
find "$sp/nvidia" -name '*.so*' -type f | while read -r f; do
  grep -qxF "$(readlink -f "$f")" "$keep" || rm -f "$f"
done
rm -f "$keep"
find "$sp/nvidia" \( -name '*.a' -o -name include -o -name bin \) -prune -exec rm -rf {} +
rm -rf "$sp/torch/include" "$sp/torch/share/cmake"
/opt/venv/bin/pip uninstall --yes --quiet triton 2>/dev/null || true
after=$(du -sm "$sp" | cut -f1)
echo "cpu-prune: site-packages ${before} MB -> ${after} MB"
