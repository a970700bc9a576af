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
#                       or `--part-size 4095M` once bundles come in parts
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
# shellcheck disable=SC2086 # BUNDLER_ARGS is a list of options
"$BUNDLER" build -f "$COMPOSE" --key env:BUNDLER_SECRET_KEY \
  --version "$VERSION" --release "$RELEASE" -o "$OUT" $BUNDLER_ARGS
"$BUNDLER" verify "$OUT" --key "$PUBLIC_KEY"
"$BUNDLER" inspect "$OUT" --key "$PUBLIC_KEY"
sha256sum "$OUT" > "$OUT.sha256"
echo "bundle: $OUT ($(stat -c %s "$OUT") bytes), sha256 in $OUT.sha256"
