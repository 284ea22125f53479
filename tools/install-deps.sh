#!/usr/bin/env bash
# Installs what building, checking and benchmarking yaplr needs (filelock
# is only a reference in make bench): R and R packages from
# Debian's archive (CRAN is not required). Idempotent: does nothing when all
# is present.
set -euo pipefail

DEBS="r-base-dev r-cran-testthat r-cran-callr r-cran-withr r-cran-knitr
r-cran-rmarkdown pandoc r-cran-roxygen2 r-cran-processx r-cran-ps qpdf
r-cran-cli r-cran-filelock"

missing=""
for p in $DEBS; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done

if [ -n "$missing" ]; then
  echo "install-deps: installing$missing"
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing
else
  echo "install-deps: R and R packages already installed"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi
