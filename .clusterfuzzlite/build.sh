#!/bin/bash -eu
# ClusterFuzzLite / OSS-Fuzz build of the atheris harnesses in fuzz/ (fuzz/README.md).
#
# Each harness becomes the fuzzer $OUT/fuzz_<name> (compile_python_fuzzer packs the script,
# its fuzz/_harness.py helper and the installed ghcb package with PyInstaller), with
#   $OUT/fuzz_<name>.options             its libFuzzer options (max_len: 4096-byte pages)
#   $OUT/fuzz_<name>_seed_corpus.zip     its committed corpus, seeded from spec/vectors/
# tests/test_fuzz_replay.py checks that HARNESSES names exactly the fuzz/fuzz_*.py scripts.

HARNESSES=(certs guest_msg handler input msr page)

pip3 install .

for name in "${HARNESSES[@]}"; do
  compile_python_fuzzer "fuzz/fuzz_${name}.py"
  cp "fuzz/fuzz_${name}.options" "$OUT/"
  (cd "fuzz/corpus/${name}" && zip -q -r "$OUT/fuzz_${name}_seed_corpus.zip" .)
done
