#!/usr/bin/env bash
# Build, check and sign the offline bundle in the vendor's CI: the same steps in GitHub Actions
# (github-actions.yml), GitLab CI (gitlab-ci.yml) and the project's own test
# (tests/e2e/build.rs::the_ci_example_builds_a_signed_bundle_with_the_key_from_the_environment).
#
# Inputs (environment):
#   BUNDLER_SECRET_KEY  the minisign secret key file's text, from the CI secret store. Passed as
#                       `--key env:BUNDLER_SECRET_KEY`: it is never written to disk.
#   COMPOSE             the product's compose file            (default: compose.yaml)
#   VERSION, RELEASE    what operators see / the anti-rollback counter (RELEASE must grow)
#   OUT                 the bundle to write                   (default: dist/<product>-<VERSION>.bundle)
#   BUNDLER             the bundler binary                    (default: bundler on PATH)
#   PUBLIC_KEY          the public key to verify with          (default: vendor.pub)
#   BUNDLER_ARGS        more `bundler build` options, e.g. `--insecure-registry 127.0.0.1:5000`
#   PART_SIZE           split the bundle into parts for USB sticks: 4095M fits FAT32 (optional)
#   ISO_DIR             also write ISO images there, for VMware / Hyper-V sites (optional; needs
#                       xorriso); volume 1 gets vendor.pub and, when INSTALLER_BIN is set, the
#                       static installer binary
# Registry credentials: the Docker config file (`docker login` earlier in the job).
set -euo pipefail

: "${BUNDLER_SECRET_KEY:?set BUNDLER_SECRET_KEY from the CI secret store (the secret key file text)}"
: "${VERSION:?set VERSION (e.g. the tag)}"
: "${RELEASE:?set RELEASE (a number that grows with every release, e.g. the pipeline number)}"
COMPOSE="${COMPOSE:-compose.yaml}"
BUNDLER="${BUNDLER:-bundler}"
PUBLIC_KEY="${PUBLIC_KEY:-vendor.pub}"
OUT="${OUT:-dist/bundle-$VERSION.bundle}"
mkdir -p "$(dirname "$OUT")"

# Every problem of the compose file at once, before any image is pulled.
"$BUNDLER" check -f "$COMPOSE"
PARTS=()
FIRST="$OUT"
if [ -n "${PART_SIZE:-}" ]; then
  PARTS=(--part-size "$PART_SIZE")
  FIRST="$OUT.000"
fi
# shellcheck disable=SC2086 # BUNDLER_ARGS is a list of options
"$BUNDLER" build -f "$COMPOSE" --key env:BUNDLER_SECRET_KEY \
  --version "$VERSION" --release "$RELEASE" -o "$OUT" "${PARTS[@]}" $BUNDLER_ARGS
"$BUNDLER" verify "$FIRST" --key "$PUBLIC_KEY"
"$BUNDLER" inspect "$FIRST" --key "$PUBLIC_KEY"
# For people who check by hand (`sha256sum -c`); the installer checks the signed sums itself.
(cd "$(dirname "$OUT")" && sha256sum "$(basename "$OUT")"${PART_SIZE:+.0*}) > "$OUT.sha256"
echo "bundle: $FIRST$([ -n "${PART_SIZE:-}" ] && echo " and its other parts"), sha256 in $OUT.sha256"
if [ -n "${ISO_DIR:-}" ]; then
  "$BUNDLER" iso "$FIRST" --output-dir "$ISO_DIR" --public-key "$PUBLIC_KEY" \
    ${INSTALLER_BIN:+--installer "$INSTALLER_BIN"}
fi
