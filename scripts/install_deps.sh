#!/usr/bin/env bash
# Installs every Debian 12 package megabatch needs to build, test and run.
# Idempotent: prints nothing and touches nothing when all packages are present.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git ca-certificates
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev
  libtorch-dev libgloo-dev libsqlite3-dev sqlite3 nlohmann-json3-dev prometheus-cpp-dev
  libyaml-cpp-dev libcli11-dev libspdlog-dev libgtest-dev libgmock-dev
  libbenchmark-dev dataset-fashion-mnist
  # Language models: the text corpus (fortunes) and tiny_bert's tokenizer;
  # python3-sentencepiece for the Python side of bench/lm_throughput.py.
  fortunes libsentencepiece-dev python3-sentencepiece
  python3 python3-numpy python3-torch python3-optuna zlib1g-dev
  # The Python client (clients/python) and its example: stubs need
  # grpc_python_plugin (protobuf-compiler-grpc, above).
  python3-grpcio python3-protobuf python3-pandas python3-matplotlib
  # ... which reads a YAML torchscript spec with python3-yaml (docs/models.md).
  python3-yaml
  # ... installed as a package into a virtual environment by its test.
  python3-venv python3-pip python3-setuptools
  # Token hashing and randomness (libcrypto); the tests make their TLS
  # certificates with the openssl command.
  libssl-dev openssl
  # scripts/fuzz.sh: libFuzzer comes with clang's runtime libraries;
  # scripts/check_thread_safety.sh builds with clang; scripts/format.sh.
  clang-14 libclang-rt-14-dev clang-format-14
  # cpack's .deb (deploy/README.md) finds its dependencies with dpkg-shlibdeps.
  dpkg-dev
  # Debian's LibTorch calls the system BLAS, which is netlib's reference
  # implementation unless an optimised one is installed: OpenBLAS (the OpenMP
  # build, which honours LibTorch's thread count) makes training ~15x faster.
  libopenblas0-openmp
  # The end-to-end observability test runs a real Prometheus (its own, on a
  # free loopback port) and promtool.
  prometheus
  # The Slurm test runs a one-node cluster of its own (scripts/slurm_cluster.sh).
  slurm-wlm munge
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "megabatch: installing ${missing[*]}" >&2
sudo_cmd=()
[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
