# Shared by packaging/build-deb and packaging/build-rpm (sourced from the repository root).
# shellcheck shell=bash

# prepare_binary_and_assets PROFILE BUILD: builds the binary with PROFILE unless BUILD is
# "no", then has it write the man page and the completions into target/assets/, which
# both package recipes list. Sets $target_dir (cargo's, honouring CARGO_TARGET_DIR) and
# $bin (the binary that gets packaged).
prepare_binary_and_assets() {
  local profile="$1" build="$2" profile_dir
  # The binary first: generate-assets must run the binary that gets packaged.
  if [ "$build" != no ]; then
    cargo build --locked --profile "$profile" --bin tokend
  fi
  target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
  case "$profile" in
    dev|test) profile_dir=debug ;;
    bench) profile_dir=release ;;
    *) profile_dir="$profile" ;;
  esac
  bin="$target_dir/$profile_dir/tokend"
  if [ ! -x "$bin" ]; then
    echo "packaging: $bin does not exist; build it or drop --no-build" >&2
    exit 2
  fi
  # In ./target/assets/, not $CARGO_TARGET_DIR: cargo-deb and cargo-generate-rpm read
  # assets that cargo did not build relative to the crate root.
  rm -rf target/assets
  "$bin" generate-assets target/assets >&2
  gzip -9n target/assets/tokend.1
}
